"""A training run in the layout of `rlscape train`: PPO on CartPole-v1, a checkpoint every 5k steps."""
import json
from pathlib import Path

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

run, every, total = Path("runs/cartpole-ppo"), 5_000, 30_000
hp = {"n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20, "ent_coef": 0.0}
torch.set_num_threads(1)
model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=0), seed=0, device="cpu",
            learning_rate=lambda f: 1e-3 * f, clip_range=lambda f: 0.2 * f, **hp)
run.mkdir(parents=True, exist_ok=True)
(run / "env.json").write_text(json.dumps({"env_id": "CartPole-v1", "env_kwargs": {}, "algo": "ppo", "seed": 0,
                                          "hyperparams": hp, "atari": False, "normalize": False}))

def save(step):
    (run / "checkpoints" / f"{step:010d}").mkdir(parents=True, exist_ok=True)
    model.save(run / "checkpoints" / f"{step:010d}" / "model.zip")

class Saver(BaseCallback):
    def _on_step(self):
        if self.num_timesteps % every == 0 or self.num_timesteps == total:
            save(self.num_timesteps)
        return True

save(0)
model.learn(total, callback=Saver())
