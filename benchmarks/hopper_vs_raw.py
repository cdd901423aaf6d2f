"""Benchmark 3: Hopper-v5 — rlscape's env-steps/s on a plane vs raw stepping of the same envs.

Raw: one process per core, each stepping the same evaluation envs (rlscape's own env pipeline)
with random actions one after the other, resetting finished episodes — the simulator's cost and
nothing else (env creation is not timed). rlscape: ``rlscape plane`` with the same number of
worker processes; its env-steps/s over the evaluation (``run.json``), policy forward passes,
action sampling, resets and bookkeeping included.

    .venv/bin/python benchmarks/hopper_vs_raw.py [--grid 11] [--steps 2000] [--seconds 10]

Last line: rlscape / raw, target ≥ 70 %.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import agent, cores, result  # noqa: E402


def _raw_worker(args: tuple[str, int, float, int]) -> int:
    ckpt, n_envs, seconds, seed = args
    import torch

    from rlscape import load_checkpoint

    torch.set_num_threads(1)
    envs = [load_checkpoint(ckpt).env.make() for _ in range(n_envs)]
    rng = np.random.default_rng(seed)
    for i, env in enumerate(envs):
        env.reset(seed=seed * 1000 + i)
        env.action_space.seed(seed * 1000 + i)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for env in envs:
            a = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
            _, _, term, trunc, _ = env.step(a)
            if term or trunc:
                env.reset()
            steps += 1
    return int(steps / (time.perf_counter() - t0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=11)
    parser.add_argument("--steps", type=int, default=2000, help="env steps per point")
    parser.add_argument("--seconds", type=float, default=10.0, help="raw stepping time")
    args = parser.parse_args()
    ckpt = agent("Hopper-v5")
    n = cores()

    with mp.get_context("fork").Pool(n) as pool:
        raw = sum(pool.map(_raw_worker, [(str(ckpt), 64, args.seconds, s) for s in range(n)]))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plane"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rlscape.cli", "plane", str(ckpt), "--out", str(out), "--grid", str(args.grid),
                        "--steps", str(args.steps), "--workers", str(n), "--no-plot"], check=True, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        run = json.loads((out / "run.json").read_text())
    ours = run["env_steps_per_s"]
    print(f"Hopper-v5, {n} processes: raw random-action stepping {raw:,} env-steps/s")
    print(f"rlscape plane {args.grid}×{args.grid}, ≥{args.steps} steps per point: {run['env_steps_this_session']:,} env steps, "
          f"{ours:,.0f} env-steps/s over the evaluation ({run['wall_time_s']:.1f} s; {wall:.1f} s with start-up)")
    result("Hopper-v5 plane vs raw stepping", f"{100 * ours / raw:.0f} %", "≥ 70 %")


if __name__ == "__main__":
    main()
