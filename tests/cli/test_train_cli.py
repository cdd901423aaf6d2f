"""`rlscape train` as a user meets it: a run, an interrupted run resumed, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlscape.cli import main
from rlscape.core.runs import list_checkpoints
from tests.cli.test_cli import run_cli

FAST = ["--hyperparams", '{"n_epochs": 2}']



@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    main(["train", "CartPole-v1", "--algo", "ppo", "--steps", "512", "--save-every", "256", "--out", str(out), *FAST])
    return out


def test_train_writes_checkpoints(small_run, tmp_path, capsys):
    assert [s for s, _ in list_checkpoints(small_run)] == [0, 256, 512]
    info = json.loads((small_run / "train.json").read_text())
    assert info["status"] == "complete" and info["hyperparams"]["n_epochs"] == 2 and info["steps"] == 512
    # yaml file overrides, --n-envs wins over the tuned value
    hp = tmp_path / "hp.yaml"
    hp.write_text("CartPole-v1:\n  n_steps: 16\n  batch_size: 32\n  n_epochs: 1\n")
    code, out, err = run_cli(["train", "CartPole-v1", "--steps", "64", "--save-every", "32", "--n-envs", "2",
                              "--hyperparams", hp, "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    assert "checkpoints:" in out and [s for s, _ in list_checkpoints(tmp_path / "r")] == [0, 32, 64]
    assert json.loads((tmp_path / "r" / "env.json").read_text())["hyperparams"]["n_envs"] == 2


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["Pendulum-v1", "--algo", "dqn"], "DQN cannot act in Pendulum-v1"),
        (["CartPole-v1", "--algo", "foo"], "unknown algorithm 'foo'"),
        (["NoSuchEnv-v0"], "unknown env id 'NoSuchEnv-v0'"),
        (["CartPole-v1", "--save-every", "5000"], "--save-every 5000 is larger than --steps 1000"),
        (["CartPole-v1", "--hyperparams", "{gamma: [0.9"], "not valid YAML"),
        (["CartPole-v1", "--hyperparams", "nothere.yaml"], "does not exist"),
        (["CartPole-v1", "--hyperparams", '{"lr": 1}'], "unknown hyperparameter 'lr'"),
    ],
)
def test_bad_input_one_line_exit_2(args, match, tmp_path, capsys):
    code, out, err = run_cli(["train", *args, "--steps", "1000", "--out", tmp_path / "x"], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and match in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_existing_dir_without_resume_is_refused_and_untouched(small_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in small_run.rglob("*")}
    for extra in ([], ["--resume", "--seed", "9"]):
        code, _, err = run_cli(["train", "CartPole-v1", "--steps", "512", "--save-every", "256", "--out", small_run, *FAST, *extra],
                               capsys)
        assert code == 2 and err.count("\n") == 1
    assert "pass --resume" in run_cli(["train", "CartPole-v1", "--steps", "512", "--save-every", "256", "--out", small_run, *FAST],
                                      capsys)[2]
    assert {p: p.stat().st_mtime_ns for p in small_run.rglob("*")} == before


def test_interrupt_then_resume_ends_at_n(tmp_path):
    # long enough that the interrupt lands mid-training (the checkpoint at 512 is the cue)
    TOTAL = 16384  # noqa: N806
    out = tmp_path / "run"
    args = [sys.executable, "-m", "rlscape.cli", "train", "CartPole-v1", "--steps", str(TOTAL), "--save-every", "512",
            "--out", str(out), *FAST]
    # a shell runs background jobs with SIGINT ignored, and a child inherits that (Python then installs no
    # KeyboardInterrupt handler): `make test &` trained to the end through the interrupt. Restore the default.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list_checkpoints(out)) >= 2:  # 0 and at least 512
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "rerun with --resume" in err and "Traceback" not in err
    done = [s for s, _ in list_checkpoints(out)]
    assert 512 <= done[-1] < TOTAL
    assert json.loads((out / "train.json").read_text())["status"] == "interrupted"
    first = {s: (p / "model.zip").read_bytes() for s, p in list_checkpoints(out)}

    res = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    ckpts = list_checkpoints(out)
    assert ckpts[-1][0] == TOTAL and [s for s, _ in ckpts][: len(done)] == done
    assert all((p / "model.zip").read_bytes() == first[s] for s, p in ckpts if s in first)
    info = json.loads((out / "train.json").read_text())
    assert info["status"] == "complete" and info["resumed"][0]["at_step"] == done[-1]
