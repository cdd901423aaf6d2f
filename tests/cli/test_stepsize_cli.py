"""`rlscape stepsize`, `rlscape cliffs` and `rlscape cliff-dive` as a user meets them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests import training_runs
from tests.cli.test_cli import run_cli


@pytest.fixture(scope="session")
def tiny_ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return training_runs.tiny_ppo_run(tmp_path_factory)


FAST = ["--episodes", "2", "--workers", "1", "--precision", "0.5", "--ladder", "4"]



def test_stepsize_over_a_training_run(tiny_ppo_run, tmp_path, capsys):
    out = tmp_path / "ss"
    code, stdout, err = run_cli(["stepsize", tiny_ppo_run, "--out", out, "--checkpoints", "0,2048", "--lo", "0.01", "--hi", "10", *FAST],
                                capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr")
    assert ds.step.values.tolist() == [0, 2048]
    for v in ("alpha_star", "status", "j0", "j0_sem", "threshold", "n_evaluations", "eval_alpha", "eval_return_mean"):
        assert v in ds, v
    np.testing.assert_allclose(ds.threshold, ds.j0 - 0.05 * np.abs(ds.j0))
    for step in (0, 2048):  # each checkpoint is a self-describing sub-run with its evaluations
        sub = out / "steps" / f"{step:010d}"
        sub_ds = xr.open_zarr(sub / "results.zarr")
        assert sub_ds.attrs["alpha_star"] == float(ds.alpha_star.sel(step=step))
        assert json.loads((sub / "spec.json").read_text())["checkpoint"].endswith(f"{step:010d}")
        assert (sub / "directions" / "dir1.npz").is_file()
    assert (out / "plots" / "stepsize_training.png").stat().st_size > 10_000
    assert "α* =" in stdout and "step       2048" in stdout


def test_stepsize_on_one_checkpoint(cartpole_ppo, tmp_path, capsys):
    out = tmp_path / "one"
    code, stdout, err = run_cli(["stepsize", cartpole_ppo, "--out", out, "--tolerance", "0.1", *FAST], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr")
    assert ds.attrs["tolerance"] == 0.1 and ds.attrs["kind"] == "stepsize"
    assert (out / "plots" / "stepsize.png").is_file() and "evaluations in" in stdout


@pytest.mark.parametrize(("args", "needle"), [
    (["--tolerance", "-1"], "--tolerance"),
    (["--lo", "5", "--hi", "1"], "--lo and --hi"),
    (["--direction", "nope.npz"], "nope.npz"),
    (["--checkpoints", "0"], "training run"),
])
def test_stepsize_bad_input_is_one_line(cartpole_ppo, tmp_path, capsys, args, needle):
    code, _, err = run_cli(["stepsize", cartpole_ppo, "--out", tmp_path / "x", *args, *FAST], capsys)
    assert code == 2 and err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1, err


def test_unknown_checkpoint_step_names_the_available_ones(tiny_ppo_run, tmp_path, capsys):
    code, _, err = run_cli(["stepsize", tiny_ppo_run, "--out", tmp_path / "x", "--checkpoints", "5", *FAST], capsys)
    assert code == 2 and "0, 1024, 2048" in err


def _line_over_training(run, path):
    """A real line over training, built with `rlscape.line` per checkpoint (dims step, alpha, episode)."""
    from rlscape.analyses.surface import line

    parts = []
    for step in (0, 1024, 2048):
        ds = line(run / "checkpoints" / f"{step:010d}", points=5, range=(-1.0, 1.0), episodes=2, workers=1, progress=False)
        parts.append(ds[["returns", "return_mean"]].expand_dims(step=[step]))
    combined = xr.concat(parts, dim="step")
    combined.attrs = {"kind": "line-over-training", "env_id": "CartPole-v1"}
    combined.to_zarr(path / "results.zarr", mode="w", consolidated=True, zarr_format=2)
    return combined


def test_cliffs_then_cliff_dive_from_its_labels(tiny_ppo_run, tmp_path, capsys):
    line_dir = tmp_path / "line"
    line_dir.mkdir()
    line_ds = _line_over_training(tiny_ppo_run, line_dir)
    code, stdout, err = run_cli(["cliffs", line_dir, "--min-fall", "0", "--min-range-fraction", "0"], capsys)
    assert code == 0, err
    labels = xr.open_zarr(line_dir / "cliffs" / "results.zarr")
    mean = line_ds.return_mean.transpose("step", "alpha").values
    np.testing.assert_array_equal(labels.cliff.values, mean[:, 2] - mean[:, 3] > 0)  # thresholds 0: any fall
    assert (line_dir / "cliffs" / "plots" / "cliffs.png").stat().st_size > 10_000
    assert sorted(p.name for p in line_dir.iterdir()) == ["cliffs", "results.zarr"]  # the line itself untouched
    # the same command again rewrites identical labels; other thresholds are refused unless --overwrite
    assert run_cli(["cliffs", line_dir, "--min-fall", "0", "--min-range-fraction", "0", "--no-plot"], capsys)[0] == 0
    code, _, err = run_cli(["cliffs", line_dir, "--no-plot"], capsys)
    assert code == 2 and "--overwrite" in err

    out = tmp_path / "dive"
    code, stdout, err = run_cli(["cliff-dive", tiny_ppo_run, "--out", out, "--labels", line_dir, "--trials", "1",
                                 "--episodes", "3", "--workers", "1"], capsys)
    assert code == 0, err
    dive = xr.open_zarr(out / "results.zarr")
    assert dive.cliff.values.tolist() == labels.cliff.values.tolist()
    assert stdout.splitlines()[0].startswith("algo") and "A2C" in stdout and "PPO" in stdout


@pytest.mark.parametrize(("args", "needle"), [
    ([], "--labels"),
    (["--cliff", "0", "--non-cliff", "0"], "both cliff and non-cliff"),
    (["--cliff", "0,7", "--non-cliff", "1024"], "0, 1024, 2048"),
    (["--cliff", "x"], "--cliff"),
    (["--cliff", "0", "--non-cliff", "1024", "--trials", "0"], "--trials"),
    (["--cliff", "0", "--non-cliff", "1024", "--checkpoints", "2048"], "no label"),
])
def test_cliff_dive_bad_input_is_one_line(tiny_ppo_run, tmp_path, capsys, args, needle):
    code, _, err = run_cli(["cliff-dive", tiny_ppo_run, "--out", tmp_path / "d", *args], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_cliffs_refuses_a_run_that_is_not_a_line_over_training(cartpole_ppo, tmp_path, capsys):
    code, _, err = run_cli(["line", cartpole_ppo, "--out", tmp_path / "l", "--points", "3", "--episodes", "2",
                            "--workers", "1", "--no-plot"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["cliffs", tmp_path / "l"], capsys)
    assert code == 2 and "(step, alpha" in err


def test_a_training_run_means_every_checkpoint(tiny_ppo_run, tmp_path, capsys):
    """One meaning of --checkpoints in every command: a training run without it is every checkpoint."""
    code, _, err = run_cli(["stepsize", tiny_ppo_run, "--out", tmp_path / "x", *FAST], capsys)
    assert code == 0, err
    assert xr.open_zarr(tmp_path / "x" / "results.zarr").step.values.tolist() == [0, 1024, 2048]


def test_stepsize_along_the_gradient(cartpole_ppo, tmp_path, capsys):
    out = tmp_path / "grad"
    code, _, err = run_cli(["stepsize", cartpole_ppo, "--out", out, "--direction", "gradient", "--gradient-episodes", "8", *FAST], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr")
    assert ds.attrs["direction_kind"] == "gradient" and "policy gradient" in ds.attrs["direction_label"]
    assert (out / "directions" / "dir1.npz").is_file()
