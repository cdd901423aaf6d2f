"""``--executor dask`` as a user meets it: the same numbers as a local run, a resumed driver, one-line errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from tests.cli.test_cli import run_cli

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.xdist_group("dask")

PLANE = ["--grid", "9", "--episodes", "4", "--seed", "2", "--no-plot"]


@pytest.fixture(scope="module")
def scheduler():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, silence_logs=40)
    yield cluster.scheduler_address
    cluster.close()


def test_unreachable_scheduler_is_one_line_exit_2_and_touches_nothing(cartpole_ppo, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "plane"
    code, _, err = run_cli(["plane", cartpole_ppo, "--out", out, *PLANE, "--executor", "dask",
                            "--scheduler", f"tcp://127.0.0.1:{port}", "--dask-timeout", "1"], capsys)
    assert code == 2 and err.startswith(f"error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}")
    assert err.count("\n") == 1 and not out.exists()


def test_dask_plane_from_the_environment_equals_local_and_a_killed_driver_resumes(cartpole_ppo, scheduler, tmp_path, capsys):
    local = tmp_path / "local"
    assert run_cli(["plane", cartpole_ppo, "--out", local, *PLANE, "--workers", "2"], capsys)[0] == 0
    # the driver (the rlscape process) killed mid-run: the chunks it stored stay, a rerun resumes
    out = tmp_path / "dask"
    env = dict(os.environ, RLSCAPE_SCHEDULER=scheduler)
    proc = subprocess.Popen([sys.executable, "-m", "rlscape.cli", "plane", str(cartpole_ppo), "--out", str(out), *PLANE,
                             "--executor", "dask"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not any((out / "chunks").glob("*.npz")):
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = len(list((out / "chunks").glob("*.npz")))
    assert 1 <= stored < 14  # 81 points in 14 chunks: killed mid-run
    os.environ["RLSCAPE_SCHEDULER"] = scheduler  # the rerun takes the scheduler from the environment too
    try:
        code, _, err = run_cli(["plane", cartpole_ppo, "--out", out, *PLANE, "--executor", "dask"], capsys)
    finally:
        del os.environ["RLSCAPE_SCHEDULER"]
    assert code == 0, err
    a, b = xr.open_zarr(local / "results.zarr").load(), xr.open_zarr(out / "results.zarr").load()
    xr.testing.assert_identical(a, b)
    assert np.isfinite(b.returns.values).all()
