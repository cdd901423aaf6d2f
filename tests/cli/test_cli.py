"""The command line as a user meets it: results, resumption, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from rlscape.cli import main

SMALL = ["--grid", "3", "--episodes", "2", "--workers", "1", "--no-plot"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_plane_writes_a_self_describing_run(cartpole_ppo, tmp_path, capsys):
    out = tmp_path / "plane"
    code, stdout, err = run_cli(["plane", cartpole_ppo, "--out", out, "--grid", "5,3", "--magnitude", "0.5,1", "--episodes", "3", "--workers", "2"], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr")  # plain xarray, no rlscape needed
    assert dict(ds.sizes) == {"alpha": 5, "beta": 3, "episode": 3}
    np.testing.assert_allclose(ds.alpha, np.linspace(-0.5, 0.5, 5))
    np.testing.assert_allclose(ds.beta, [-1, 0, 1])
    for v in ("returns", "lengths", "return_mean", "return_std", "return_sem", "length_mean",
              "discounted_return_mean", "value_mean", "td_error_mean"):
        assert v in ds and np.isfinite(ds[v].values).all(), v
    np.testing.assert_allclose(ds.return_sem, ds.return_std / np.sqrt(3))
    spec = json.loads((out / "spec.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert spec["grid"] == [5, 3] and spec["evaluation"]["seed"] == 0
    assert run["status"] == "complete" and "torch" in run["versions"] and run["seeds"]["env_reset"]
    with np.load(out / "directions" / "dir1.npz") as f:
        assert "action_net.weight" in f.files and "value_net.weight" not in f.files
        assert json.loads(str(f["__rlscape_meta__"]))["normalization"] == "filter"
    assert (out / "plots" / "heatmap.png").stat().st_size > 1000 and (out / "plots" / "surface.html").exists()
    assert "results.zarr" in stdout


def test_same_seed_same_dataset_and_other_seed_differs(cartpole_ppo, tmp_path, capsys):
    paths = []
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        paths.append(tmp_path / name)
        assert run_cli(["plane", cartpole_ppo, "--out", paths[-1], "--seed", seed, *SMALL], capsys)[0] == 0
    a, b, c = (xr.open_zarr(p / "results.zarr").load() for p in paths)
    xr.testing.assert_identical(a, b)
    assert not np.array_equal(a.returns.values, c.returns.values)


def test_line_and_interpolation(cartpole_ppo, tmp_path, capsys):
    second = cartpole_ppo.parent / "agent2"
    out = tmp_path / "interp"
    code, _, err = run_cli(["line", cartpole_ppo, "--out", out, "--direction", second, "--points", "5", "--episodes", "4", "--workers", "1", "--no-plot"], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr").load()
    assert dict(ds.sizes) == {"alpha": 5, "episode": 4} and ds.attrs["direction_kind"] == "interpolation"
    np.testing.assert_allclose(ds.alpha, np.linspace(0, 1, 5))
    # α = 0 is θ1 and α = 1 is θ2: each equals a plane centre evaluated with the same seed
    for alpha, ckpt in ((0.0, cartpole_ppo), (1.0, second)):
        centre = tmp_path / f"centre{alpha}"
        assert run_cli(["plane", ckpt, "--out", centre, "--grid", "1", "--episodes", "4", "--workers", "1", "--no-plot"], capsys)[0] == 0
        c = xr.open_zarr(centre / "results.zarr").load()
        np.testing.assert_array_equal(ds.returns.sel(alpha=alpha).values, c.returns.values[0, 0])
    # a random direction line with an explicit range, then the plot command
    out2 = tmp_path / "line"
    assert run_cli(["line", cartpole_ppo, "--out", out2, "--range=-2,1", "--points", "4", "--episodes", "2", "--workers", "1"], capsys)[0] == 0
    ds2 = xr.open_zarr(out2 / "results.zarr")
    np.testing.assert_allclose(ds2.alpha, [-2, -1, 0, 1])
    assert (out2 / "plots" / "line.png").exists()
    shutil.rmtree(out2 / "plots")
    assert run_cli(["plot", out2, "--log-scale", "--formats", "png"], capsys)[0] == 0
    assert (out2 / "plots" / "line.png").exists() and not (out2 / "plots" / "line.pdf").exists()


def test_direction_from_file_and_custom_env_id(cartpole_ppo, tmp_path, capsys):
    first = tmp_path / "first"
    assert run_cli(["plane", cartpole_ppo, "--out", first, *SMALL], capsys)[0] == 0
    out = tmp_path / "from_file"
    args = ["plane", cartpole_ppo / "model.zip", "--env", "gymnasium.envs.classic_control.cartpole:CartPole-v1",
            "--out", out, "--dir1", first / "directions" / "dir1.npz", "--dir2", first / "directions" / "dir2.npz", *SMALL]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    a, b = xr.open_zarr(first / "results.zarr").load(), xr.open_zarr(out / "results.zarr").load()
    np.testing.assert_array_equal(a.returns.values, b.returns.values)


def _cli_process(args: list[str], pipe: bool = True) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    stream = subprocess.PIPE if pipe else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "rlscape.cli", *map(str, args)], stdout=stream,
                            stderr=stream, text=True, env=env)


def test_killed_run_resumes_to_identical_results(cartpole_ppo, tmp_path, capsys):
    args = [cartpole_ppo, "--grid", "7", "--episodes", "6", "--max-envs", "6", "--workers", "2", "--no-plot"]
    ref = tmp_path / "ref"
    assert run_cli(["plane", *args[:1], "--out", ref, *args[1:]], capsys)[0] == 0
    out = tmp_path / "killed"
    proc = _cli_process(["plane", cartpole_ppo, "--out", out, *args[1:]], pipe=False)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "chunks").glob("points-*[0-9].npz"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_at_kill = len(list((out / "chunks").glob("points-*[0-9].npz")))
    assert 0 < done_at_kill < 49, "the kill must interrupt the run for this test to mean anything"
    code, _, err = run_cli(["plane", cartpole_ppo, "--out", out, *args[1:]], capsys)
    assert code == 0, err
    # completed points were not recomputed: every point lies in exactly one chunk file
    points = [np.load(f)["points"] for f in (out / "chunks").glob("points-*[0-9].npz")]
    assert sorted(np.concatenate(points).tolist()) == list(range(49))
    xr.testing.assert_identical(xr.open_zarr(ref / "results.zarr").load(), xr.open_zarr(out / "results.zarr").load())


def test_ctrl_c_stops_promptly_and_the_run_resumes(cartpole_ppo, tmp_path, capsys):
    out = tmp_path / "interrupted"
    args = ["plane", cartpole_ppo, "--out", out, "--grid", "7", "--episodes", "6", "--max-envs", "6", "--workers", "2", "--no-plot"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "rlscape.cli", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "chunks").glob("points-*[0-9].npz")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    t0 = time.time()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "rerun the same command to resume" in err
    assert time.time() - t0 < 15
    assert run_cli(args, capsys)[0] == 0
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


# -- bad input: one line, exit code 2, no traceback, nothing lost ------------------------------------

def _nan_checkpoint(tmp_path: Path, cartpole_ppo: Path) -> Path:
    import torch
    from stable_baselines3 import PPO

    model = PPO.load(cartpole_ppo / "model.zip", device="cpu")
    with torch.no_grad():
        model.policy.action_net.weight[0, 0] = float("nan")
    folder = tmp_path / "nan"
    folder.mkdir()
    model.save(folder / "model.zip")
    (folder / "env.json").write_text(json.dumps({"env_id": "CartPole-v1"}))
    return folder


def _corrupt_checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "corrupt"
    folder.mkdir()
    (folder / "model.zip").write_bytes(b"this is not a zip file")
    return folder


def _bad_direction(tmp_path: Path) -> Path:
    p = tmp_path / "bad_dir.npz"
    np.savez(p, **{"action_net.weight": np.zeros((3, 3), np.float32)})
    return p


BAD = {
    "missing checkpoint": (lambda t, c: ["plane", t / "nope", "--out", t / "o"], "does not exist"),
    "corrupt checkpoint": (lambda t, c: ["plane", _corrupt_checkpoint(t), "--env", "CartPole-v1", "--out", t / "o"], "not a readable"),
    "bare zip without env": (lambda t, c: ["plane", _bare(t, c), "--out", t / "o"], "--env"),
    "unknown env id": (lambda t, c: ["plane", c / "model.zip", "--env", "NoSuchEnv-v9", "--out", t / "o"], "unknown env id"),
    "unknown custom env module": (lambda t, c: ["plane", c / "model.zip", "--env", "nomodule:Env-v0", "--out", t / "o"], "unknown env id"),
    "env with other spaces": (lambda t, c: ["plane", c, "--env", "Pendulum-v1", "--out", t / "o"], "expects"),
    "even grid": (lambda t, c: ["plane", c, "--grid", "4", "--out", t / "o"], "odd"),
    "zero grid": (lambda t, c: ["plane", c, "--grid", "0", "--out", t / "o"], "odd"),
    "grid not a number": (lambda t, c: ["plane", c, "--grid", "big", "--out", t / "o"], "--grid"),
    "zero episodes": (lambda t, c: ["plane", c, "--episodes", "0", "--out", t / "o"], "--episodes"),
    "negative steps": (lambda t, c: ["plane", c, "--steps", "-5", "--out", t / "o"], "--steps"),
    "episodes and steps": (lambda t, c: ["plane", c, "--steps", "5", "--episodes", "3", "--out", t / "o"], "not both"),
    "negative magnitude": (lambda t, c: ["plane", c, "--magnitude", "-1", "--out", t / "o"], "magnitude"),
    "nan magnitude": (lambda t, c: ["plane", c, "--magnitude", "nan", "--out", t / "o"], "finite"),
    "reversed range": (lambda t, c: ["line", c, "--range", "1,0", "--out", t / "o"], "A < B"),
    "NaN parameters": (lambda t, c: ["plane", _nan_checkpoint(t, c), "--out", t / "o"], "NaN"),
    "direction of wrong shape": (lambda t, c: ["plane", c, "--dir1", _bad_direction(t), "--out", t / "o"], "does not match"),
    "missing direction file": (lambda t, c: ["plane", c, "--dir1", t / "missing.npz", "--out", t / "o"], "does not exist"),
    "unknown normalisation": (lambda t, c: ["plane", c, "--normalization", "rows", "--out", t / "o"], "normalization"),
    "unknown params": (lambda t, c: ["plane", c, "--params", "body", "--out", t / "o"], "params"),
    "unwritable out": (lambda t, c: ["plane", c, "--out", _file(t) / "sub"], "cannot write"),
    "out is a file": (lambda t, c: ["plane", c, "--out", _file(t)], "is a file"),
    "zero workers": (lambda t, c: ["plane", c, "--workers", "0", "--grid", "1", "--episodes", "1", "--out", t / "o"], "--workers"),
    "plot of nothing": (lambda t, c: ["plot", t], "no results"),
    "auto without a target": (lambda t, c: ["line", c, "--episodes", "auto", "--out", t / "o"], "--target-sem"),
    "target with fixed episodes": (lambda t, c: ["plane", c, "--episodes", "5", "--target-sem", "2", "--out", t / "o"], "--episodes auto"),
    "episodes not a number": (lambda t, c: ["plane", c, "--episodes", "many", "--out", t / "o"], "'auto'"),
    "negative target": (lambda t, c: ["plane", c, "--episodes", "auto", "--target-sem", "-1", "--out", t / "o"], "positive"),
    "auto for stepsize": (lambda t, c: ["stepsize", c, "--episodes", "auto", "--out", t / "o"], "not supported"),
    "missing argument": (lambda t, c: ["plane"], "Missing argument"),
    "unknown option": (lambda t, c: ["plane", c, "--out", t / "o", "--bogus"], "No such option: --bogus"),
}


def _bare(tmp_path: Path, checkpoint: Path) -> Path:
    """The model alone, as downloaded from a zoo: no env.json beside it."""
    (tmp_path / "bare").mkdir()
    return Path(shutil.copy(checkpoint / "model.zip", tmp_path / "bare" / "ppo-cartpole.zip"))


def _file(tmp_path: Path) -> Path:
    f = tmp_path / "a_file"
    f.write_text("x")
    return f


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_exit_code_2(case, cartpole_ppo, tmp_path, capsys):
    make_args, expected = BAD[case]
    code, _, err = run_cli(make_args(tmp_path, cartpole_ppo), capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith(("A.L.E", "[Powered"))]
    assert code == 2, (case, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected in lines[0], lines[0]


def test_finished_run_is_neither_recomputed_nor_lost(cartpole_ppo, tmp_path, capsys):
    out = tmp_path / "done"
    assert run_cli(["plane", cartpole_ppo, "--out", out, *SMALL], capsys)[0] == 0
    before = xr.open_zarr(out / "results.zarr").load()
    stamp = (out / "results.zarr").stat().st_mtime_ns
    code, _, err = run_cli(["plane", cartpole_ppo, "--out", out, *SMALL], capsys)
    assert code == 2 and "--overwrite" in err
    code, _, err = run_cli(["plane", cartpole_ppo, "--out", out, "--seed", "9", *SMALL], capsys)
    assert code == 2 and "different run" in err and "seed" in err
    assert (out / "results.zarr").stat().st_mtime_ns == stamp
    xr.testing.assert_identical(before, xr.open_zarr(out / "results.zarr").load())
    code, _, err = run_cli(["plane", cartpole_ppo, "--out", out, "--seed", "9", "--overwrite", *SMALL], capsys)
    assert code == 0 and json.loads((out / "spec.json").read_text())["evaluation"]["seed"] == 9


def test_errors_from_a_real_process_have_no_traceback(tmp_path):
    proc = _cli_process(["plane", tmp_path / "missing", "--out", tmp_path / "o"])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.strip().startswith("error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_failed_first_attempt_does_not_block_the_corrected_command(cartpole_ppo, tmp_path, capsys):
    bare = _bare(tmp_path, cartpole_ppo)
    out = tmp_path / "o"
    assert run_cli(["plane", bare, "--out", out, *SMALL], capsys)[0] == 2  # forgot --env
    assert not (out / "spec.json").exists()
    code, _, err = run_cli(["plane", bare, "--env", "CartPole-v1", "--out", out, *SMALL], capsys)
    assert code == 0, err


def test_bare_zip_with_vecnormalize_flag(tmp_path, capsys):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=0))
    PPO("MlpPolicy", venv, seed=0, device="cpu").save(tmp_path / "zoo-ppo.zip")
    venv.save(tmp_path / "stats.pkl")
    out = tmp_path / "o"
    args = ["plane", tmp_path / "zoo-ppo.zip", "--env", "Pendulum-v1", "--out", out, *SMALL]
    code, _, err = run_cli([*args, "--vecnormalize", tmp_path / "stats.pkl"], capsys)
    assert code == 0, err
    assert "VecNormalize(frozen, obs only)" in json.loads((out / "run.json").read_text())["env"]["wrappers"]
    code, _, err = run_cli([*args[:-len(SMALL)], "--vecnormalize", tmp_path / "nope.pkl", *SMALL, "--overwrite"], capsys)
    assert code == 2 and "--vecnormalize" in err


def test_an_unexpected_error_is_one_line_with_exit_2(monkeypatch, capsys):
    """A non-rlscape exception inside a command must not be hidden by the handler itself (it once
    raised AttributeError: typer's bundled click has no ``Abort``): one line, exit code 2."""
    import rlscape.analyses.gradient as gradient

    def broken(*args, **kwargs):
        raise ValueError("Observation spaces do not match: a != b\nsecond line")

    monkeypatch.setattr(gradient, "run_gradient", broken)
    monkeypatch.delenv("RLSCAPE_TRACEBACK", raising=False)
    code, _, err = run_cli(["gradient", "some-checkpoint", "--out", "x"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]  # one line
    assert "ValueError: Observation spaces do not match: a != b" in err and "Traceback" not in err
