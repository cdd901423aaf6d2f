"""The one run lifecycle every analysis goes through.

An analysis supplies only its computation; this module owns everything around it:

* **spec identity** — ``spec.json`` is the identity of a run directory. The same spec resumes an
  unfinished run; a different spec, or a finished run, is refused unless ``overwrite``;
* **a lock** — one process at a time writes a run directory (``.lock``, an ``flock`` held for the
  life of the run). A second process is refused at once with a message naming the holder; the
  kernel releases the lock of a killed process, so the next run simply takes it over;
* **status** — ``run.json`` says ``running`` while the computation runs, then ``complete``
  (:meth:`Run.finish`), ``interrupted`` (Ctrl-C) or ``failed`` (with the error);
* **provenance and timings** — package versions, cores, the command line, start/finish times,
  wall time of this session and of all sessions together;
* **atomic writes** — every file is written to a temporary name and renamed.

Over a training run, :func:`over_checkpoints` is the one driver: each selected checkpoint is an
ordinary run directory ``OUT/steps/<10-digit step>/`` (resumable on its own), and the parent's
``results.zarr`` is rewritten after every finished checkpoint with a leading ``step`` dim.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from rlscape.core.errors import RlscapeError
from rlscape.core.runs import checkpoint_name
from rlscape.core.store import RESULTS, RunDir, cpu_count, package_versions

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
STEPS = "steps"  # OUT/steps/<10-digit step>/: one ordinary run directory per checkpoint

#: schema of the results every kind writes; a reader refuses a newer one
SCHEMA_VERSION = 1

#: version of the evaluator's floating-point arithmetic. Bump it whenever a change to the forward
#: pass or the env steppers can change a stored number in its last bits: a run computed partly with
#: another version is not resumed (its finished parts would mix two arithmetics). 3: SB3 MLP heads
#: run in numpy (OpenBLAS products, zero-padded to widths of 4; numpy's tanh), one BLAS thread; 2: per-point
#: forward blocks of a size fixed by the episode budget, one thread (independent of --max-envs and
#: --workers); 1 (unrecorded): rlscape before that.
ARITHMETIC_VERSION = 3

_HELD: dict[Path, int] = {}  # run directories this process holds the lock of → nesting depth


def stamp() -> str:
    """The current local time, ISO 8601 with the offset (as stored in run.json)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunLock:
    """An exclusive ``flock`` on ``DIR/.lock`` naming its holder (pid, host, command, start time)."""

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.fd: int | None = None

    def acquire(self) -> None:
        if self.path in _HELD:  # re-entrant within one process (an analysis calling another on the same folder)
            _HELD[self.path] += 1
            return
        lock_file = self.path / LOCK_FILE
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RlscapeError(
                f"{self.path} is being written by another process ({holder}); wait for it to finish, stop it, "
                "or choose another --out"
            ) from None
        previous = _read_holder(fd)
        if previous != "unknown":
            log.info("taking over the lock of %s (left by %s, which has ended)", self.path, previous)
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": stamp(), "command": " ".join(sys.argv)}
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self.fd = fd
        _HELD[self.path] = 1

    def release(self) -> None:
        if self.path not in _HELD:
            return
        _HELD[self.path] -= 1
        if _HELD[self.path] > 0:
            return
        del _HELD[self.path]
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)  # nobody holds it now
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return "unknown"
    if not info:
        return "unknown"
    return f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}: {info.get('command', '')}".strip()


class Run:
    """An open run directory: the analysis computes, writes partial results through :attr:`dir`,
    and ends with :meth:`finish`. Everything else (status, lock, provenance) is the lifecycle's."""

    def __init__(self, rundir: RunDir, spec: Mapping[str, Any]) -> None:
        self.dir = rundir
        self.path = rundir.path
        self.spec = dict(spec)
        self.finished = False
        self._t0 = time.perf_counter()

    def record(self, **fields: Any) -> None:
        """Add facts to ``run.json`` (seeds, directions, env, parameter names …)."""
        self.dir.update_run(**fields)

    def write_dataset(self, ds: xr.Dataset) -> None:
        """Write (or rewrite) ``results.zarr``; partial results use NaN for what is not computed yet."""
        self.dir.write_dataset(_stamped(ds))

    def finish(self, ds: xr.Dataset | None = None, **summary: Any) -> None:
        """Write the final results and mark the run complete, with ``summary`` facts in run.json."""
        if ds is not None:
            self.write_dataset(ds)
        wall = time.perf_counter() - self._t0
        info = self.dir.read_run()
        total = float(info.get("wall_time_total_s", 0.0)) + wall
        self.dir.update_run(status="complete", finished=stamp(), wall_time_s=round(wall, 3),
                            wall_time_total_s=round(total, 3), **summary)
        self.finished = True


def _stamped(ds: xr.Dataset) -> xr.Dataset:
    if "schema_version" not in ds.attrs:
        ds.attrs["schema_version"] = SCHEMA_VERSION
    return ds


@contextlib.contextmanager
def open_run(out: str | Path, spec: Mapping[str, Any], *, overwrite: bool = False,
             owned: Sequence[str] = ()) -> Iterator[Run]:
    """Open ``out`` for ``spec`` (new, resumed, or refused), hold its lock, and keep its status.

    Call this only once every input has been checked, so bad input never touches ``out``.
    ``owned``: extra names inside ``out`` that this kind of run writes (removed by ``overwrite``).
    The body must end with :meth:`Run.finish`; an exception marks the run ``failed`` (or
    ``interrupted`` on Ctrl-C) and leaves every finished part in place for a resume.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RlscapeError(f"--out {path} is a file; give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RlscapeError(f"cannot write to {path} ({exc.strerror or exc}); choose a writable --out") from None
    lock = RunLock(path)
    try:
        lock.acquire()
    except PermissionError as exc:
        raise RlscapeError(f"cannot write to {path} ({exc.strerror or exc}); choose a writable --out") from None
    try:
        rundir = RunDir.prepare(path, dict(spec), overwrite, owned=tuple(owned))
        previous = rundir.read_run()
        old_arithmetic = int(previous.get("arithmetic_version", 1)) if previous else ARITHMETIC_VERSION
        if old_arithmetic != ARITHMETIC_VERSION and rundir.has_results(tuple(owned)):
            raise RlscapeError(f"{path} was partly computed by an rlscape whose arithmetic differs (version {old_arithmetic}, "
                               f"now {ARITHMETIC_VERSION}); pass --overwrite to compute it again, or choose another --out")
        rundir.update_run(status="running", kind=spec.get("kind", spec.get("analysis")), schema_version=SCHEMA_VERSION,
                          arithmetic_version=ARITHMETIC_VERSION,
                          versions=package_versions(), cores=cpu_count(), command=" ".join(sys.argv), started=stamp(),
                          sessions=int(previous.get("sessions", 0)) + 1, error=None)
        run = Run(rundir, spec)
        try:
            yield run
        except KeyboardInterrupt:
            rundir.update_run(status="interrupted", stopped=stamp())
            raise
        except BaseException as exc:
            rundir.update_run(status="failed", stopped=stamp(), error=f"{type(exc).__name__}: {exc}")
            raise
        if not run.finished:
            rundir.update_run(status="failed", stopped=stamp(), error="the analysis ended without finishing the run")
            raise RuntimeError(f"internal error: the run in {path} ended without Run.finish()")
    finally:
        lock.release()


# -- over checkpoints ------------------------------------------------------------------------------

def step_dir(out: str | Path, step: int) -> Path:
    """The sub-run of the checkpoint at ``step``: ``OUT/steps/<10-digit step>``."""
    return Path(out) / STEPS / checkpoint_name(step)


def finished_result(path: Path, spec: Mapping[str, Any]) -> xr.Dataset | None:
    """The results of a complete run of exactly ``spec`` in ``path``, or None."""
    rd = RunDir(path)
    if rd.status() != "complete" or rd.read_spec() != json.loads(json.dumps(dict(spec))) or not (path / RESULTS).exists():
        return None
    return xr.open_zarr(path / RESULTS, consolidated=True).load()


def over_checkpoints(
    out: str | Path,
    spec: Mapping[str, Any],
    selected: Sequence[tuple[int, Path]],
    *,
    sub_spec: Callable[[int, Path], Mapping[str, Any]],
    compute: Callable[[int, Path, Run], xr.Dataset],
    combine: Callable[[list[tuple[int, xr.Dataset]]], xr.Dataset],
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 1,
    record: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Run ``compute`` at each ``(step, folder)`` as its own run directory, combined over ``step``.

    ``sub_spec(step, folder)`` is the identity of one checkpoint's sub-run; a complete sub-run of
    that spec is reused (resume). ``compute(step, folder, run)`` computes one checkpoint inside the
    open sub-run and returns its Dataset (the driver writes it). ``combine`` stacks the finished
    ones (sorted by step); the parent's ``results.zarr`` is rewritten after each, so finished steps
    can be read while the rest run. A finished run whose ``all`` now selects more checkpoints is
    extended. ``workers > 1`` computes that many checkpoints at once in worker processes (each
    the single writer of its own sub-run; ``compute`` must then be picklable, e.g. a module-level
    function or a ``functools.partial`` of one).
    """
    steps = [int(s) for s, _ in selected]
    parent_dir = RunDir(Path(out))
    if (not overwrite and parent_dir.status() == "complete" and parent_dir.read_spec() == json.loads(json.dumps(dict(spec)))
            and parent_dir.read_run().get("steps") != steps):
        parent_dir.update_run(status="extending")  # the same spec now selects other checkpoints
    with open_run(out, spec, overwrite=overwrite, owned=(STEPS,)) as parent:
        parent.record(steps=steps, sub_runs={str(s): f"{STEPS}/{checkpoint_name(s)}" for s in steps}, **dict(record or {}))
        done: list[tuple[int, xr.Dataset]] = []
        todo: list[tuple[int, Path, Mapping[str, Any]]] = []
        for step, folder in selected:
            want = sub_spec(step, folder)
            ds = None if overwrite else finished_result(step_dir(out, step), want)
            if ds is not None:
                done.append((step, ds))
            else:
                todo.append((step, folder, want))
        if done:
            log.info("resuming: %d of %d checkpoints already done", len(done), len(selected))
        bar = None
        if progress and len(selected) > 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(selected), initial=len(done), unit="ckpt", desc="checkpoints", dynamic_ncols=True)

        def finished(step: int, ds: xr.Dataset) -> None:
            done.append((step, ds))
            done.sort(key=lambda item: item[0])
            parent.write_dataset(combine(done))
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"step {step} done")

        try:
            if workers <= 1 or len(todo) <= 1:
                for i, (step, folder, want) in enumerate(todo):
                    log.info("checkpoint %d/%d (step %d) → %s", i + 1, len(todo), step, step_dir(out, step))
                    finished(step, run_sub(compute, step, folder, step_dir(out, step), want, overwrite))
            else:
                _parallel(todo, out, compute, overwrite, min(workers, len(todo)), finished)
        finally:
            if bar is not None:
                bar.close()
        if not done:
            raise RlscapeError("no checkpoint was evaluated")
        combined = combine(done)
        parent.finish(combined)
    return combined


def run_sub(compute: Callable[[int, Path, Run], xr.Dataset], step: int, folder: Path, path: Path,
            spec: Mapping[str, Any], overwrite: bool) -> xr.Dataset:
    """One checkpoint's sub-run: open it, compute, finish; returns its Dataset."""
    with open_run(path, spec, overwrite=overwrite) as sub:
        ds = compute(step, folder, sub)
        sub.finish(ds)
    return ds


def _init_sub_worker() -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.set_num_threads(1)


def _parallel(todo: list[tuple[int, Path, Mapping[str, Any]]], out: str | Path, compute: Callable[[int, Path, Run], xr.Dataset],
              overwrite: bool, workers: int, finished: Callable[[int, xr.Dataset], None]) -> None:
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from rlscape.core.execute import process_context

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=process_context(), initializer=_init_sub_worker)
    try:
        futures = {pool.submit(run_sub, compute, step, folder, step_dir(out, step), want, overwrite): step
                   for step, folder, want in todo}
        pending = set(futures)
        while pending:
            now, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in now:
                finished(futures[fut], fut.result())  # a worker's exception surfaces here
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def checkpoint_or_run(
    source: str | Path,
    out: str | Path,
    spec: Mapping[str, Any],
    compute: Callable[[int | None, Path, Run], xr.Dataset],
    *,
    checkpoints: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    record: Mapping[str, Any] | None = None,
    combine: Callable[[list[tuple[int, xr.Dataset]]], xr.Dataset] | None = None,
) -> xr.Dataset:
    """One analysis of a checkpoint, or of each checkpoint of a training run (``--checkpoints``).

    A single checkpoint: ``compute(None, source, run)`` inside ``open_run(out, spec)``. A training
    run: :func:`over_checkpoints`, each checkpoint a sub-run whose spec is ``spec`` with its
    ``checkpoint`` and ``step``; by default the datasets gain a leading ``step`` dim and are
    concatenated (``combine`` replaces that, e.g. to pad dims whose length differs by step).
    """
    from rlscape.core.runs import checkpoints_label, over_training, select_checkpoints

    if not over_training(source, checkpoints):
        with open_run(out, spec, overwrite=overwrite) as run:
            if record:
                run.record(**record)
            ds = compute(None, Path(source), run)
            run.finish(ds)
        return ds
    selected = select_checkpoints(source, checkpoints)
    base = dict(spec, checkpoints=checkpoints_label(checkpoints))

    def sub_spec(step: int, folder: Path) -> dict[str, Any]:
        return {**{k: v for k, v in base.items() if k != "checkpoints"}, "checkpoint": str(Path(folder).resolve()), "step": int(step)}

    def one(step: int, folder: Path, run: Run) -> xr.Dataset:
        return compute(step, folder, run).expand_dims(step=[int(step)])

    def stack(done: list[tuple[int, xr.Dataset]]) -> xr.Dataset:
        out_ds = xr.concat([d for _, d in done], dim="step", join="outer", combine_attrs="drop_conflicts")
        out_ds["step"].attrs["long_name"] = "training step of the checkpoint"
        out_ds.attrs["over_training"] = 1
        return out_ds

    return over_checkpoints(out, base, selected, sub_spec=sub_spec, compute=compute if combine else one,
                            combine=combine or stack, overwrite=overwrite,
                            progress=progress, record={"training_run": str(Path(source).resolve()), **dict(record or {})})
