"""The quickstart agent: a small PPO on CartPole-v1, trained in well under a minute."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from rlscape.core.policy import ENV_FILE

log = logging.getLogger(__name__)

ENV_ID = "CartPole-v1"
# RL Zoo's tuned PPO hyperparameters for CartPole-v1 (linear schedules end at the last step).
HYPERPARAMS: dict[str, Any] = {"n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20, "ent_coef": 0.0}


def train_quickstart_agent(folder: Path, *, steps: int = 30_000, seed: int = 0, overwrite: bool = False) -> Path:
    """Train (or reuse) the quickstart agent; returns the checkpoint folder (model.zip + env.json)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    meta = {"env_id": ENV_ID, "env_kwargs": {}, "algo": "ppo", "train_steps": steps, "seed": seed, "hyperparams": HYPERPARAMS}
    env_file = folder / ENV_FILE
    if not overwrite and (folder / "model.zip").is_file() and env_file.is_file():
        old = json.loads(env_file.read_text())
        if {k: old.get(k) for k in meta} == meta:
            log.info("using the agent already trained in %s", folder)
            return folder
    folder.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64×64 MLP trains faster on one thread
    try:
        t0 = time.perf_counter()
        env = make_vec_env(ENV_ID, n_envs=8, seed=seed)
        model = PPO("MlpPolicy", env, learning_rate=lambda f: 1e-3 * f, clip_range=lambda f: 0.2 * f, seed=seed,
                    device="cpu", **HYPERPARAMS)
        log.info("training PPO on %s for %d steps …", ENV_ID, steps)
        model.learn(steps)
        model.save(folder / "model.zip")
        env_file.write_text(json.dumps(dict(meta, train_wall_time_s=round(time.perf_counter() - t0, 1)), indent=2))
        log.info("trained in %.0f s → %s", time.perf_counter() - t0, folder)
    finally:
        torch.set_num_threads(threads)
    return folder
