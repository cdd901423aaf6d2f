"""Surfaces from Python: the notebook API, grids, and Datasets of unfinished runs."""

import numpy as np
import pytest
import xarray as xr

import rlscape
from rlscape.analyses.surface import axes, build_dataset, grid_coords
from rlscape.core.spec import EvalSpec, SurfaceSpec
from rlscape.core.store import ChunkData, merge_chunks


def test_notebook_plane_and_line_in_memory(cartpole_ppo):
    agent = rlscape.load_checkpoint(cartpole_ppo)
    ds = rlscape.plane(agent, grid=3, magnitude=0.5, episodes=3, workers=1, progress=False)
    assert dict(ds.sizes) == {"alpha": 3, "beta": 3, "episode": 3}
    assert ds.attrs["dir1_label"].startswith("dir1: random Gaussian, filter-normalised")
    line = rlscape.line(cartpole_ppo, points=3, steps=600, workers=1, progress=False)  # a path works too
    assert line.attrs["steps"] == 600 and (line.lengths.sum("episode") >= 600).all()
    assert int(line.n_episodes.max()) == line.sizes["episode"]


def test_load_reads_a_stored_run(cartpole_ppo, tmp_path):
    ds = rlscape.plane(cartpole_ppo, grid=1, episodes=2, workers=1, out=tmp_path / "run", progress=False)
    loaded = rlscape.load(tmp_path / "run")
    np.testing.assert_array_equal(loaded.returns.values, ds.returns.values)
    with pytest.raises(rlscape.RlscapeError, match="no results"):
        rlscape.load(tmp_path)


def test_axes_put_theta0_exactly_at_the_centre():
    spec = SurfaceSpec(kind="plane", checkpoint="x", grid=(7, 5), ranges=((-0.3, 0.3), (-1.1, 1.1)),
                       directions=("random", "random"))
    a, b = axes(spec)
    assert a[3] == 0.0 and b[2] == 0.0 and a[0] == -0.3 and b[-1] == 1.1
    coords = grid_coords([a, b])
    assert coords.shape == (35, 2) and tuple(coords[1 * 5 + 2]) == (a[1], 0.0)  # ij order


def test_unfinished_points_are_nan_never_a_sentinel():
    spec = SurfaceSpec(kind="plane", checkpoint="x", grid=(3, 3), ranges=((-1, 1), (-1, 1)),
                       directions=("random", "random"), evaluation=EvalSpec(episodes=2))
    returns = np.array([[-5.0, 0.0], [-7.0, -1.0]])  # negative and zero returns are real values
    chunk = ChunkData(np.array([0, 4]), returns, np.array([[3, 1], [2, 2]]), returns.copy(),
                      np.full((2, 2), np.nan), np.full((2, 2), np.nan))
    merged = merge_chunks([chunk], 9)
    ds = build_dataset(spec, axes(spec), merged, {"gamma": 0.99, "has_critic": 0, "kind": "plane"})
    mean = ds.return_mean.values.ravel()
    assert mean[0] == -2.5 and mean[4] == -4.0
    assert np.isnan(np.delete(mean, [0, 4])).all()
    assert int(ds.n_episodes.values.ravel()[1]) == 0 and "value_mean" not in ds


def test_directions_given_in_memory(cartpole_ppo, tmp_path):
    agent = rlscape.load_checkpoint(cartpole_ppo)
    theta = agent.parameters("actor")
    d1 = rlscape.random_direction(theta, seed=0, index=0)
    d2 = {n: np.zeros_like(v) for n, v in theta.items()}  # a plain mapping works too
    d2["action_net.weight"] = np.ones_like(theta["action_net.weight"])
    d1.meta["label"] = "my direction"
    ds = rlscape.plane(agent, dir1=d1, dir2=d2, grid=3, episodes=2, workers=1, out=tmp_path / "p", progress=False)
    assert ds.attrs["dir1_label"] == "dir1: my direction"
    assert np.isclose(ds.attrs["dir2_norm"], np.sqrt(theta["action_net.weight"].size))
    # the same random direction by name gives the same numbers
    ref = rlscape.plane(agent, grid=3, episodes=2, workers=1, dir2=d2, progress=False)
    np.testing.assert_array_equal(ref.returns.values, ds.returns.values)
    bad = dict(d2, **{"action_net.weight": np.ones((3, 3), np.float32)})
    with pytest.raises(rlscape.RlscapeError, match="shape"):
        rlscape.line(agent, direction=bad, points=3, episodes=1, workers=1, progress=False)


def test_every_variable_is_the_same_for_any_number_of_workers(cartpole_ppo):
    """methods.md §3: value_mean and td_error_mean too (the critic's shared weights once rounded by
    the number of points in a call: 1.9e-8 apart between --workers 1 and 2)."""
    one = rlscape.plane(cartpole_ppo, grid=5, episodes=3, seed=3, workers=1, progress=False)
    two = rlscape.plane(cartpole_ppo, grid=5, episodes=3, seed=3, workers=2, progress=False)  # chunks of 2, not 4
    xr.testing.assert_identical(one, two)
