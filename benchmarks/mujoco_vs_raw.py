"""MuJoCo (Hopper-v5, HalfCheetah-v5): rlscape's env-steps/s on a plane vs raw stepping of the same envs.

Raw: one process per core, each stepping the same evaluation envs (rlscape's own env pipeline)
with random actions one after the other, resetting finished episodes — the simulator's cost and
nothing else (env creation is not timed). rlscape: ``rlscape plane`` with the same number of
worker processes; its env-steps/s over the evaluation (``run.json``), policy forward passes,
action sampling, resets and bookkeeping included.

    .venv/bin/python benchmarks/mujoco_vs_raw.py [--env HalfCheetah-v5] [--grid 11] [--steps 2000] [--seconds 10]

With ``--project``: from the measured speed, the projected wall time of the seed's GIF workload
(100 checkpoints × a 31×31 plane × 200 episodes of 1,000 steps = 1.9·10¹⁰ env steps) on this
machine and on a 32-core node, with a fixed budget and with an adaptive one that uses the given
fraction of its episodes (``--adaptive-fraction``, measured by ``adaptive_budgets.py``).

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
    parser.add_argument("--env", default="Hopper-v5", choices=["Hopper-v5", "HalfCheetah-v5"])
    parser.add_argument("--grid", type=int, default=11)
    parser.add_argument("--steps", type=int, default=2000, help="env steps per point")
    parser.add_argument("--seconds", type=float, default=10.0, help="raw stepping time")
    parser.add_argument("--project", action="store_true", help="print the GIF workload's projected wall times")
    parser.add_argument("--adaptive-fraction", type=float, default=0.53,
                        help="episodes an adaptive budget uses, as a fraction of the fixed one (adaptive_budgets.py: 0.53 on CartPole, 1.0 on Pendulum)")
    args = parser.parse_args()
    ckpt = agent(args.env)
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
    print(f"{args.env}, {n} processes: raw random-action stepping {raw:,} env-steps/s")
    print(f"rlscape plane {args.grid}×{args.grid}, ≥{args.steps} steps per point: {run['env_steps_this_session']:,} env steps, "
          f"{ours:,.0f} env-steps/s over the evaluation ({run['wall_time_s']:.1f} s; {wall:.1f} s with start-up)")
    if args.project:
        project(ours / n, args.adaptive_fraction)
    result(f"{args.env} plane vs raw stepping", f"{100 * ours / raw:.0f} %", "≥ 70 %")


def project(per_core: float, adaptive_fraction: float) -> None:
    """The seed's GIF workload at ``per_core`` env-steps/s per core (MuJoCo scales with cores: one env
    process per core, no shared state), fixed and adaptive."""
    steps = 100 * 31 * 31 * 200 * 1000
    print(f"GIF workload (100 checkpoints × 31×31 × 200 episodes × 1,000 steps = {steps:.2e} env steps) "
          f"at {per_core:,.0f} env-steps/s per core:")
    for cores_, where in ((2, "this 2-core machine"), (32, "a 32-core node")):
        fixed = steps / (per_core * cores_)
        print(f"  {where}: fixed budget {_span(fixed)}; adaptive ({100 * adaptive_fraction:.0f} % of the episodes) "
              f"{_span(fixed * adaptive_fraction)}")


def _span(seconds: float) -> str:
    return f"{seconds / 86400:.1f} days" if seconds > 2 * 86400 else f"{seconds / 3600:.1f} h"


if __name__ == "__main__":
    main()
