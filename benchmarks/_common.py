"""Shared pieces of the benchmarks: cached agents, the reference design's per-point process, output.

Agents are trained once with SB3 into ``benchmarks/.cache/`` (ignored by git) and reused. Every
benchmark prints its figures and, on its last line, ``RESULT <name>: <figure> (target …)`` — the
line ``run_all.py`` collects into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
REFERENCE_POINT = Path(__file__).resolve().parent / "reference_point.py"

# name: (env id, training steps, SB3 PPO kwargs) — small but real training runs, cached
AGENTS: dict[str, tuple[str, int, dict]] = {
    "CartPole-v1": ("CartPole-v1", 30_000, {}),  # the quickstart agent (RL Zoo hyperparameters)
    "Acrobot-v1": ("Acrobot-v1", 30_000, {"n_steps": 256, "gae_lambda": 0.94, "gamma": 0.99, "n_epochs": 4, "ent_coef": 0.0}),
    "Pendulum-v1": ("Pendulum-v1", 30_000, {"n_steps": 1024, "gae_lambda": 0.95, "gamma": 0.9, "n_epochs": 10,
                                            "learning_rate": 1e-3, "clip_range": 0.2}),
    "Hopper-v5": ("Hopper-v5", 2_048, {}),  # barely trained: this benchmark measures speed, not skill
    "HalfCheetah-v5": ("HalfCheetah-v5", 2_048, {}),  # likewise
    # partly trained (returns still vary, so advantages and the policy Hessian are not zero)
    "CartPole-v1-early": ("CartPole-v1", 4_096, {"n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98,
                                                 "n_epochs": 20, "ent_coef": 0.0}),
}


def agent(env_id: str) -> Path:
    """The checkpoint folder of the cached PPO agent for ``env_id`` (trained on first use)."""
    folder = CACHE / env_id
    if (folder / "model.zip").is_file() or env_id not in AGENTS:
        return folder
    env, steps, kwargs = AGENTS[env_id]
    t0 = time.perf_counter()
    if env_id == "CartPole-v1":
        from rlscape.training.quickstart import train_quickstart_agent

        train_quickstart_agent(folder, steps=steps)
    else:
        import torch
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env

        torch.set_num_threads(1)
        model = PPO("MlpPolicy", make_vec_env(env, n_envs=8, seed=0), seed=0, device="cpu", **kwargs)
        model.learn(steps)
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / "model.zip")
        (folder / "env.json").write_text(json.dumps({"env_id": env, "env_kwargs": {}, "algo": "ppo"}))
    print(f"(trained the {env_id} agent in {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return folder


def save_reference_directions(path: Path, d1: dict[str, np.ndarray], d2: dict[str, np.ndarray]) -> Path:
    np.savez(path, **{f"d1/{n}": v for n, v in d1.items()}, **{f"d2/{n}": v for n, v in d2.items()})
    return path


def reference_point_seconds(checkpoint: Path, directions: Path, coords: list[tuple[float, float]], episodes: int) -> list[float]:
    """Wall time of the reference design for each point: a fresh Python process that imports SB3,
    loads the model, perturbs it and runs ``evaluate_policy`` on one env, as the original code did."""
    times = []
    for x, y in coords:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(REFERENCE_POINT), str(checkpoint), str(directions), str(x), str(y), str(episodes)],
                       check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))
        times.append(time.perf_counter() - t0)
    return times


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def result(name: str, figure: str, target: str) -> None:
    """The last line of a benchmark: what run_all.py reads."""
    print(f"RESULT {name}: {figure} (target {target})", flush=True)
