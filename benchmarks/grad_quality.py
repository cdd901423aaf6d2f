"""Benchmark: collecting the "true" gradient's state-action pairs vs raw stepping of the same envs.

For each env (a cached PPO agent, see ``_common.agent``): raw = the same batched envs rlscape
collects with (``agent.env.make_vec()``, the same number side by side, the same lock-step rule:
reset a batch, step the live episodes to the end, again) with uniformly random actions — the
simulator's cost and nothing else; rlscape = :func:`rlscape.analyses.quality.collect_at_least`
(policy forward per step, action sampling, recording obs/actions/rewards) for ``--pairs`` pairs,
then the gradient of all of them (:func:`rlscape.analyses.quality.chunk_gradients`, critic baseline).
One process, one core each (the collection is single-process). The machine's load average is
printed (it is shared).

    .venv/bin/python benchmarks/grad_quality.py [--pairs 1000000] [--envs CartPole-v1,Hopper-v5]

Last line: collection env-steps/s / raw env-steps/s (the worst env), target ≥ 50 %.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import agent, result  # noqa: E402


def raw_rate(ag, steps: int, width: int) -> float:
    import gymnasium as gym

    venv = ag.env.make_vec()
    space = ag.action_space
    rng = np.random.default_rng(0)
    done, t0, seed = 0, time.perf_counter(), 0
    try:
        while done < steps:
            venv.reset(list(range(seed, seed + width)))
            seed += width
            live = np.ones(width, bool)
            while live.any():
                idx = np.flatnonzero(live)
                if isinstance(space, gym.spaces.Discrete):
                    a = rng.integers(0, space.n, idx.size)
                else:
                    a = rng.uniform(space.low, space.high, (idx.size, *space.shape)).astype(space.dtype)
                _, _, term, trunc = venv.step(idx, a)
                live[idx[term | trunc]] = False
                done += idx.size
    finally:
        venv.close()
    return done / (time.perf_counter() - t0)


def gym_rate(ag, seconds: float = 10.0) -> float:
    """Random-action stepping of single Gymnasium envs (``agent.env.make()``), one after the other, for reference."""
    env = ag.env.make()
    env.reset(seed=0)
    env.action_space.seed(0)
    steps, t0 = 0, time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                env.reset()
            steps += 1
    finally:
        env.close()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--envs", default="CartPole-v1,Hopper-v5")
    args = parser.parse_args()
    import torch

    from rlscape.analyses.quality import advantages, chunk_gradients, collect_at_least
    from rlscape.core.policy import load_checkpoint

    torch.set_num_threads(1)
    ratios = []
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for env_id in args.envs.split(","):
        ag = load_checkpoint(agent(env_id))
        width = ag.env.default_max_envs()
        t0 = time.perf_counter()
        traj = collect_at_least(ag, args.pairs, 0, "evaluation")
        t_collect = time.perf_counter() - t0
        t0 = time.perf_counter()
        w = advantages(ag, traj, "reinforce", "critic", ag.gamma, 0.95, None)
        chunk_gradients(ag, traj, w, [(0, traj.n_episodes)])
        t_grad = time.perf_counter() - t0
        raw = raw_rate(ag, traj.n_steps, width)
        ours = traj.n_steps / t_collect
        ratios.append(ours / raw)
        print(f"{env_id}: {traj.n_steps:,} pairs in {traj.n_episodes:,} episodes; collection {t_collect:.1f} s "
              f"({ours:,.0f} steps/s), gradient {t_grad:.1f} s ({100 * t_grad / (t_collect + t_grad):.0f} % of the total); "
              f"raw stepping of the same {width} batched envs {raw:,.0f} steps/s; ratio {100 * ours / raw:.0f} %")
        print(f"  (for reference: one Gymnasium env stepped alone, {gym_rate(ag):,.0f} steps/s)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    result("true-gradient collection vs raw stepping (worst env)", f"{100 * min(ratios):.0f} %", "≥ 50 %")


if __name__ == "__main__":
    main()
