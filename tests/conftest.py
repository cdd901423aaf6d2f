"""Shared fixtures: small SB3 checkpoints, built once per test session (shared by xdist workers)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

os.environ.setdefault("MPLBACKEND", "Agg")


def _shared(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """Build ``name`` once for all xdist workers of this session (the documented xdist pattern)."""
    root = tmp_path_factory.getbasetemp().parent
    target = root / name
    with FileLock(str(target) + ".lock"):
        if not (target / "done").exists():
            target.mkdir(parents=True, exist_ok=True)
            build(target)
            (target / "done").write_text("")
    return target


def _save(model: object, folder: Path, env_id: str, **extra: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.zip")  # type: ignore[attr-defined]
    (folder / "env.json").write_text(json.dumps({"env_id": env_id, "env_kwargs": {}, **extra}))


@pytest.fixture(scope="session")
def cartpole_ppo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PPO CartPole agent trained briefly: returns of ~50–200 with real spread."""

    def build(path: Path) -> None:
        import torch
        from stable_baselines3 import PPO

        torch.set_num_threads(1)
        model = PPO("MlpPolicy", "CartPole-v1", n_steps=256, batch_size=64, n_epochs=4, seed=1, device="cpu")
        model.learn(3000)
        _save(model, path / "agent", "CartPole-v1")
        model.learn(1024, reset_num_timesteps=False)
        _save(model, path / "agent2", "CartPole-v1")

    return _shared(tmp_path_factory, "cartpole_ppo", build) / "agent"


@pytest.fixture(scope="session")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """``untrained(algo, env_id)`` → a bare SB3 .zip of an untrained agent (no env.json)."""

    def get(algo: str, env_id: str) -> Path:
        def build(path: Path) -> None:
            import stable_baselines3 as sb3
            from sb3_contrib import TRPO

            cls = {"ppo": sb3.PPO, "a2c": sb3.A2C, "sac": sb3.SAC, "td3": sb3.TD3, "ddpg": sb3.DDPG, "dqn": sb3.DQN, "trpo": TRPO}[algo]
            kwargs = {"learning_starts": 0, "buffer_size": 1000} if algo in ("sac", "td3", "ddpg", "dqn") else {}
            cls("MlpPolicy", env_id, seed=0, device="cpu", **kwargs).save(path / "model.zip")

        return _shared(tmp_path_factory, f"untrained_{algo}_{env_id.replace('/', '_')}", build) / "model.zip"

    return get


# -- training runs written by `rlscape train`, for the over-training analyses -----------------------

def _train(path: Path, algo: str, env_id: str, steps: int, save_every: int, hyperparams: dict) -> None:
    from rlscape.training.train import train

    train(env_id, algo, steps=steps, out=path, save_every=save_every, seed=0, n_envs=1, hyperparams=hyperparams,
          device="cpu", progress=False)


@pytest.fixture(scope="session")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PPO on CartPole-v1, checkpoints at steps 0, 512, 1024, 1536 (on-policy, discrete actions)."""
    def build(path: Path) -> None:
        _train(path / "run", "ppo", "CartPole-v1", 1536, 512, {"n_steps": 256, "batch_size": 64, "n_epochs": 4})

    return _shared(tmp_path_factory, "ppo_run", build) / "run"


@pytest.fixture(scope="session")
def sac_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SAC on Pendulum-v1, checkpoints at steps 0, 100, 200 (off-policy, continuous actions)."""
    def build(path: Path) -> None:
        _train(path / "run", "sac", "Pendulum-v1", 200, 100,
               {"learning_starts": 50, "buffer_size": 1000, "batch_size": 64, "policy_kwargs": {"net_arch": [32, 32]}})

    return _shared(tmp_path_factory, "sac_run", build) / "run"
