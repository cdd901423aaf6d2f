"""`rlscape gradient`, `rlscape hessian` and gradient/eigenvector directions as a user meets them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from rlscape.core.directions import load_direction, random_direction
from rlscape.core.policy import load_checkpoint
from tests.cli.test_cli import run_cli

FAST_HESSIAN = ["--episodes", "4", "--k", "1", "--trace-vectors", "2", "--slq-vectors", "1", "--slq-steps", "8"]


@pytest.fixture
def training_run(cartpole_ppo: Path, tmp_path: Path) -> Path:
    """A run directory in the `rlscape train` layout, from the session's two PPO checkpoints."""
    run = tmp_path / "run"
    for step, src in ((3072, cartpole_ppo), (4096, cartpole_ppo.parent / "agent2")):
        ck = run / "checkpoints" / f"{step:010d}"
        ck.mkdir(parents=True)
        shutil.copy(src / "model.zip", ck / "model.zip")
        (ck / "checkpoint.json").write_text(json.dumps({"step": step, "wall_time_s": 1.0, "recent_returns": [20.0, 30.0 + step / 1000], "episodes": 10}))
    (run / "env.json").write_text(json.dumps({"env_id": "CartPole-v1", "env_kwargs": {}, "algo": "ppo"}))
    (run / "train.json").write_text(json.dumps({"env_id": "CartPole-v1", "algo": "ppo", "status": "complete"}))
    return run


def test_gradient_writes_a_direction_with_norm_and_standard_error(cartpole_ppo, tmp_path, capsys):
    out = tmp_path / "g"
    code, stdout, err = run_cli(["gradient", cartpole_ppo, "--out", out, "--episodes", "12", "--batches", "4", "--seed", "3"], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr")
    agent = load_checkpoint(cartpole_ppo)
    d = load_direction(out / "directions" / "gradient.npz", agent.parameters("actor"))
    assert d.meta["original_kind"] == "gradient" and d.meta["episodes"] == 12 and d.meta["seed"] == 3 and d.meta["scale"] == "raw"
    assert float(ds.grad_norm) == pytest.approx(d.norm, rel=1e-6) and 0 < float(ds.grad_stderr) < np.inf
    assert "‖g‖" in stdout
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and "torch" in run["versions"]
    again = tmp_path / "g2"
    assert run_cli(["gradient", cartpole_ppo, "--out", again, "--episodes", "12", "--batches", "4", "--seed", "3"], capsys)[0] == 0
    with np.load(out / "directions" / "gradient.npz") as a, np.load(again / "directions" / "gradient.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "__rlscape_meta__")


def test_plane_along_the_gradient_records_its_scale(cartpole_ppo, tmp_path, capsys):
    agent = load_checkpoint(cartpole_ppo)
    theta = agent.parameters("actor")
    for scale, expected in (("unit", 1.0), (None, random_direction(theta, 0, 0).norm)):
        out = tmp_path / f"plane-{scale}"
        args = ["plane", cartpole_ppo, "--out", out, "--dir1", "gradient", "--gradient-episodes", "6", "--grid", "3",
                "--episodes", "2", "--workers", "1", "--no-plot"] + (["--scale", scale] if scale else [])
        code, _, err = run_cli(args, capsys)
        assert code == 0, err
        ds = xr.open_zarr(out / "results.zarr")
        assert ds.attrs["dir1_scale"] == (scale or "match") and ds.attrs["dir2_scale"] == "raw"
        assert ds.attrs["dir1_norm"] == pytest.approx(expected, rel=1e-5)
        assert "policy gradient" in ds.attrs["dir1_label"] and f"scale {scale or 'match'}" in ds.attrs["dir1_label"]
        assert json.loads((out / "spec.json").read_text())["scale"] == scale
        assert np.isfinite(ds.return_mean.values).all()


def test_hessian_eigenvectors_span_a_plane(cartpole_ppo, tmp_path, capsys):
    out = tmp_path / "h"
    code, stdout, err = run_cli(["hessian", cartpole_ppo, "--out", out, *FAST_HESSIAN], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr")
    for v in ("lambda_max", "lambda_min", "curvature_ratio", "residuals_top", "converged_bottom", "n_hvp", "trace", "slq_nodes"):
        assert v in ds, v
    assert float(ds.lambda_max) >= float(ds.lambda_min) and bool(ds.converged_top.all()) and int(ds.n_hvp) > 0
    assert float(ds.curvature_ratio) == pytest.approx(-float(ds.lambda_max) / float(ds.lambda_min))
    assert (out / "plots" / "slq_density.png").stat().st_size > 1000
    plane = tmp_path / "eigplane"
    code, _, err = run_cli(["plane", cartpole_ppo, "--out", plane, "--dir1", out / "directions" / "eig_max_1.npz",
                            "--dir2", out / "directions" / "eig_min_1.npz", "--grid", "3", "--episodes", "2", "--workers", "1", "--no-plot"], capsys)
    assert code == 0, err
    pds = xr.open_zarr(plane / "results.zarr")
    assert "eigenvector" in pds.attrs["dir1_label"] and pds.attrs["dir1_scale"] == "unit"
    assert pds.attrs["dir1_norm"] == pytest.approx(1.0, abs=1e-5) and abs(pds.attrs["cos_dir1_dir2"]) < 1e-4


def test_over_a_training_run_one_result_per_checkpoint(training_run, tmp_path, capsys):
    out = tmp_path / "curv"
    code, _, err = run_cli(["hessian", training_run, "--out", out, *FAST_HESSIAN], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr")
    assert list(ds.step.values) == [3072, 4096] and ds.lambda_max.dims == ("step",)
    np.testing.assert_allclose(ds.train_return.values, [(20 + 33.072) / 2, (20 + 34.096) / 2])  # mean of recent_returns
    assert (out / "steps" / "0000004096" / "directions" / "eig_max_1.npz").is_file()
    assert (out / "plots" / "curvature_over_training.png").stat().st_size > 1000
    g = tmp_path / "grad"
    code, _, err = run_cli(["gradient", training_run, "--out", g, "--episodes", "4", "--batches", "2", "--checkpoints", "4096"], capsys)
    assert code == 0, err
    assert list(xr.open_zarr(g / "results.zarr").step.values) == [4096] and (g / "steps" / "0000004096" / "directions" / "gradient.npz").is_file()
    code, _, err = run_cli(["gradient", training_run, "--out", tmp_path / "bad", "--checkpoints", "5"], capsys)
    assert code == 2 and "available steps: 3072, 4096" in err


@pytest.mark.parametrize(("args", "message"), [
    (["gradient", "DQN", "--kind", "reinforce"], "--kind update"),
    (["hessian", "PPO", "--k", "100000"], "--k must be between 1 and"),
    (["gradient", "PPO", "--episodes", "0"], "--episodes must be a positive integer"),
    (["hessian", "PPO", "--episodes", "0"], "--episodes must be at least 2"),
    (["gradient", "PPO", "--baseline", "median"], "--baseline must be one of"),
    (["plane", "PPO", "--dir1", "gradient", "--scale", "huge"], "scale"),
])
def test_bad_input_is_one_line_and_writes_nothing(cartpole_ppo, untrained, tmp_path, capsys, args, message):
    sources = {"DQN": untrained("dqn", "CartPole-v1"), "PPO": cartpole_ppo}
    out = tmp_path / "never"
    argv = [args[0], sources[args[1]], "--out", out, *args[2:]]
    if args[1] == "DQN":
        argv += ["--env", "CartPole-v1"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.fixture(scope="session")
def norm_run(tmp_path_factory):
    from tests.training_runs import norm_ppo_run

    return norm_ppo_run(tmp_path_factory)


def test_update_direction_of_a_vecnormalize_checkpoint(norm_run, tmp_path, capsys):
    """`gradient --kind update` on a checkpoint with vecnormalize.pkl (once: "Observation spaces do not
    match"): the saved step is the mean of the updater's steps from the saved state, rewards normalised."""
    from rlscape.analyses.gradient import update_seed
    from rlscape.core.updater import Updater

    ckpt = norm_run / "checkpoints" / "0000001024"
    out = tmp_path / "u"
    code, _, err = run_cli(["gradient", ckpt, "--out", out, "--kind", "update", "--batches", "2", "--seed", "4", "--no-plot"], capsys)
    assert code == 0, err
    d = load_direction(out / "directions" / "gradient.npz", load_checkpoint(ckpt).parameters("actor"))
    assert d.meta["norm_reward"] and d.meta["optimizer"] == "saved"
    with Updater.from_checkpoint(ckpt) as up:
        steps = [up.step(update_seed(4, b)).delta for b in range(2)]
    for n, v in d.values.items():
        np.testing.assert_allclose(v, (steps[0][n].astype(np.float64) + steps[1][n]) / 2, rtol=1e-6, atol=1e-9)
