"""The run lifecycle: spec identity, lock, status, over-checkpoints driver (no RL needed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from rlscape.core.errors import RlscapeError
from rlscape.core.lifecycle import SCHEMA_VERSION, open_run, over_checkpoints


def _ds(value: float) -> xr.Dataset:
    return xr.Dataset({"x": ("i", np.array([value, value + 1]))}, attrs={"kind": "toy"})


def test_status_provenance_and_identity(tmp_path):
    out = tmp_path / "run"
    with open_run(out, {"kind": "toy", "a": 1}) as run:
        info = json.loads((out / "run.json").read_text())
        assert info["status"] == "running" and "torch" in info["versions"] and info["sessions"] == 1
        run.finish(_ds(1.0), answer=42)
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["answer"] == 42 and info["wall_time_s"] >= 0
    assert xr.open_zarr(out / "results.zarr").attrs["schema_version"] == SCHEMA_VERSION
    with pytest.raises(RlscapeError, match="already holds this finished run"):
        with open_run(out, {"kind": "toy", "a": 1}):
            pass
    with pytest.raises(RlscapeError, match="differs in: a"):
        with open_run(out, {"kind": "toy", "a": 2}):
            pass
    with open_run(out, {"kind": "toy", "a": 2}, overwrite=True) as run:
        assert not (out / "results.zarr").exists()  # overwrite removed what the old run wrote
        run.finish(_ds(2.0))


def test_failure_and_interruption_are_recorded_and_resumable(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ZeroDivisionError):
        with open_run(out, {"kind": "toy"}) as run:
            run.write_dataset(_ds(0.0))  # a partial result
            1 / 0  # noqa: B018
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "failed" and "ZeroDivisionError" in info["error"]
    assert (out / "results.zarr").exists()  # nothing computed is lost
    with pytest.raises(KeyboardInterrupt):
        with open_run(out, {"kind": "toy"}):
            raise KeyboardInterrupt
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    with open_run(out, {"kind": "toy"}) as run:  # the same spec resumes
        run.finish(_ds(1.0))
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["sessions"] == 3 and info["error"] is None


def test_a_body_that_forgets_to_finish_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="without Run.finish"):
        with open_run(tmp_path / "run", {"kind": "toy"}):
            pass
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"


_HOLDER = textwrap.dedent("""
    import sys, time
    from rlscape.core.lifecycle import open_run
    with open_run(sys.argv[1], {"kind": "toy"}) as run:
        print("locked", flush=True)
        time.sleep(60)
""")


def _start_holder(out: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, ppo_run):
    out = tmp_path / "run"
    holder = _start_holder(out)
    try:
        t0 = time.monotonic()
        with pytest.raises(RlscapeError, match=f"another process \\(pid {holder.pid} on "):
            with open_run(out, {"kind": "toy"}):
                pass
        assert time.monotonic() - t0 < 5  # refused at once, not after waiting
        # the CLI says it in one line with exit 2
        cli = subprocess.run([sys.executable, "-m", "rlscape.cli", "curve", str(ppo_run), "--out", str(out), "--episodes", "1"],
                             capture_output=True, text=True)
        assert cli.returncode == 2 and "Traceback" not in cli.stderr
        assert f"another process (pid {holder.pid}" in cli.stderr and len(cli.stderr.strip().splitlines()) == 1
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert json.loads((out / "run.json").read_text())["status"] == "running"  # killed mid-run
    with open_run(out, {"kind": "toy"}) as run:  # the kernel released the dead process's lock: taken over
        run.finish(_ds(3.0))
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_over_checkpoints_resumes_and_extends(tmp_path):
    calls: list[int] = []
    crash_at = [10]

    def compute(step, folder, run):
        calls.append(step)
        if step in crash_at:
            raise KeyboardInterrupt
        return _ds(float(step)).expand_dims(step=[step])

    def combine(done):
        return xr.concat([d for _, d in done], dim="step")

    selected = [(0, tmp_path), (10, tmp_path), (20, tmp_path)]
    kw = {"sub_spec": lambda step, folder: {"kind": "toy-step", "step": step}, "compute": compute, "combine": combine,
          "progress": False}
    out = tmp_path / "over"
    with pytest.raises(KeyboardInterrupt):
        over_checkpoints(out, {"kind": "toy-over"}, selected, **kw)
    assert list(xr.open_zarr(out / "results.zarr").step.values) == [0]  # what finished is readable
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    calls.clear()
    crash_at.clear()
    ds = over_checkpoints(out, {"kind": "toy-over"}, selected, **kw)
    assert calls == [10, 20]  # the finished sub-run is not recomputed
    assert list(ds.step.values) == [0, 10, 20]
    calls.clear()
    ds = over_checkpoints(out, {"kind": "toy-over"}, selected + [(30, tmp_path)], **kw)  # training went on
    assert calls == [30] and list(ds.step.values) == [0, 10, 20, 30]
    with pytest.raises(RlscapeError, match="already holds this finished run"):
        over_checkpoints(out, {"kind": "toy-over"}, selected + [(30, tmp_path)], **kw)


def test_a_run_partly_computed_with_another_arithmetic_is_not_resumed(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with open_run(out, {"kind": "toy"}) as run:
            run.write_dataset(_ds(0.0))  # a partial result
            raise KeyboardInterrupt
    info = json.loads((out / "run.json").read_text())
    del info["arithmetic_version"]  # as written by rlscape before the version was recorded
    (out / "run.json").write_text(json.dumps(info))
    with pytest.raises(RlscapeError, match="arithmetic differs .*--overwrite"):
        with open_run(out, {"kind": "toy"}):
            pass
    with open_run(out, {"kind": "toy"}, overwrite=True) as run:
        run.finish(_ds(1.0))
