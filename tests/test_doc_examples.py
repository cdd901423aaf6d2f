"""The README's and the docs' ```python examples run, so an example that stops working fails CI.

Each file's fenced ``python`` blocks run in order in one namespace (later blocks use earlier ones'
names, as a reader would), in a temporary working directory where the paths the examples name exist:

* ``runs/quickstart/agent`` — a copy of the small PPO CartPole checkpoint of ``tests/conftest.py``;
  ``runs/quickstart/plane`` — a 3×3 plane of it (2 episodes); ``runs/cartpole-ppo`` — the tiny
  training run of ``tests/training_runs.py``; ``runs/hopper-relu`` — its ReLU run (MountainCar);
* budgets are made tiny by textual substitution: ``grid=N`` → ``grid=3`` (``grid=(N,)`` →
  ``grid=(3,)``), ``episodes=N`` → ``episodes=2``, ``points=N`` → ``points=3``, ``workers=N`` →
  ``workers=1``, and ``runs/hopper-relu/checkpoints/<step>`` → the step ``0000001024`` that the tiny
  ReLU run has — nothing else of the code is changed;
* names an example leaves to the reader are given: ``my_vector`` (a random array per parameter, "a
  gradient you computed") and, for docs/regions.md, ``a``/``b`` (segment ends, shape (5, 11)).

A new ```python block in these files is run too; a block that cannot run in the test must be
listed in ``NOT_RUN`` with the reason.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests import training_runs

ROOT = Path(__file__).resolve().parent.parent
FILES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
NOT_RUN: dict[tuple[str, int], str] = {  # (file, block index) → why it is not run
    ("docs/scale-out.md", 0): "connects to a Dask scheduler at HOST: the same call runs on a localhost cluster in tests/core/test_dask_executor.py",
    ("docs/scale-out.md", 1): "starts a Slurm cluster through dask-jobqueue: no Slurm here",
}
SUBSTITUTIONS = [(r"\bgrid=\(\d+,\)", "grid=(3,)"), (r"\bgrid=\d+", "grid=3"), (r"\bepisodes=\d+", "episodes=2"),
                 (r"\bpoints=\d+", "points=3"), (r"\bworkers=\d+", "workers=1"),
                 (r"runs/hopper-relu/checkpoints/\d{10}", "runs/hopper-relu/checkpoints/0000001024")]


def python_blocks(text: str) -> list[str]:
    """The bodies of the fenced ```python blocks of a markdown text, in order."""
    return re.findall(r"^```python[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def tiny(code: str) -> str:
    for pattern, repl in SUBSTITUTIONS:
        code = re.sub(pattern, repl, code)
    return code


def test_substitutions_only_touch_budgets():
    src = 'rlscape.plane(agent, grid=11, magnitude=0.5, episodes=10, seed=1); x = "grid=(21,)"; workers=2'
    assert tiny(src) == 'rlscape.plane(agent, grid=3, magnitude=0.5, episodes=2, seed=1); x = "grid=(3,)"; workers=1'
    assert len(python_blocks((ROOT / "README.md").read_text())) >= 3  # From Python, Populations from Python, …


@pytest.fixture(scope="module")
def workdir(cartpole_ppo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("examples")
    runs = root / "runs"
    shutil.copytree(cartpole_ppo, runs / "quickstart" / "agent")
    (runs / "cartpole-ppo").symlink_to(training_runs.tiny_ppo_run(tmp_path_factory))
    (runs / "hopper-relu").symlink_to(training_runs.relu_run(tmp_path_factory))
    from rlscape.cli import main

    try:
        main(["plane", str(runs / "quickstart" / "agent"), "--out", str(runs / "quickstart" / "plane"), "--grid", "3",
              "--episodes", "2", "--workers", "1", "--no-plot"])
    except SystemExit as exc:
        assert not exc.code
    return root


@pytest.mark.parametrize("name", [f for f in FILES if python_blocks((ROOT / f).read_text(encoding="utf-8"))])
def test_python_examples_run(name, workdir, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import torch

    import rlscape

    monkeypatch.chdir(workdir)
    theta = rlscape.load_checkpoint("runs/quickstart/agent").parameters("actor")
    rng = np.random.default_rng(0)
    ns: dict = {"__name__": "__example__", "my_vector": {n: rng.standard_normal(v.shape).astype(np.float32) for n, v in theta.items()},
                "a": rng.standard_normal((5, 11)), "b": rng.standard_normal((5, 11)), "torch": torch, "nn": torch.nn,
                "rlscape": rlscape}
    for i, block in enumerate(python_blocks((ROOT / name).read_text(encoding="utf-8"))):
        if (name, i) in NOT_RUN:
            continue
        code = tiny(block)
        try:
            exec(compile(code, f"{name} python block {i}", "exec"), ns)  # noqa: S102 - the documented example itself
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"{name}, python block {i} fails ({type(exc).__name__}: {exc}):\n{code}")
