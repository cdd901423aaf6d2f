"""Speed round two, benchmark 1: a CartPole plane of a trained agent as a whole command, vs raw native stepping.

rlscape: ``rlscape plane`` (31×31 × 50 episodes, start-up, writing and all), env-steps per second
of wall time. Raw: the same native batched CartPole (``max_envs`` = 512 envs per process, one
process per core, as the plane's workers hold them) stepped without a network: a one-line
balancing rule (push toward the falling side) keeps nearly every episode to the 500-step limit,
so the envs are stepped at full width, like a trained agent's — the simulator's own speed. The ratio says how close the
whole command comes to the simulator's own speed; the rest is the policy's forward pass, action
sampling and bookkeeping.

    .venv/bin/python benchmarks/forward_limit.py [--grid 31] [--episodes 50] [--seconds 8]

Last line: the whole command's env-steps/s (target ≥ 1M on 2 cores) and its ratio to raw stepping.
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


def _raw_worker(args: tuple[str, int, float, int]) -> float:
    """Env-steps/s of one process stepping ``n_envs`` native envs without a policy network for ``seconds``."""
    ckpt, n_envs, seconds, _seed = args
    from rlscape import load_checkpoint

    venv = load_checkpoint(ckpt).env.make_vec()
    steps, episode, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        obs = venv.reset(list(range(episode, episode + n_envs)))
        episode += n_envs
        live = np.ones(n_envs, bool)
        while live.any():
            idx = np.flatnonzero(live)
            action = (obs[idx, 2] + obs[idx, 3] > 0).astype(np.int64)  # a one-line balancing rule: ~500-step episodes
            o, _, term, trunc = venv.step(idx, action)
            obs[idx] = o
            live[idx[term | trunc]] = False
            steps += idx.size
    return steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=31)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0, help="raw stepping time per process")
    args = parser.parse_args()
    ckpt = agent("CartPole-v1")
    n = cores()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plane"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rlscape.cli", "plane", str(ckpt), "--out", str(out), "--grid", str(args.grid),
                        "--episodes", str(args.episodes), "--workers", str(n), "--no-plot"], check=True, stderr=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        run = json.loads((out / "run.json").read_text())
    steps = run["env_steps_this_session"]

    with mp.get_context("fork").Pool(n) as pool:  # the same number of processes and envs per process
        raw = sum(pool.map(_raw_worker, [(str(ckpt), 512, args.seconds, s) for s in range(n)]))

    whole = steps / wall
    print(f"CartPole-v1 (trained PPO), {args.grid}×{args.grid} plane × {args.episodes} episodes, {n} worker processes")
    print(f"rlscape plane, whole command: {wall:.1f} s for {steps:,} env steps = {whole:,.0f} env-steps/s "
          f"(evaluation alone: {run['env_steps_per_s']:,.0f}/s)")
    print(f"raw native stepping, 512 envs × {n} processes, balancing-rule actions: {raw:,.0f} env-steps/s")
    result("CartPole plane, whole command", f"{whole / 1e6:.2f}M env-steps/s, {100 * whole / raw:.0f} % of raw native stepping",
           "≥ 1M env-steps/s")


if __name__ == "__main__":
    main()
