"""The chunks of an experiment as tasks on a Dask cluster (methods.md §11).

The same chunks of points that :func:`rlscape.core.execute.evaluate_points` gives local worker
processes run here as Dask tasks. The agent and the directions are pickled once into one payload,
scattered to every worker (``broadcast``), and each worker thread builds one
:class:`PopulationEvaluator` from it, cached under the payload's content hash; a task carries only
its point indices and coordinates. Results stream back with ``as_completed`` and the driver alone
writes the run directory (``on_chunk`` runs here). Every task evaluates with torch single-threaded,
like a local worker, so the numbers equal a local run's.

A worker that dies mid-chunk: the scheduler runs its chunks again on another worker; each chunk's
future finishes once, so nothing is lost or counted twice. The driver that dies: the finished chunks
are in the run directory and a rerun (local or Dask) resumes from them.

Dask is optional (``pip install 'rlscape[dask]'``, ``'rlscape[slurm]'`` for dask-jobqueue); this
module imports it only when a client is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import BlockResult, Budget, PopulationEvaluator
from rlscape.core.params import NamedArrays
from rlscape.core.policy import Agent
from rlscape.core.store import cpu_count, package_versions

log = logging.getLogger(__name__)

SCHEDULER_ENV = "RLSCAPE_SCHEDULER"
EXECUTORS = ("local", "dask")
CLUSTERS = ("slurm", "pbs")
#: packages whose versions change the numbers: a worker must match the driver in every one
VERSIONED = ("python", "rlscape", "torch", "numpy", "gymnasium", "stable-baselines3", "sb3-contrib", "mujoco", "ale-py")

#: Dask's statistical profiler samples every worker thread's stack each 10 ms under the GIL; on a
#: cheap env (CartPole, ~10⁵ env-steps/s per core) that cost Dask ~15 % of its throughput
NO_PROFILER = "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False"

_LOCAL = threading.local()  # per worker thread: (payload hash, PopulationEvaluator)


class VersionMismatch(RuntimeError):
    """A worker runs other versions of the packages that the numbers depend on than the driver."""


def _need_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise RlscapeError("the Dask executor needs dask.distributed: pip install 'rlscape[dask]'") from None
    return distributed


def is_client(workers: Any) -> bool:
    """Whether ``workers`` is a ``dask.distributed.Client`` (rather than a count of local processes)."""
    if workers is None or isinstance(workers, int | np.integer):
        return False
    try:
        from distributed import Client
    except ImportError:
        return False
    return isinstance(workers, Client)


def check_workers(workers: int | Any | None) -> None:
    """``workers``: None (all cores), a count ≥ 1, or a Dask client; anything else is refused."""
    if workers is None or is_client(workers):
        return
    if not isinstance(workers, int | np.integer) or workers < 1:
        raise RlscapeError(f"--workers must be at least 1, not {workers}")


def worker_threads(client: Any) -> int:
    """Threads (= cores evaluating at once) of all workers the client's scheduler knows now."""
    info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else client.scheduler_info()
    return int(sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))


def _takes_n_workers(client: Any) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def describe_workers(workers: int | Any | None) -> int | str:
    """What ran the evaluation, for run.json: a process count, or the Dask scheduler and its threads."""
    if is_client(workers):
        return f"dask {workers.scheduler.address} ({worker_threads(workers)} threads)"
    return int(workers) if workers else cpu_count()


def runtime_versions() -> dict[str, str]:
    """The versions of :data:`VERSIONED` here (a worker compares the driver's with its own)."""
    have = package_versions()
    return {k: have[k] for k in VERSIONED if k in have}


def worker_versions() -> dict[str, str]:
    """:func:`runtime_versions` as a worker computes it (``client.run`` sends this function by name)."""
    return runtime_versions()


def version_difference(expected: dict[str, str], got: dict[str, str]) -> str:
    """``''`` when equal, else e.g. ``'torch 2.3.0 (driver 2.4.1)'``."""
    diff = [f"{k} {got.get(k, 'missing')} (driver {v})" for k, v in expected.items() if got.get(k) != v]
    diff += [f"{k} {v} (driver: missing)" for k, v in got.items() if k not in expected]
    return ", ".join(diff)


# -- connecting ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExecutorSpec:
    """Where the points are evaluated: local processes, a running Dask scheduler, or a batch cluster.

    ``executor="local"`` uses ``workers`` processes (None: all cores). ``executor="dask"`` with
    ``scheduler`` (or ``$RLSCAPE_SCHEDULER``) connects to a running scheduler; with ``cluster``
    (``slurm``/``pbs``) it submits ``jobs`` batch jobs of ``cores`` single-threaded worker
    processes and ``memory`` each through dask-jobqueue. ``timeout``: seconds to wait for the
    scheduler and for the first worker.
    """

    executor: str = "local"
    workers: int | None = None
    scheduler: str | None = None
    cluster: str | None = None
    jobs: int = 1
    cores: int | None = None
    memory: str | None = None
    queue: str | None = None
    walltime: str | None = None
    timeout: float = 60.0

    def resolved(self) -> ExecutorSpec:
        """Checked, with ``--scheduler`` taken from ``$RLSCAPE_SCHEDULER`` when not given."""
        ex = (self.executor or "local").strip().lower()
        if ex not in EXECUTORS:
            raise RlscapeError(f"--executor must be one of {', '.join(EXECUTORS)}, not {self.executor!r}")
        scheduler = self.scheduler or os.environ.get(SCHEDULER_ENV) or None
        cluster = self.cluster.strip().lower() if self.cluster else None
        if cluster is not None and cluster not in CLUSTERS:
            raise RlscapeError(f"--cluster must be one of {', '.join(CLUSTERS)}, not {self.cluster!r}")
        if ex == "local":
            if self.cluster or self.scheduler:
                raise RlscapeError("--scheduler/--cluster need --executor dask")
            check_workers(self.workers)
            return ExecutorSpec(workers=self.workers)
        if self.workers is not None:
            raise RlscapeError("--workers counts local processes; with --executor dask the cluster's workers are used — drop --workers")
        if cluster and self.scheduler:
            raise RlscapeError("give --scheduler (a running Dask scheduler) or --cluster (start one), not both")
        if cluster:
            scheduler = None
            if not self.cores or self.cores < 1 or not self.memory or self.jobs < 1:
                raise RlscapeError("--cluster needs --jobs N (≥ 1), --cores C (≥ 1) and --memory M (e.g. 64GB) per job")
        elif not scheduler:
            raise RlscapeError(f"--executor dask needs --scheduler ADDRESS (or ${SCHEDULER_ENV}) or --cluster slurm|pbs")
        if self.timeout <= 0:
            raise RlscapeError(f"--dask-timeout must be positive, not {self.timeout}")
        return ExecutorSpec(executor="dask", scheduler=scheduler, cluster=cluster, jobs=self.jobs, cores=self.cores,
                            memory=self.memory, queue=self.queue, walltime=self.walltime, timeout=self.timeout)

    @contextlib.contextmanager
    def open(self) -> Iterator[int | Any | None]:
        """Yield what analyses take as ``workers``: a process count (or None), or a connected client."""
        spec = self.resolved()
        if spec.executor == "local":
            yield spec.workers
            return
        with connect(spec) as client:
            yield client


@contextlib.contextmanager
def connect(spec: ExecutorSpec) -> Iterator[Any]:
    """A client of ``spec``'s scheduler (or of a new batch cluster), checked: at least one worker
    within ``spec.timeout`` and the driver's versions on every worker. Closed on exit."""
    distributed = _need_distributed()
    with contextlib.ExitStack() as stack:
        if spec.cluster:
            cluster = stack.enter_context(_batch_cluster(spec))
            target: Any = cluster
            where = f"the {spec.cluster} cluster ({spec.jobs} jobs)"
        else:
            target = spec.scheduler
            where = f"the Dask scheduler at {spec.scheduler}"
        try:
            client = distributed.Client(target, timeout=spec.timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise RlscapeError(f"cannot reach {where} ({_first_line(exc)}); start it or fix --scheduler / ${SCHEDULER_ENV}") from None
        stack.callback(client.close)
        try:
            client.wait_for_workers(1, timeout=spec.timeout)
        except (TimeoutError, OSError):
            raise RlscapeError(f"no Dask worker joined {where} within {spec.timeout:g} s; start workers "
                               f"(dask worker ADDRESS) or check the job queue, or raise --dask-timeout") from None
        check_versions(client)
        log.info("Dask: %s, %d worker threads", client.scheduler.address, worker_threads(client))
        yield client


def check_versions(client: Any) -> None:
    """Refuse workers whose :data:`VERSIONED` packages differ from the driver's (results would differ)."""
    expected = runtime_versions()
    for addr, got in client.run(worker_versions).items():
        diff = version_difference(expected, got)
        if diff:
            raise RlscapeError(f"Dask worker {addr} runs {diff}; install the driver's versions on every worker")


@contextlib.contextmanager
def _batch_cluster(spec: ExecutorSpec) -> Iterator[Any]:
    try:
        import dask_jobqueue
    except ImportError:
        raise RlscapeError("--cluster needs dask-jobqueue: pip install 'rlscape[slurm]'") from None
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[str(spec.cluster)]
    # one single-threaded worker process per core: envs step in Python (the GIL), and torch runs
    # single-threaded as in local workers
    kwargs: dict[str, Any] = {"cores": spec.cores, "processes": spec.cores, "memory": spec.memory,
                              "job_script_prologue": ["export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1",
                                                      f"export {NO_PROFILER}"]}
    if spec.queue:
        kwargs["queue"] = spec.queue
    if spec.walltime:
        kwargs["walltime"] = spec.walltime
    try:
        cluster = cls(**kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise RlscapeError(f"cannot start the {spec.cluster} cluster ({_first_line(exc)})") from None
    try:
        cluster.scale(jobs=spec.jobs)
        yield cluster
    finally:
        cluster.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# -- evaluating ------------------------------------------------------------------------------------

def evaluate_points_dask(
    client: Any,
    agent: Agent,
    base: NamedArrays,
    basis: Sequence[NamedArrays],
    coords: np.ndarray | None,
    todo: np.ndarray,
    budget: Budget,
    *,
    seed: int,
    deterministic: bool,
    max_envs: int | None = None,
    generic: bool = False,
    on_chunk: Callable[[np.ndarray, BlockResult], None],
    progress: Callable[[int, int], None] | None = None,
    members: NamedArrays | None = None,
    member_seeds: np.ndarray | None = None,
) -> int:
    """:func:`rlscape.core.execute.evaluate_points` on a Dask cluster: the same arguments, the same
    chunks (for as many workers as the cluster has threads), the same numbers. Returns env steps.
    Explicit ``members`` travel with the agent (once per worker); tasks carry member indices."""
    from rlscape.core.execute import chunk_points

    distributed = _need_distributed()
    import cloudpickle

    max_envs = max_envs or agent.env.default_max_envs()
    per_rect = max(1, max_envs // (budget.episodes or 1)) if budget.episodes else max_envs  # as execute.evaluate_points
    threads = max(1, worker_threads(client))
    chunks = chunk_points(np.asarray(todo, np.int64), per_rect, threads)
    if not chunks:
        return 0
    kwargs = {"seed": seed, "deterministic": deterministic, "max_envs": max_envs, "generic": generic, "member_seeds": member_seeds}
    try:
        payload = cloudpickle.dumps((runtime_versions(), agent, base, basis, members, kwargs))
    except Exception as exc:  # noqa: BLE001 - whatever pickling raises, the message says what to do
        raise RlscapeError(f"the agent cannot be sent to Dask workers ({_first_line(exc)}); use the local executor") from None
    key = hashlib.sha256(payload).hexdigest()
    shared = client.scatter(payload, broadcast=True, hash=False)  # once per worker, not per task
    futures = {client.submit(run_chunk, shared, key, pts if coords is None else coords[pts], budget, pure=False): pts
               for pts in chunks}
    log.info("Dask: %d chunks of ≤ %d points on %d worker threads", len(chunks), len(chunks[0]), threads)
    total_steps = 0
    try:
        for fut in distributed.as_completed(futures, loop=client.loop):  # the client need not be the default one
            try:
                res, _seconds = fut.result()
            except VersionMismatch as exc:
                raise RlscapeError(f"{exc}; install the driver's versions on every worker") from None
            except distributed.scheduler.KilledWorker as exc:
                raise RlscapeError(f"a chunk of points killed several Dask workers in turn ({_first_line(exc)}); "
                                   "finished chunks are saved — check the workers' memory (--max-envs) and rerun") from None
            pts = futures.pop(fut)
            fut.release()
            total_steps += res.env_steps
            on_chunk(pts, res)
            if progress:
                progress(len(pts), res.env_steps)
    finally:
        if futures:  # an error or Ctrl-C: drop what has not finished (finished chunks are already stored)
            client.cancel(list(futures))
        client.cancel([shared])
    return total_steps


def run_chunk(payload: bytes, key: str, coords: np.ndarray, budget: Budget) -> tuple[BlockResult, float]:
    """Worker side: evaluate one chunk with this thread's evaluator (built once per payload)."""
    import torch

    torch.set_num_threads(1)  # the arithmetic of a local worker process: results never depend on the executor
    t0 = time.perf_counter()
    return _evaluator(payload, key).evaluate(coords, budget), time.perf_counter() - t0


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_MALLOC_TUNED = False


def tune_malloc() -> bool:
    """Undo, in this worker process, the small malloc trim threshold a Dask nanny sets.

    Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand memory back to the
    OS); with glibc that also freezes the mmap threshold at 128 kB, so every numpy array of the
    evaluator's env and forward loop above it is a fresh ``mmap`` + page faults: CartPole planes ran
    at ~55 % of local processes. A 128 MiB trim and 32 MiB mmap threshold restore local speed (the
    memory of one evaluator is held, as in a local worker). Linux/glibc only; returns whether set.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not sys.platform.startswith("linux"):
        return _MALLOC_TUNED
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        _MALLOC_TUNED = bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 27)) and bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 25))
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        _MALLOC_TUNED = False
    return _MALLOC_TUNED


def _evaluator(payload: bytes, key: str) -> PopulationEvaluator:
    cached = getattr(_LOCAL, "evaluator", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    import pickle

    tune_malloc()

    versions, agent, base, basis, members, kwargs = pickle.loads(payload)
    diff = version_difference(versions, runtime_versions())
    if diff:
        raise VersionMismatch(f"a Dask worker runs {diff}")
    if cached is not None:
        cached[1].close()  # one evaluator per thread: the previous experiment's envs go
    ev = PopulationEvaluator(agent, base, basis, members=members, **kwargs)
    _LOCAL.evaluator = (key, ev)
    return ev
