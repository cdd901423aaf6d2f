"""The Dask executor on a real localhost cluster (a scheduler and two worker processes).

Numbers must equal a local run's bit for bit (methods.md §3, §11), also when a worker is killed
mid-run, and workers with other versions are refused.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import xarray as xr

distributed = pytest.importorskip("distributed")

from rlscape.analyses.surface import run_surface  # noqa: E402
from rlscape.core import dask_executor  # noqa: E402
from rlscape.core.errors import RlscapeError  # noqa: E402
from rlscape.core.spec import EvalSpec, SurfaceSpec, validated  # noqa: E402
from rlscape.core.store import RunDir  # noqa: E402

pytestmark = pytest.mark.xdist_group("dask")  # one cluster at a time on a small machine


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, silence_logs=40)
    with distributed.Client(cluster, set_as_default=False) as c:
        yield c
    cluster.close()


def _spec(checkpoint, grid: int, episodes: int) -> SurfaceSpec:
    return validated(SurfaceSpec, kind="plane", checkpoint=str(checkpoint), grid=(grid, grid), ranges=((-1.0, 1.0),) * 2,
                     directions=("random", "random"), evaluation=EvalSpec.from_budget(episodes, None, 3, False))


def _chunk_points(out) -> np.ndarray:
    return np.sort(np.concatenate([c.points for c in RunDir(out).read_chunks()]))


def test_dask_plane_equals_the_local_plane_bit_for_bit(cartpole_ppo, client, tmp_path):
    spec = _spec(cartpole_ppo, 5, 3)
    local = run_surface(spec, tmp_path / "local", workers=1, progress=False)
    remote = run_surface(spec, tmp_path / "dask", workers=client, progress=False)
    xr.testing.assert_identical(local, remote)  # every value, coordinate and attribute
    assert np.isfinite(remote.returns.values).all()
    np.testing.assert_array_equal(_chunk_points(tmp_path / "dask"), np.arange(25))  # each point stored once
    assert RunDir(tmp_path / "dask").read_run()["workers"].startswith("dask tcp://127.0.0.1:")


def test_workers_undo_the_nannys_small_malloc_trim_threshold(cartpole_ppo, client, tmp_path):
    """Dask nannies set MALLOC_TRIM_THRESHOLD_=65536, which made the evaluator's numpy arrays fresh mmaps
    (CartPole planes at ~55 % of local speed); a worker that evaluated a chunk has reset it."""
    from rlscape.core import dask_executor

    assert set(client.run(lambda: __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == {"65536"}
    run_surface(_spec(cartpole_ppo, grid=3, episodes=2), tmp_path / "p", workers=client, progress=False)
    assert all(client.run(lambda: dask_executor._MALLOC_TUNED).values())


def test_a_population_on_dask_equals_the_local_one(cartpole_ppo, client):
    """Explicit members travel with the agent once per worker; tasks carry member indices."""
    from rlscape.core.policy import load_checkpoint
    from rlscape.core.population import evaluate_population

    agent = load_checkpoint(cartpole_ppo)
    theta = agent.parameters("actor")
    name = next(n for n in theta if theta[n].ndim == 2)
    thetas = {name: np.stack([theta[name] * s for s in np.linspace(0.0, 1.5, 7)])}
    local = evaluate_population(agent, thetas, episodes=3, seed=4, workers=1)
    remote = evaluate_population(agent, thetas, episodes=3, seed=4, workers=client)
    xr.testing.assert_identical(local, remote)
    # an adaptive budget: the same rounds on the cluster, the same allocation and numbers
    kw = {"episodes": "auto", "target_sem": 10.0, "min_episodes": 4, "max_episodes": 16, "seed": 4}
    local = evaluate_population(agent, thetas, workers=1, **kw)
    remote = evaluate_population(agent, thetas, workers=client, **kw)
    xr.testing.assert_identical(local, remote)
    assert len(set(local.n_episodes.values.tolist())) > 1
    # each member on its own seed (PURD's --init random): the seeds travel with the task's evaluator
    own = {"episodes": 3, "seed": 4, "deterministic": False, "member_seeds": [9, 8, 7, 6, 5, 4, 3]}
    xr.testing.assert_identical(evaluate_population(agent, thetas, workers=1, **own),
                                evaluate_population(agent, thetas, workers=client, **own))


def test_a_worker_killed_mid_run_loses_nothing(cartpole_ppo, client, tmp_path):
    """SIGKILL a worker that holds chunks, as soon as the first chunk is stored: its chunks run
    again elsewhere and the finished Dataset equals the local one."""
    spec = _spec(cartpole_ppo, 9, 6)  # 81 points in 14 chunks of ≤ 6 (2 worker threads)
    out = tmp_path / "dask"
    killed: dict[str, object] = {}

    def kill_a_busy_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            if (out / "chunks").is_dir() and any((out / "chunks").glob("*.npz")):
                busy = [w for w, keys in client.processing().items() if keys]
                if busy:
                    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    killed.update(worker=busy[0], pid=pid, holding=len(client.processing()[busy[0]]),
                                  stored=len(list((out / "chunks").glob("*.npz"))))
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    remote = run_surface(spec, out, workers=client, progress=False)
    killer.join()
    assert killed, "the worker was not killed"
    assert killed["holding"] >= 1 and killed["stored"] < 14  # it held a chunk, mid-run
    with pytest.raises(ProcessLookupError):
        os.kill(int(killed["pid"]), 0)  # that process is gone
    local = run_surface(spec, tmp_path / "local", workers=1, progress=False)
    xr.testing.assert_identical(local, remote)
    np.testing.assert_array_equal(_chunk_points(out), np.arange(81))  # nothing lost, nothing twice


def test_a_worker_with_other_versions_is_refused(cartpole_ppo, client, tmp_path, monkeypatch):
    real = dask_executor.runtime_versions()
    monkeypatch.setattr(dask_executor, "runtime_versions", lambda: dict(real, torch="0.0-driver"))
    with pytest.raises(RlscapeError, match=r"torch .* \(driver 0\.0-driver\)"):
        dask_executor.check_versions(client)  # at connection
    with pytest.raises(RlscapeError, match=r"torch .* \(driver 0\.0-driver\)"):  # a worker that joins later
        run_surface(_spec(cartpole_ppo, 3, 2), tmp_path / "run", workers=client, progress=False)
    assert RunDir(tmp_path / "run").read_run()["status"] == "failed"


def test_unreachable_scheduler_and_no_workers_are_one_line_errors(tmp_path):
    import socket

    with socket.socket() as s:  # a localhost port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = dask_executor.ExecutorSpec(executor="dask", scheduler=f"tcp://127.0.0.1:{port}", timeout=1)
    with pytest.raises(RlscapeError, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}") as exc:
        with spec.open():
            pass
    assert "\n" not in str(exc.value)
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1",
                                  dashboard_address=None) as empty:
        spec = dask_executor.ExecutorSpec(executor="dask", scheduler=empty.scheduler_address, timeout=0.5)
        with pytest.raises(RlscapeError, match="no Dask worker joined"):
            with spec.open():
                pass


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"executor": "spark"}, "--executor must be one of local, dask"),
    ({"executor": "local", "scheduler": "tcp://127.0.0.1:1"}, "need --executor dask"),
    ({"executor": "dask"}, "needs --scheduler ADDRESS"),
    ({"executor": "dask", "scheduler": "tcp://127.0.0.1:1", "workers": 2}, "drop --workers"),
    ({"executor": "dask", "cluster": "slurm", "jobs": 2}, "--cluster needs --jobs N"),
    ({"executor": "dask", "cluster": "lsf", "cores": 2, "memory": "4GB"}, "--cluster must be one of slurm, pbs"),
    ({"executor": "local", "workers": 0}, "--workers must be at least 1"),
])
def test_bad_executor_options_are_refused(kwargs, message, monkeypatch):
    monkeypatch.delenv(dask_executor.SCHEDULER_ENV, raising=False)
    with pytest.raises(RlscapeError, match=message):
        dask_executor.ExecutorSpec(**kwargs).resolved()


def test_the_scheduler_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(dask_executor.SCHEDULER_ENV, "tcp://127.0.0.1:8786")
    assert dask_executor.ExecutorSpec(executor="dask").resolved().scheduler == "tcp://127.0.0.1:8786"
    assert dask_executor.ExecutorSpec().resolved().scheduler is None  # local stays local
