"""`rlscape purd`, `rlscape interpolate` and `rlscape cvar-train` as a user meets them."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import xarray as xr

from tests.cli.test_cli import run_cli

FAST = ["--workers", "1"]


def _ckpt(run, step):
    folder = run / "checkpoints" / f"{step:010d}"
    return folder


def _standalone(run, step, dest):
    """A checkpoint folder outside its run (env.json copied next to the model)."""
    shutil.copytree(_ckpt(run, step), dest)
    shutil.copy(run / "env.json", dest / "env.json")
    return dest


def test_purd_over_a_training_run(sac_run, tmp_path, capsys):
    out = tmp_path / "p"
    code, stdout, err = run_cli(["purd", sac_run, "--out", out, "--updates", "6", "--batch-size", "32", *FAST], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr").load()
    assert ds.step.values.tolist() == [100, 200]  # `all` leaves out the untrained step 0
    assert ds["returns"].dims == ("step", "update", "episode") and ds.sizes["update"] == 6
    for v in ("update_norm", "churn", "pre_return", "mean", "std", "mode", "ltp", "cvar", "cvar_ci_low", "cvar_ci_high",
              "mean_ci_low", "initial_obs"):
        assert v in ds, v
    assert (ds["update_norm"] > 0).all() and (ds["cvar_ci_low"] <= ds["cvar_ci_high"]).all()
    assert (out / "plots" / "purd_over_training.png").stat().st_size > 10_000
    assert (out / "plots" / "purd_step0000000200.png").is_file()
    assert "step        200" in stdout and "cvar" in stdout


def test_purd_on_one_checkpoint_with_stochastic_random_init(sac_run, tmp_path, capsys):
    out = tmp_path / "one"
    code, stdout, err = run_cli(["purd", _ckpt(sac_run, 200), "--out", out, "--updates", "4", "--batch-size", "32",
                                 "--eval", "stochastic", "--init", "random", "--episodes-per-update", "2", *FAST], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr").load()
    assert ds["returns"].shape == (4, 2) and ds.attrs["init"] == "random" and ds.attrs["deterministic"] == 0
    assert "initial_obs" not in ds  # every update starts from its own states
    assert "pre-update return" in stdout and (out / "plots" / "purd.png").is_file()


def test_checkpoint_without_optimizer_state_or_buffer_is_one_line_exit_2(sac_run, tmp_path, capsys):
    bare = _standalone(sac_run, 200, tmp_path / "bare")
    with zipfile.ZipFile(_ckpt(sac_run, 200) / "model.zip") as src, zipfile.ZipFile(bare / "model.zip", "w") as dst:
        for name in src.namelist():
            if "optimizer" not in name:
                dst.writestr(name, src.read(name))
    code, _, err = run_cli(["purd", bare, "--out", tmp_path / "o1", "--updates", "4", *FAST], capsys)
    assert code == 2 and "no optimizer state" in err and "rlscape train" in err and err.strip().count("\n") == 0
    nobuf = _standalone(sac_run, 200, tmp_path / "nobuf")
    (nobuf / "replay_buffer.pkl").unlink()
    code, _, err = run_cli(["purd", nobuf, "--out", tmp_path / "o2", "--updates", "4", *FAST], capsys)
    assert code == 2 and "replay buffer" in err and "rlscape train" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()  # bad input never touches --out


@pytest.mark.parametrize(("args", "needle"), [
    (["--updates", "1"], "--updates"),
    (["--eval", "greedy"], "--eval"),
    (["--alpha", "0"], "--alpha"),
    (["--checkpoints", "100"], "training run"),
])
def test_purd_bad_options_are_one_line(sac_run, tmp_path, capsys, args, needle):
    code, _, err = run_cli(["purd", _ckpt(sac_run, 200), "--out", tmp_path / "x", *args, *FAST], capsys)
    assert code == 2 and needle in err and err.strip().count("\n") == 0


def test_interpolate_between_two_checkpoints(sac_run, tmp_path, capsys):
    out = tmp_path / "i"
    code, stdout, err = run_cli(["interpolate", _ckpt(sac_run, 100), _ckpt(sac_run, 200), "--out", out, "--points", "3",
                                 "--samples", "3", "--sigma", "1e-2", *FAST], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr").load()
    assert ds["return"].shape == (3, 3) and np.allclose(ds.alpha, [0, 0.5, 1])
    assert ds.attrs["distance"] > 0 and (out / "plots" / "interpolation.png").is_file()
    assert "mean return" in stdout
    code, _, err = run_cli(["interpolate", _ckpt(sac_run, 100), _ckpt(sac_run, 200), "--out", tmp_path / "j", "--sigma", "-1", *FAST],
                           capsys)
    assert code == 2 and "--sigma" in err


def test_cvar_train_with_and_without_rejection(sac_run, tmp_path, capsys):
    ckpt = _ckpt(sac_run, 200)
    common = ["--proposals", "2", "--updates", "3", "--batch-size", "32", *FAST]
    code, _, err = run_cli(["cvar-train", ckpt, "--out", tmp_path / "base", "--no-reject", "--no-plot", *common], capsys)
    assert code == 0, err
    code, stdout, err = run_cli(["cvar-train", ckpt, "--out", tmp_path / "rej", "--baseline", tmp_path / "base", *common], capsys)
    assert code == 0, err
    ds = xr.open_zarr(tmp_path / "rej" / "results.zarr").load()
    assert ds.sizes["proposal"] == 3 and bool(ds["accepted"][0])
    base = xr.open_zarr(tmp_path / "base" / "results.zarr").load()
    assert base["accepted"].values.all()
    # both runs start from the same root, so the first PURD is the same
    np.testing.assert_array_equal(ds["purd"].values[0], base["purd"].values[0])
    assert (tmp_path / "rej" / "plots" / "cvar_train.png").is_file() and "accepted" in stdout
