"""Env steps per second: Gymnasium envs stepped one by one vs one NativeVecEnv of n envs.

Both run the evaluator's pattern: reset a rectangle of envs with their seeds, then step the live
ones with random actions until every episode has ended (resets are included in the time). The
Gymnasium side steps ``gym.make`` envs (with their wrappers) in a Python loop, as
``PopulationEvaluator._rectangle`` does today.

    .venv/bin/python benchmarks/native_envs.py [--envs 1024] [--seconds 2]

Last line: the geometric-mean speed-up over the env ids.
"""

from __future__ import annotations

import argparse
import math
import time

import gymnasium as gym
import numpy as np

from rlscape.core.native import make_native

IDS = ["CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0"]


def _actions(rng: np.random.Generator, space: gym.spaces.Space, m: int) -> np.ndarray:
    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(0, space.n, m)
    return rng.uniform(space.low, space.high, (m, *space.shape)).astype(np.float32)


def gym_rate(env_id: str, n: int, seconds: float) -> float:
    envs = [gym.make(env_id) for _ in range(n)]
    rng = np.random.default_rng(0)
    steps, seed, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for e in envs:
            e.reset(seed=seed)
            seed += 1
        live = np.ones(n, bool)
        while live.any() and time.perf_counter() - t0 < seconds:
            idx = np.flatnonzero(live)
            actions = _actions(rng, envs[0].action_space, idx.size)
            for j, i in enumerate(idx):
                _, _, term, trunc, _ = envs[i].step(actions[j])
                if term or trunc:
                    live[i] = False
            steps += idx.size
    return steps / (time.perf_counter() - t0)


def native_rate(env_id: str, n: int, seconds: float) -> tuple[float, float]:
    """(steps/s including resets, steps/s of step calls alone)."""
    env = make_native(env_id)
    assert env is not None
    rng = np.random.default_rng(0)
    steps, seed, t_step, t0 = 0, 0, 0.0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.reset(list(range(seed, seed + n)))
        seed += n
        live = np.ones(n, bool)
        while live.any():
            idx = np.flatnonzero(live)
            actions = _actions(rng, env.action_space, idx.size)
            ts = time.perf_counter()
            _, _, term, trunc = env.step(idx, actions)
            t_step += time.perf_counter() - ts
            live[idx] = ~(term | trunc)
            steps += idx.size
    return steps / (time.perf_counter() - t0), steps / t_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=1024, help="envs in the NativeVecEnv")
    parser.add_argument("--gym-envs", type=int, default=64, help="Gymnasium envs in the loop")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per env id and side")
    args = parser.parse_args()
    ratios = []
    print(f"{'env id':26s} {'gymnasium steps/s':>18s} {'native steps/s':>15s} {'(step only)':>12s} {'ratio':>7s}")
    for env_id in IDS:
        g = gym_rate(env_id, args.gym_envs, args.seconds)
        nat, step_only = native_rate(env_id, args.envs, args.seconds)
        ratios.append(nat / g)
        print(f"{env_id:26s} {g:18,.0f} {nat:15,.0f} {step_only:12,.0f} {nat / g:7.1f}")
    mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"native ({args.envs} envs) vs gymnasium one by one, resets included, geometric mean: {mean:.1f}x")


if __name__ == "__main__":
    main()
