"""One grid point the way the reference design computed it: a fresh process that loads the SB3
model, writes θ0 + x·d1 + y·d2 into it and runs ``evaluate_policy`` on one env.

    python benchmarks/reference_point.py CHECKPOINT DIRECTIONS.npz X Y EPISODES
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

ckpt, dirs, x, y, episodes = Path(sys.argv[1]), np.load(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(1)
model = PPO.load(ckpt / "model.zip", device="cpu")
with torch.no_grad():
    for name, p in model.policy.named_parameters():
        if f"d1/{name}" in dirs:
            p.add_(torch.from_numpy(x * dirs[f"d1/{name}"] + y * dirs[f"d2/{name}"]))
env_id = json.loads((ckpt / "env.json").read_text())["env_id"]
env = make_vec_env(env_id, n_envs=1, seed=0)
rewards, lengths = evaluate_policy(model, env, n_eval_episodes=episodes, return_episode_rewards=True)
print(json.dumps({"mean_return": float(np.mean(rewards)), "steps": int(np.sum(lengths))}))
