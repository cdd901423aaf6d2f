"""Tiny training runs in the layout ``rlscape train`` writes (DIR/env.json, train.json, checkpoints/<step>/).

Built with SB3 directly, so tests of over-training analyses need no training command. A test module
wraps :func:`tiny_ppo_run` in a session fixture of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import _shared


def make_training_run(path: Path, algo: str = "ppo", env_id: str = "CartPole-v1", total: int = 2048,
                      save_every: int = 1024, seed: int = 0, **hyper: object) -> Path:
    """Train ``algo`` on ``env_id`` for ``total`` steps, saving a checkpoint every ``save_every`` (and at 0)."""
    import time

    import numpy as np
    import stable_baselines3 as sb3
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)
    cls = {"ppo": sb3.PPO, "a2c": sb3.A2C}[algo]
    path.mkdir(parents=True, exist_ok=True)
    (path / "env.json").write_text(json.dumps({"env_id": env_id, "env_kwargs": {}, "algo": algo, "seed": seed,
                                               "hyperparams": hyper, "atari": False, "normalize": False}))
    model = cls("MlpPolicy", env_id, seed=seed, device="cpu", **hyper)
    t0 = time.perf_counter()

    def save(step: int) -> None:
        folder = path / "checkpoints" / f"{step:010d}"
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / "model.zip")
        recent = [float(e["r"]) for e in list(model.ep_info_buffer or [])]
        (folder / "checkpoint.json").write_text(json.dumps({
            "step": step, "wall_time_s": time.perf_counter() - t0, "recent_returns": recent[-100:],
            "episodes": len(recent), "mean_recent_return": float(np.mean(recent)) if recent else None}))

    class Saver(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % save_every == 0:
                save(self.num_timesteps)
            return True

    save(0)
    model.learn(total, callback=Saver())
    (path / "train.json").write_text(json.dumps({"env_id": env_id, "algo": algo, "hyperparams": hyper, "seed": seed,
                                                 "n_envs": 1, "total_steps": total, "save_every": save_every,
                                                 "status": "complete"}))
    return path


def tiny_ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PPO on CartPole-v1, checkpoints at steps 0, 1024, 2048 (built once per session, shared by xdist workers)."""
    return _shared(tmp_path_factory, "tiny_ppo_run", lambda p: make_training_run(p / "run", n_steps=256, batch_size=64,
                                                                                 n_epochs=4)) / "run"
