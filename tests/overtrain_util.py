"""Tiny training runs in the layout of ``rlscape train`` (DIR/env.json, train.json, checkpoints/<step>/),
built with Stable-Baselines3 directly so the over-training tests need nothing else."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def build_training_run(path: Path, algo: str, env_id: str, total: int, save_every: int, seed: int = 0,
                       **hyperparams: Any) -> Path:
    """Train ``algo`` on ``env_id`` for ``total`` steps, saving checkpoints at 0, save_every, 2·save_every, …"""
    import stable_baselines3 as sb3
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)
    cls = {"ppo": sb3.PPO, "a2c": sb3.A2C, "sac": sb3.SAC, "td3": sb3.TD3, "dqn": sb3.DQN}[algo]
    model = cls("MlpPolicy", env_id, seed=seed, device="cpu", **hyperparams)
    path.mkdir(parents=True, exist_ok=True)
    (path / "env.json").write_text(json.dumps({"env_id": env_id, "env_kwargs": {}, "algo": algo, "seed": seed,
                                               "hyperparams": hyperparams, "atari": False, "normalize": False}))
    t0 = time.perf_counter()

    def save(step: int, returns: list[float]) -> None:
        folder = path / "checkpoints" / f"{step:010d}"
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / "model.zip")
        (folder / "checkpoint.json").write_text(json.dumps({"step": step, "wall_time_s": time.perf_counter() - t0,
                                                            "recent_returns": returns[-100:], "episodes": len(returns)}))

    class Saver(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % save_every == 0:
                save(self.num_timesteps, [float(ep["r"]) for ep in self.model.ep_info_buffer])
            return True

    save(0, [])
    model.learn(total, callback=Saver())
    (path / "train.json").write_text(json.dumps({"env_id": env_id, "algo": algo, "seed": seed, "hyperparams": hyperparams,
                                                 "n_envs": 1, "total_steps": total, "save_every": save_every,
                                                 "device": "cpu", "status": "complete"}))
    return path
