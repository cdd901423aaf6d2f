"""Training runs: a folder of checkpoints saved during training (the layout ``rlscape train`` writes).

Layout::

    DIR/
      env.json, train.json
      checkpoints/
        0000000000/model.zip (+ vecnormalize.pkl, replay_buffer.pkl, checkpoint.json)
        0000010000/ ...

Checkpoint folder names are the training step, zero-padded to 10 digits so they sort by step.
"""

from __future__ import annotations

from pathlib import Path

from rlscape.core.errors import RlscapeError

CHECKPOINTS = "checkpoints"


def _step_of(folder: Path) -> int | None:
    name = folder.name
    return int(name) if name.isdigit() and folder.is_dir() and (folder / "model.zip").is_file() else None


def is_training_run(path: str | Path) -> bool:
    """Whether ``path`` is a training-run folder (it has a ``checkpoints/`` sub-folder)."""
    return (Path(path) / CHECKPOINTS).is_dir()


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every checkpoint of a training run that holds a ``model.zip``, sorted by step."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        raise RlscapeError(f"{run_dir} is not a training run (no {CHECKPOINTS}/ folder); give a folder written by `rlscape train`")
    found = [(s, f) for f in root.iterdir() if (s := _step_of(f)) is not None]
    return sorted(found)


def select_checkpoints(run_dir: str | Path, spec: str | None) -> list[tuple[int, Path]]:
    """The checkpoints named by ``spec``: ``None``/``"all"`` → all; ``"a,b,c"`` → those steps (exact match)."""
    available = list_checkpoints(run_dir)
    if not available:
        raise RlscapeError(f"{run_dir}/{CHECKPOINTS} holds no checkpoints (no <step>/model.zip); train first or give another run")
    if spec is None or spec.strip().lower() == "all":
        return available
    by_step = dict(available)
    wanted: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        try:
            step = int(part)
        except ValueError:
            raise RlscapeError(f"--checkpoints takes training steps separated by commas (e.g. 0,10000), not {part!r}") from None
        if step not in by_step:
            names = ", ".join(str(s) for s, _ in available)
            raise RlscapeError(f"{run_dir} has no checkpoint at step {step}; available steps: {names}")
        if step not in wanted:
            wanted.append(step)
    if not wanted:
        raise RlscapeError("--checkpoints is empty; give steps separated by commas, or 'all'")
    return [(s, by_step[s]) for s in sorted(wanted)]
