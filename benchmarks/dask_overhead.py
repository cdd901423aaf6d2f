"""Dask executor overhead: the same CartPole-v1 and Hopper-v5 planes on local worker processes and
on a Dask LocalCluster with as many single-threaded worker processes, on the same cores.

Throughput = env steps / wall time of the evaluation (``run_surface``, the run directory written
as usual), measured local, Dask, Dask, local so that a drift in the machine's load weighs on
both alike. The cluster is started and its workers import torch/SB3/MuJoCo before timing (a Dask
cluster is long-lived); the payload's scatter and the evaluators' builds are timed, as local
workers' fork and builds are. The Datasets must be identical (methods.md §11).

    .venv/bin/python benchmarks/dask_overhead.py [--cartpole-grid 21 --cartpole-episodes 32]
                                                 [--hopper-grid 7 --hopper-steps 1000]

Last line: Dask / local throughput (the smaller of the two envs), target ≥ 90 %.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import agent, cores, result  # noqa: E402


def _timed(spec, out: Path, workers) -> tuple[float, int, xr.Dataset]:  # noqa: ANN001
    import json

    from rlscape.analyses.surface import run_surface

    t0 = time.perf_counter()
    ds = run_surface(spec, out, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    return wall, int(json.loads((out / "run.json").read_text())["env_steps_this_session"]), ds


def _warm() -> None:
    import gymnasium  # noqa: F401
    import mujoco  # noqa: F401
    import stable_baselines3  # noqa: F401

    import rlscape.core.dask_executor  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cartpole-grid", type=int, default=21)
    parser.add_argument("--cartpole-episodes", type=int, default=32)
    parser.add_argument("--hopper-grid", type=int, default=7)
    parser.add_argument("--hopper-steps", type=int, default=1000)
    parser.add_argument("--repeat", action=argparse.BooleanOptionalAction, default=True,
                        help="local, Dask, Dask, local (default) rather than local, Dask")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import dask
    import distributed

    dask.config.set({"distributed.worker.profile.enabled": False})  # as rlscape's --cluster workers (docs/scale-out.md)

    from rlscape.core.spec import EvalSpec, SurfaceSpec, validated

    n = min(2, cores())
    cases = [("CartPole-v1", args.cartpole_grid, EvalSpec.from_budget(args.cartpole_episodes, None, 0, False)),
             ("Hopper-v5", args.hopper_grid, EvalSpec.from_budget(None, args.hopper_steps, 0, False))]
    ratios = []
    with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client, tempfile.TemporaryDirectory() as tmp:
        client.run(_warm)  # a cluster is long-lived: its workers have imported torch, SB3 and MuJoCo before
        for env_id, g, ev in cases:
            spec = validated(SurfaceSpec, kind="plane", checkpoint=str(agent(env_id)), grid=(g, g),
                             ranges=((-1.0, 1.0),) * 2, directions=("random", "random"), evaluation=ev)
            # A B B A: a drift in the machine's load (other users) weighs on both executors alike
            lw, ls, local = _timed(spec, Path(tmp) / f"{env_id}-local-1", n)
            dw, ds_, remote = _timed(spec, Path(tmp) / f"{env_id}-dask-1", client)
            if args.repeat:
                w2, s2, _ = _timed(spec, Path(tmp) / f"{env_id}-dask-2", client)
                w1, s1, _ = _timed(spec, Path(tmp) / f"{env_id}-local-2", n)
                lw, ls, dw, ds_ = lw + w1, ls + s1, dw + w2, ds_ + s2
            xr.testing.assert_identical(local, remote)
            ratio = (ds_ / dw) / (ls / lw)
            ratios.append(ratio)
            print(f"{env_id} plane {g}×{g}, {ev.episodes or 0} episodes / {ev.steps or 0} steps per point, {n} cores: "
                  f"local {ls / lw:,.0f} env-steps/s ({lw:.1f} s), Dask {ds_ / dw:,.0f} env-steps/s ({dw:.1f} s), "
                  f"ratio {100 * ratio:.0f} %, Datasets identical")
    result("Dask vs local throughput", f"{100 * min(ratios):.0f} % (CartPole {100 * ratios[0]:.0f} %, Hopper {100 * ratios[1]:.0f} %)",
           "≥ 90 %")


if __name__ == "__main__":
    main()
