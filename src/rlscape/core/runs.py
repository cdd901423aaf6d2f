"""Training runs: ``DIR/checkpoints/<10-digit step>/model.zip`` (+ ``env.json``, ``train.json``).

A minimal reader of the training-run layout that ``rlscape train`` writes (the contract every
over-training analysis reads); the signatures are shared with the training helper's module.
"""

from __future__ import annotations

from pathlib import Path

from rlscape.core.errors import RlscapeError

CHECKPOINTS = "checkpoints"


def is_training_run(path: str | Path) -> bool:
    """Whether ``path`` is a training-run folder (it holds ``checkpoints/<step>/model.zip``)."""
    p = Path(path)
    return p.is_dir() and bool(list_checkpoints(p))


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every checkpoint of a training run, sorted by step."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    out = []
    for f in root.iterdir():
        if f.is_dir() and f.name.isdigit() and (f / "model.zip").is_file():
            out.append((int(f.name), f))
    return sorted(out)


def select_checkpoints(run_dir: str | Path, spec: str | None) -> list[tuple[int, Path]]:
    """Checkpoints named by ``spec``: ``None``/``"all"`` → all; ``"a,b,c"`` → those steps exactly."""
    found = list_checkpoints(run_dir)
    if not found:
        raise RlscapeError(f"{run_dir} holds no checkpoints ({CHECKPOINTS}/<step>/model.zip); give a training run folder")
    if spec is None or spec.strip().lower() in ("", "all"):
        return found
    by_step = dict(found)
    try:
        wanted = [int(s) for s in spec.replace(" ", "").split(",") if s]
    except ValueError:
        raise RlscapeError(f"--checkpoints must be 'all' or steps separated by commas, not {spec!r}") from None
    missing = [s for s in wanted if s not in by_step]
    if missing:
        raise RlscapeError(
            f"no checkpoint at step {', '.join(map(str, missing))} in {run_dir}; available: {', '.join(str(s) for s, _ in found)}"
        )
    return [(s, by_step[s]) for s in sorted(set(wanted))]
