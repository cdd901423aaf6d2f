"""`rlscape regions` and `rlscape regions-plane` as a user meets them."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from tests.cli.test_cli import run_cli
from tests.training_runs import relu_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return relu_run(tmp_path_factory)


def test_regions_over_training_with_user_segments(run_dir, tmp_path, capsys):
    seg = tmp_path / "seg.npy"
    np.save(seg, np.array([[[-1.0, 0.0], [1.0, 0.0]], [[0.0, -1.0], [0.0, 1.0]], [[0.2, 0.2], [0.2, 0.2]]]))
    out = tmp_path / "r"
    code, stdout, err = run_cli(["regions", run_dir, "--out", out, "--checkpoints", "0,1024", "--trajectories", "2",
                                 "--random-lines", "5", "--segments", seg], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr").load()
    assert ds.attrs["kind"] == "regions" and ds.step.values.tolist() == [0, 1024]
    user = ds.segment_family.values[0] == "user"
    assert user.sum() == 3
    assert (ds.regions.values[:, user][:, 2] == 1).all()  # a zero-length segment lies in one region
    assert np.isnan(ds.density.values[:, user][:, 2]).all()  # … and has no density
    assert "step       1024" in stdout and (out / "plots" / "regions_density.png").is_file()


def test_regions_of_one_checkpoint(run_dir, tmp_path, capsys):
    out = tmp_path / "one"
    code, stdout, err = run_cli(["regions", run_dir / "checkpoints" / "0000000512", "--out", out, "--trajectories", "1",
                                 "--random-lines", "0", "--network", "value", "--no-plot"], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr")
    assert "step" not in ds.dims and ds.attrs["network"] == "value" and "fixed_transitions" not in ds


def test_regions_plane_state_space(run_dir, tmp_path, capsys):
    out = tmp_path / "p"
    code, stdout, err = run_cli(["regions-plane", run_dir / "checkpoints" / "0000001024", "--out", out, "--state-space"], capsys)
    assert code == 0, err
    assert "regions; areas sum to" in stdout and (out / "plots" / "regions_plane.png").is_file()
    ds = xr.open_zarr(out / "results.zarr")
    assert ds.attrs["kind"] == "regions-plane" and ds.attrs["area_sum"] == pytest.approx(ds.attrs["box_area"])


@pytest.mark.parametrize("args, match", [
    (["--states", "3", "--state-space"], "one of them"),
    ([], "one of them"),
    (["--states", "4"], "must be 3"),
])
def test_regions_plane_bad_options(run_dir, tmp_path, capsys, args, match):
    code, _, err = run_cli(["regions-plane", run_dir / "checkpoints" / "0000001024", "--out", tmp_path / "x", *args], capsys)
    assert code == 2 and match in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_tanh_agent_and_bad_segments_are_one_line_errors(cartpole_ppo, run_dir, tmp_path, capsys):
    code, _, err = run_cli(["regions", cartpole_ppo, "--out", tmp_path / "t", "--trajectories", "1"], capsys)
    assert code == 2 and "uses Tanh" in err and "activation_fn" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 2, 5)))
    code, _, err = run_cli(["regions", run_dir, "--out", tmp_path / "b", "--segments", bad], capsys)
    assert code == 2 and "(S, 2, 2)" in err
    assert not (tmp_path / "t").exists() and not (tmp_path / "b").exists()
