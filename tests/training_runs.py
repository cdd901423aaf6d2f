"""Tiny training runs shared by several test modules, written by ``rlscape train`` itself.

A test module wraps :func:`tiny_ppo_run` in a session fixture of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import _shared, _train


def tiny_ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PPO on CartPole-v1, checkpoints at steps 0, 1024, 2048 (built once per session, shared by xdist workers)."""
    return _shared(tmp_path_factory, "tiny_ppo_run", lambda p: _train(p / "run", "ppo", "CartPole-v1", 2048, 1024,
                                                                      {"n_steps": 256, "batch_size": 64, "n_epochs": 4})) / "run"


def norm_ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``rlscape train CartPole-v1 --algo ppo --steps 2048 --hyperparams '{"normalize": true, "n_steps": 256}'``:
    VecNormalize with observation *and* reward normalisation; checkpoints at 0, 1024, 2048."""
    return _shared(tmp_path_factory, "norm_ppo_run", lambda p: _train(p / "run", "ppo", "CartPole-v1", 2048, 1024,
                                                                      {"normalize": True, "n_steps": 256})) / "run"


def relu_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PPO with an 8×8 ReLU policy on MountainCar-v0 (2-D states, normalised), checkpoints 0, 512, 1024."""
    return _shared(tmp_path_factory, "regions_relu_run", lambda p: _train(
        p / "run", "ppo", "MountainCar-v0", 1024, 512,
        {"n_steps": 256, "batch_size": 64, "n_epochs": 2, "normalize": True,
         "policy_kwargs": {"activation_fn": "relu", "net_arch": [8, 8]}})) / "run"
