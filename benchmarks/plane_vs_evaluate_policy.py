"""Plane throughput: rlscape's batched evaluator vs SB3's evaluate_policy, same points, same session.

The baseline is deliberately generous to SB3: one process, the model loaded once, each point's
parameters written into a *copy* of the policy, then ``evaluate_policy`` (no per-point process
start-up, which the reference code also paid). It is timed on a sample of points and
extrapolated to the whole grid.

    .venv/bin/python benchmarks/plane_vs_evaluate_policy.py [CHECKPOINT] [--grid 11] [--episodes 20]

CHECKPOINT defaults to the quickstart agent (trained first if missing). Last line: the ratio.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="runs/quickstart/agent")
    parser.add_argument("--grid", type=int, default=11)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--sample", type=int, default=4, help="points timed for the baseline")
    args = parser.parse_args()

    import rlscape
    from rlscape.analyses.quickstart import train_quickstart_agent
    from rlscape.core.directions import random_direction

    ckpt = Path(args.checkpoint)
    if not ckpt.exists():
        train_quickstart_agent(ckpt)
    agent = rlscape.load_checkpoint(ckpt)

    t0 = time.perf_counter()
    ds = rlscape.plane(agent, grid=args.grid, episodes=args.episodes, progress=False)
    t_ours = time.perf_counter() - t0
    steps = float(ds.lengths.sum())
    n_points = args.grid**2

    # baseline: SB3 evaluate_policy on the same kind of points
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    from rlscape.core.policy import _algo_class, resolve_model_zip

    torch.set_num_threads(1)
    model = _algo_class(agent.algo).load(resolve_model_zip(ckpt), device="cpu")
    theta = agent.parameters("actor")
    d1, d2 = (random_direction(theta, 0, i).values for i in range(2))
    rng = np.random.default_rng(0)
    a = np.linspace(-1, 1, args.grid)
    env = make_vec_env(agent.env.env_id, n_envs=1, seed=0)
    t0 = time.perf_counter()
    base_steps = 0
    for _ in range(args.sample):
        x, y = rng.choice(a, 2)
        policy = copy.deepcopy(model.policy)
        with torch.no_grad():
            table = dict(policy.named_parameters())
            for n in theta:
                table[n].copy_(torch.from_numpy(theta[n] + x * d1[n] + y * d2[n]))
        model.policy = policy
        _, lengths = evaluate_policy(model, env, n_eval_episodes=args.episodes, return_episode_rewards=True)
        base_steps += sum(lengths)
    t_base_point = (time.perf_counter() - t0) / args.sample

    print(f"rlscape: {n_points} points × {args.episodes} episodes, {steps:,.0f} env steps in {t_ours:.1f} s "
          f"({steps / t_ours:,.0f} steps/s, all cores)")
    print(f"evaluate_policy: {t_base_point:.2f} s per point ({base_steps / args.sample / t_base_point:,.0f} steps/s), "
          f"{t_base_point * n_points:.0f} s extrapolated to the grid")
    print(f"ratio (evaluate_policy time / rlscape time, same grid): {t_base_point * n_points / t_ours:.1f}x")


if __name__ == "__main__":
    main()
