"""Linear regions (methods.md §9): exact 1-D counts, 2-D partitions, refusal of non-PL networks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlscape.analyses.train import parse_hyperparams, resolve_hyperparams, sb3_kwargs


# -- training a ReLU agent: the command the refusal message names must work --------------------------

@pytest.mark.parametrize("name, cls", [("relu", torch.nn.ReLU), ("ReLU", torch.nn.ReLU), ("leaky_relu", torch.nn.LeakyReLU),
                                       ("tanh", torch.nn.Tanh), ("nn.ReLU", torch.nn.ReLU)])
def test_activation_given_by_its_short_name(name, cls):
    hp = resolve_hyperparams("ppo", "Hopper-v5", parse_hyperparams(f'{{"policy_kwargs": {{"activation_fn": "{name}"}}}}', "Hopper-v5"))
    box = gym.spaces.Box(-1, 1, (3,), np.float32)
    assert sb3_kwargs("ppo", hp, box)["policy_kwargs"]["activation_fn"] is cls
