"""`rlscape curve`, `plane/line --all-checkpoints|--checkpoints` and `plot --gif` as a user meets them."""

from __future__ import annotations

import numpy as np
import xarray as xr
from PIL import Image

from tests.cli.test_cli import run_cli

TINY = ["--episodes", "2", "--workers", "1"]


def test_curve_command(ppo_run, tmp_path, capsys):
    out = tmp_path / "curve"
    code, stdout, err = run_cli(["curve", ppo_run, "--out", out, "--episodes", "3", "--seed", "1", "--checkpoints", "0,1536"], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr")
    assert dict(ds.sizes) == {"step": 2, "episode": 3} and list(ds.step.values) == [0, 1536]
    assert (out / "plots" / "curve.png").stat().st_size > 1000 and (out / "plots" / "curve.pdf").exists()
    code, _, err = run_cli(["curve", ppo_run, "--out", out, "--episodes", "3", "--seed", "1", "--checkpoints", "0,1536"], capsys)
    assert code == 2 and "already holds this finished run" in err and "Traceback" not in err


def test_plane_over_checkpoints_and_its_gif(ppo_run, tmp_path, capsys):
    out = tmp_path / "planes"
    code, stdout, err = run_cli(["plane", ppo_run, "--checkpoints", "0,512,1536", "--out", out, "--grid", "3", *TINY, "--no-plot"], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr")
    assert dict(ds.sizes) == {"step": 3, "alpha": 3, "beta": 3, "episode": 2}
    code, stdout, err = run_cli(["plot", out, "--gif", "--formats", "png"], capsys)
    assert code == 0, err
    assert Image.open(out / "plots" / "surface.gif").n_frames == 3  # one frame per checkpoint
    assert (out / "plots" / "planes.png").exists() and "surface.gif" in stdout


def test_line_over_all_checkpoints(sac_run, tmp_path, capsys):
    out = tmp_path / "lines"
    code, _, err = run_cli(["line", sac_run, "--out", out, "--points", "3", "--range=-0.5,0.5",
                            "--episodes", "1", "--workers", "1"], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr")
    assert dict(ds.sizes) == {"step": 3, "alpha": 3, "episode": 1}  # a training run: every checkpoint by default
    np.testing.assert_allclose(ds.alpha, [-0.5, 0, 0.5])
    for name in ("line_heatmap.png", "line_heatmap.pdf", "lines_3d.png", "lines_3d.pdf"):
        assert (out / "plots" / name).stat().st_size > 1000, name


def test_over_training_bad_input(ppo_run, cartpole_ppo, tmp_path, capsys):
    cases = [
        (["stepsize", cartpole_ppo, "--checkpoints", "all", "--out", tmp_path / "a"], "is not a training run"),
        (["plane", ppo_run, "--checkpoints", "0,7", "--out", tmp_path / "a", *TINY], "available steps: 0, 512, 1024, 1536"),
        (["line", cartpole_ppo, "--all-checkpoints", "--out", tmp_path / "a", *TINY], "is not a training run"),
        (["plane", ppo_run, "--all-checkpoints", "--checkpoints", "0", "--out", tmp_path / "a", *TINY], "give one of them"),
        (["curve", tmp_path, "--out", tmp_path / "a"], "is not a training run"),
    ]
    for args, message in cases:
        code, _, err = run_cli(args, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "a").exists()
    single = tmp_path / "single"
    assert run_cli(["plane", cartpole_ppo, "--out", single, "--grid", "1", *TINY, "--no-plot"], capsys)[0] == 0
    code, _, err = run_cli(["plot", single, "--gif"], capsys)
    assert code == 2 and "--gif needs planes over training" in err
