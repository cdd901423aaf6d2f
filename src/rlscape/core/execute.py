"""Spread the points of an experiment over worker processes (or run them here).

The population is cut into chunks of whole points; each worker process builds one
:class:`PopulationEvaluator` when it starts (agent and directions are sent once, not per task)
and then evaluates chunks with no inter-process traffic per env step. Chunks come back as they
finish and are handed to ``on_chunk`` (the run directory stores them). The executor is a plain
``concurrent.futures`` executor, so a Dask ``Client.get_executor()`` can take its place later.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import pickle
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import numpy as np

from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import BlockResult, Budget, PopulationEvaluator
from rlscape.core.params import NamedArrays
from rlscape.core.policy import Agent
from rlscape.core.store import cpu_count
from rlscape.core.threads import pin_process_to_one_thread

log = logging.getLogger(__name__)

_WORKER: PopulationEvaluator | None = None
_CHUNKS_PER_WORKER = 8  # small chunks at the end keep every worker busy until the last one (load balance)


def _init_worker(payload: bytes | tuple[Any, ...], stop: Any) -> None:
    global _WORKER
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    pin_process_to_one_thread()
    agent, base, basis, members, kwargs = pickle.loads(payload) if isinstance(payload, bytes) else payload
    _WORKER = PopulationEvaluator(agent, base, basis, members=members, should_stop=stop.is_set, **kwargs)


def _die_with_parent() -> None:
    """Linux: end this worker when the parent dies, even by SIGKILL (no stray processes)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:  # pragma: no cover - exotic libc
            pass


def process_context() -> Any:
    """``fork`` on Linux: workers start in milliseconds, scripts need no ``__main__`` guard, and
    adapter functions need not be picklable. Elsewhere ``spawn`` (fork is unsafe on macOS)."""
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _run_chunk(points: np.ndarray, rows: np.ndarray, budget: Budget) -> tuple[np.ndarray, BlockResult, float]:
    assert _WORKER is not None
    t0 = time.perf_counter()
    return points, _WORKER.evaluate(rows, budget), time.perf_counter() - t0


def _stop_pool(pool: ProcessPoolExecutor, stop: Any, grace: float = 20.0) -> None:
    """Ctrl-C or a failed chunk: stop now rather than after the chunks in flight.

    Workers are asked to stop (they abandon their chunk within a few env steps and exit through
    the pool's own protocol). Killing them outright instead can leave a half-written result in the
    pool's pipe, and the pool's manager thread then blocks the interpreter's exit for ever; only a
    worker that ignores the request for ``grace`` seconds is terminated.
    """
    stop.set()
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in processes:
        if proc.is_alive():  # pragma: no cover - a worker stuck inside a simulator call
            log.warning("worker %s did not stop; terminating it", proc.pid)
            proc.terminate()


def chunk_points(todo: np.ndarray, points_per_rectangle: int, workers: int) -> list[np.ndarray]:
    """Cut ``todo`` into chunks: at most one rectangle each, and ≥ 8 chunks per worker when possible."""
    if todo.size == 0:
        return []
    size = max(1, min(points_per_rectangle, math.ceil(todo.size / (_CHUNKS_PER_WORKER * workers))))
    return [todo[i : i + size] for i in range(0, todo.size, size)]


def evaluate_points(
    agent: Agent,
    base: NamedArrays,
    basis: Sequence[NamedArrays],
    coords: np.ndarray | None,
    todo: np.ndarray,
    budget: Budget,
    *,
    seed: int,
    deterministic: bool,
    workers: int | Any | None = None,
    max_envs: int | None = None,
    generic: bool = False,
    on_chunk: Callable[[np.ndarray, BlockResult], None],
    progress: Callable[[int, int], None] | None = None,
    members: NamedArrays | None = None,
    member_seeds: np.ndarray | None = None,
) -> int:
    """Evaluate the points ``todo`` and call ``on_chunk(points, result)`` as each chunk finishes.

    A point is either ``base + coords[k] · basis`` (``coords`` ``(N, n_dirs)``) or, with
    ``members`` (name → ``(N, *shape)``, the names of ``base``; ``coords`` None and ``basis``
    empty), member ``k`` itself. The members go to each worker once, when it starts; tasks carry
    point indices only, so building and shipping N members costs O(N·P). ``member_seeds`` (N,): each member's
    episodes from its own seed instead of ``seed`` (no common random numbers). ``todo`` holds the flat
    indices still to compute. Returns the number of env steps taken. ``workers`` defaults to all cores; 1 runs in this process. ``generic``
    forces Gymnasium envs where a native batched env exists (the results are the same).
    ``workers`` may also be a ``dask.distributed.Client``: the same chunks run as tasks on its cluster.
    """
    # -- Dask hook: a client instead of a process count (core/dask_executor.py) --
    from rlscape.core.dask_executor import evaluate_points_dask, is_client

    if is_client(workers):
        return evaluate_points_dask(workers, agent, base, basis, coords, todo, budget, seed=seed, deterministic=deterministic,
                                    max_envs=max_envs, generic=generic, on_chunk=on_chunk, progress=progress, members=members,
                                    member_seeds=member_seeds)
    # -- end of the Dask hook --
    workers = cpu_count() if workers is None else int(workers)
    if workers < 1:
        raise RlscapeError(f"--workers must be at least 1, not {workers}")
    max_envs = max_envs or agent.env.default_max_envs()
    per_rect = max(1, max_envs // (budget.episodes or 1)) if budget.episodes else max_envs
    chunks = chunk_points(np.asarray(todo, np.int64), per_rect, workers)
    workers = max(1, min(workers, len(chunks)))
    kwargs: dict[str, Any] = {"seed": seed, "deterministic": deterministic, "max_envs": max_envs, "generic": generic,
                              "member_seeds": member_seeds}
    total_steps = 0
    if not chunks:
        return 0

    def rows(pts: np.ndarray) -> np.ndarray:
        return pts if coords is None else coords[pts]
    if workers == 1:
        evaluator = PopulationEvaluator(agent, base, basis, members=members, **kwargs)
        try:  # the same arithmetic as in worker processes (evaluate() runs single-threaded): results never depend on --workers
            for pts in chunks:
                res = evaluator.evaluate(rows(pts), budget)
                total_steps += res.env_steps
                on_chunk(pts, res)
                if progress:
                    progress(len(pts), res.env_steps)
        finally:
            evaluator.close()
        return total_steps

    ctx = process_context()
    payload: bytes | tuple[Any, ...] = (agent, base, basis, members, kwargs)
    if ctx.get_start_method() != "fork":
        try:
            payload = pickle.dumps(payload)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise RlscapeError(
                f"the agent cannot be sent to worker processes ({exc}); use workers=1, or define the adapter functions at module level"
            ) from None
    stop = ctx.Event()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(payload, stop))
    try:
        futures: set[Future[Any]] = {pool.submit(_run_chunk, pts, rows(pts), budget) for pts in chunks}
        while futures:
            finished, futures = wait(futures, return_when=FIRST_COMPLETED)
            for fut in finished:
                pts, res, _ = fut.result()  # a worker's exception surfaces here, never silently
                total_steps += res.env_steps
                on_chunk(pts, res)
                if progress:
                    progress(len(pts), res.env_steps)
    except BaseException:
        _stop_pool(pool, stop)
        raise
    pool.shutdown(wait=True)
    return total_steps
