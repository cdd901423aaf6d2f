"""Atari Pong: rlscape's plane throughput vs raw stepping of the same envs, same cores, same session.

Raw stepping: our evaluation env pipeline (SB3's AtariWrapper for full games, 4-frame stack,
CHW), random actions, one process per core (as rlscape's workers), envs created before timing.
rlscape: ``rlscape.plane`` on an untrained PPO CnnPolicy (NatureCNN) Pong checkpoint, a small grid
and a steps budget, timed from the call to the finished run (worker start-up and env creation
included). Both count every env step taken (steps of episodes the steps budget later drops too;
the steps kept in the results are printed as well).

    PYTHONPATH=src .venv/bin/python benchmarks/atari_pong.py [--grid 3] [--steps 2400] [--raw-seconds 15]
        [--workers N] [--profile] [--ale-vector] [--checkpoint PATH]

``--profile`` also splits one worker's time (in this process) into forward pass, env stepping
(emulator vs wrappers) and the rest; ``--ale-vector`` times ale_py's native ``AtariVectorEnv``
(not used by rlscape: it does not reproduce SB3's preprocessing, see docs/atari.md).
Last line: the ratio rlscape / raw, target ≥ 50 %.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ENV_ID = "PongNoFrameskip-v4"


def make_checkpoint(folder: Path) -> Path:
    """An untrained PPO CnnPolicy on Pong with SB3/RL-Zoo's Atari settings (AtariWrapper, 4 frames)."""
    import ale_py
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    path = folder / "model.zip"
    if not path.exists():
        torch.set_num_threads(1)
        venv = VecFrameStack(make_atari_env(ENV_ID, n_envs=1, seed=0), 4)
        PPO("CnnPolicy", venv, n_steps=16, batch_size=16, seed=0, device="cpu").save(path)
        venv.close()
    return path


def _raw_worker(args: tuple[object, int, float, int]) -> tuple[int, float, float]:
    spec, n_envs, seconds, seed = args
    envs = [spec.make() for _ in range(n_envs)]  # type: ignore[attr-defined]
    for i, env in enumerate(envs):
        env.reset(seed=seed * 1000 + i)
    rng = np.random.default_rng(seed)
    n_actions = int(envs[0].action_space.n)
    steps, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        for i, env in enumerate(envs):
            _, _, term, trunc, _ = env.step(int(rng.integers(n_actions)))
            if term or trunc:
                env.reset(seed=seed * 1000 + i + steps)
        steps += n_envs
    return steps, time.perf_counter() - t0, time.process_time() - c0


def raw_stepping(spec: object, workers: int, n_envs: int, seconds: float) -> tuple[float, float]:
    """Env steps per wall second of ``workers`` processes, each stepping ``n_envs`` envs round-robin,
    and env steps per CPU second (robust to other load on a shared machine)."""
    with mp.get_context("fork").Pool(workers) as pool:
        out = pool.map(_raw_worker, [(spec, n_envs, seconds, w) for w in range(workers)])
    return sum(s / t for s, t, _ in out), sum(s for s, _, _ in out) / sum(c for _, _, c in out)


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished child processes."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _ale_vector_worker(args: tuple[int, float, int]) -> tuple[int, float]:
    from ale_py.vector_env import AtariVectorEnv

    n_envs, seconds, seed = args
    venv = AtariVectorEnv("pong", n_envs, num_threads=1, noop_max=30, reward_clipping=False, episodic_life=False,
                          repeat_action_probability=0.0, max_num_frames_per_episode=400_000)
    venv.reset(seed=np.arange(n_envs) + seed * 1000)
    rng = np.random.default_rng(seed)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        venv.step(rng.integers(6, size=n_envs))
        steps += n_envs
    venv.close()
    return steps, time.perf_counter() - t0


class _Clock:
    """CPU seconds spent inside wrapped callables, by label (nested labels are inside their parents)."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                self.t[label] = self.t.get(label, 0.0) + time.process_time() - t0

        return timed


def profile_worker(agent: Any, episodes: int, points: int) -> None:
    """Where one worker's time goes: ``points`` × ``episodes`` full games in this process, 1 thread."""
    import ale_py.env
    import torch

    from rlscape.core.directions import random_direction
    from rlscape.core.evaluate import Budget, PopulationEvaluator

    torch.set_num_threads(1)
    clock = _Clock()
    spec_make = agent.env.make

    def make() -> Any:
        env = clock.wrap("env creation", spec_make)()
        env.step = clock.wrap("env step", env.step)
        env.reset = clock.wrap("env reset", env.reset)
        return env

    agent.env.make = make  # this benchmark's own agent; the evaluator picks the timed envs up
    ale_step = ale_py.env.AtariEnv.step
    ale_py.env.AtariEnv.step = clock.wrap("ale", ale_step)
    try:
        theta = agent.parameters("actor")
        dirs = [random_direction(theta, 0, i).values for i in range(2)]
        ev = PopulationEvaluator(agent, theta, dirs, seed=0, deterministic=False)
        ev._forward = clock.wrap("forward", ev._forward)
        coords = np.random.default_rng(0).uniform(-0.5, 0.5, (points, 2))
        t0 = time.process_time()
        res = ev.evaluate(coords, Budget(episodes=episodes))
        total = time.process_time() - t0
        ev.close()
    finally:
        ale_py.env.AtariEnv.step = ale_step
        del agent.env.make
    t, steps = clock.t, res.env_steps
    print(f"profile, one worker in this process ({points} points × {episodes} games = {steps} env steps, {total:.1f} CPU s, "
          f"{steps / total:,.0f} steps per CPU s):")
    rest = total - t.get("forward", 0) - t.get("env step", 0) - t.get("env reset", 0) - t.get("env creation", 0)
    for name, v in [("forward pass", t.get("forward", 0)), ("env step", t.get("env step", 0)),
                    ("  of it ALE AtariEnv.step (emulator, RGB screen)", t.get("ale", 0)),
                    ("  of it wrappers (skip+max, warp, stack, CHW)", t.get("env step", 0) - t.get("ale", 0)),
                    ("env reset (noops, fire)", t.get("env reset", 0)), ("env creation", t.get("env creation", 0)),
                    ("rest (actions, noise, bookkeeping)", rest)]:
        print(f"  {name:50s} {v:7.2f} s {100 * v / total:5.1f} % {1e3 * v / steps:7.3f} ms/step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="an SB3 Pong checkpoint (default: untrained PPO CnnPolicy)")
    parser.add_argument("--grid", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2400, help="steps budget per point")
    parser.add_argument("--magnitude", type=float, default=0.5)
    parser.add_argument("--raw-seconds", type=float, default=15.0)
    parser.add_argument("--raw-envs", type=int, default=8, help="envs stepped round-robin per raw process")
    parser.add_argument("--workers", type=int, default=None, help="default: all cores")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--ale-vector", action="store_true")
    args = parser.parse_args()

    import rlscape
    from rlscape.core.store import cpu_count

    workers = args.workers or cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else make_checkpoint(Path(tmp))
        agent = rlscape.load_checkpoint(ckpt, ENV_ID)
        from rlscape.core.forward import choose_strategy

        raw, raw_cpu = raw_stepping(agent.env, workers, args.raw_envs, args.raw_seconds)
        print(f"raw stepping: {raw:,.0f} env steps/s, {raw_cpu:,.0f} per CPU s ({workers} processes × {args.raw_envs} envs, "
              f"random actions, {agent.env.describe()['wrappers']})")
        if args.ale_vector:
            with mp.get_context("fork").Pool(workers) as pool:
                out = pool.map(_ale_vector_worker, [(args.raw_envs, args.raw_seconds, w) for w in range(workers)])
            print(f"ale_py AtariVectorEnv (not exact, not used): {sum(s / t for s, t in out):,.0f} env steps/s "
                  f"({workers} processes × {args.raw_envs} envs, 1 thread each)")
        if args.profile:
            profile_worker(agent, episodes=4, points=2)

        t0, c0 = time.perf_counter(), _cpu_seconds()
        ds = rlscape.plane(agent, grid=args.grid, magnitude=args.magnitude, steps=args.steps, workers=workers,
                           out=Path(tmp) / "plane", progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        taken = int(json.loads((Path(tmp) / "plane" / "run.json").read_text())["env_steps_this_session"])
        kept = int(ds.lengths.sum())
    ours = taken / wall
    print(f"rlscape plane: {args.grid}x{args.grid} points, --steps {args.steps}, forward '{choose_strategy(agent.head)}': "
          f"{taken:,} env steps ({kept:,} kept) in {wall:.1f} s = {ours:,.0f} env steps/s ({kept / wall:,.0f} kept/s), "
          f"{workers} workers; {taken / cpu:,.0f} env steps per CPU s")
    print(f"per CPU second (independent of other load): rlscape / raw = {100 * taken / cpu / raw_cpu:.0f} %")
    print(f"ratio rlscape / raw stepping (wall clock, same cores): {100 * ours / raw:.0f} % (target ≥ 50 %)")


if __name__ == "__main__":
    main()
