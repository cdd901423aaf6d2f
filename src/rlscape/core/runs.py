"""Training runs written by ``rlscape train``: find them and their checkpoints.

Layout of a training run (the contract with everything that reads runs)::

    DIR/
      env.json            env id, env kwargs, wrappers, algorithm, hyperparameters, seed (read by load_checkpoint)
      train.json          the training spec, package versions, status, times
      checkpoints/
        0000000000/       the step, zero-padded to 10 digits so names sort by step (step 0 = the initial policy)
          model.zip       SB3 model.save(), optimizer state included
          vecnormalize.pkl    when observations are normalised
          replay_buffer.pkl   off-policy algorithms, unless --no-replay-buffer
          checkpoint.json     {"step", "wall_time_s", "recent_returns", "episodes"}

A checkpoint is written into a hidden temporary folder and renamed when complete, so a folder
with a 10-digit name always holds a whole checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from rlscape.core.errors import RlscapeError

TRAIN_FILE = "train.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT_FILE = "checkpoint.json"
STEP_DIGITS = 10


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint at ``step`` (zero-padded so names sort by step)."""
    return f"{int(step):0{STEP_DIGITS}d}"


def is_checkpoint(source: str | Path) -> bool:
    """Whether ``source`` is one SB3 checkpoint: a ``.zip`` file, or a folder holding one."""
    p = Path(source)
    return (p.is_dir() and any(p.glob("*.zip"))) or (p.is_file() and p.suffix == ".zip")


def checkpoints_label(spec: str | None) -> str:
    """The canonical text of a ``--checkpoints`` choice (``all`` or the steps as given, spaces removed)."""
    return "all" if spec is None or spec.strip().lower() in ("", "all") else spec.replace(" ", "")


def over_training(source: str | Path, checkpoints: str | None) -> bool:
    """The one meaning of ``--checkpoints`` in every command that takes a training run.

    A training run is analysed checkpoint by checkpoint: ``None`` or ``"all"`` selects every
    checkpoint, ``"a,b,c"`` those steps. A single checkpoint with ``--checkpoints`` is refused.
    """
    if is_training_run(source):
        return True
    if checkpoints is not None:
        raise RlscapeError(f"{source} is not a training run (no {CHECKPOINTS}/ folder); drop --checkpoints or give a run folder")
    return False


def first_checkpoint(source: str | Path, checkpoints: str | None) -> tuple[bool, Path]:
    """(whether ``source`` is analysed over training, the first checkpoint it selects): an analysis checks
    this one before it touches ``--out``."""
    many = over_training(source, checkpoints)
    return many, (select_checkpoints(source, checkpoints)[0][1] if many else Path(source))


def is_training_run(path: str | Path) -> bool:
    """Whether ``path`` is a training run directory written by ``rlscape train``."""
    p = Path(path)
    return (p / TRAIN_FILE).is_file() and (p / CHECKPOINTS).is_dir()


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The complete checkpoints of a training run as ``(step, folder)``, sorted by step."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        if (p.is_dir() and len(p.name) == STEP_DIGITS and p.name.isdigit() and (p / "model.zip").is_file()
                and (p / CHECKPOINT_FILE).is_file()):
            out.append((int(p.name), p))
    return sorted(out)


def select_checkpoints(run_dir: str | Path, spec: str | None) -> list[tuple[int, Path]]:
    """Checkpoints chosen by ``spec``: ``None`` or ``"all"`` → every one; ``"a,b,c"`` → those steps exactly."""
    available = list_checkpoints(run_dir)
    if not (Path(run_dir) / CHECKPOINTS).is_dir():
        raise RlscapeError(f"{run_dir} is not a training run (no {CHECKPOINTS}/ folder); give a folder written by `rlscape train`")
    if not available:
        raise RlscapeError(f"{run_dir} holds no checkpoints (no complete {CHECKPOINTS}/<step>/); train first or give another run")
    if spec is None or spec.strip().lower() in ("", "all"):
        return available
    by_step = dict(available)
    steps_text = ", ".join(str(s) for s, _ in available)
    chosen: list[tuple[int, Path]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        try:
            step = int(part)
        except ValueError:
            raise RlscapeError(f"checkpoint steps must be integers separated by commas or 'all', not {spec!r}") from None
        if step not in by_step:
            raise RlscapeError(f"{run_dir} has no checkpoint at step {step}; available steps: {steps_text}")
        if step not in (s for s, _ in chosen):
            chosen.append((step, by_step[step]))
    if not chosen:
        raise RlscapeError(f"no checkpoint steps given in {spec!r}; pass 'all' or steps such as {available[0][0]}")
    return sorted(chosen)
