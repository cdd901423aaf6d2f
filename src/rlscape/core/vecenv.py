"""The batched env interface the evaluator steps: ``reset(seeds)`` for all envs, ``step(idx, actions)``
for the live subset.

Two implementations: :class:`GymVecEnv` (any Gymnasium env, stepped one by one — the generic path)
and the native numpy envs of :mod:`rlscape.core.native` (classic control, every live env in one
vectorised step, proven equal to Gymnasium step for step). :meth:`EnvSpec.make_vec` picks one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import gymnasium as gym
import numpy as np

StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class VecEnv(Protocol):
    """``n`` envs restarted together and stepped in lock-step; finished envs are simply not stepped."""

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """(Re)start ``len(seeds)`` envs, env ``i`` with seed ``seeds[i]``; observations ``(n, ...)``."""
        ...

    def step(self, idx: np.ndarray, actions: np.ndarray) -> StepResult:
        """Step envs ``idx`` with ``actions``: observations, rewards (float64), terminated, truncated."""
        ...

    def close(self) -> None: ...


class GymVecEnv:
    """Gymnasium envs in a list, created on demand and reused across resets (the generic path)."""

    def __init__(self, make: Callable[[], gym.Env]) -> None:
        self._make = make
        self.envs: list[gym.Env] = []

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        while len(self.envs) < len(seeds):
            self.envs.append(self._make())
        return np.stack([self.envs[i].reset(seed=int(s))[0] for i, s in enumerate(seeds)])

    def step(self, idx: np.ndarray, actions: np.ndarray) -> StepResult:
        m = len(idx)
        obs: list[np.ndarray] = [None] * m  # type: ignore[list-item]
        rew = np.empty(m)
        term = np.empty(m, bool)
        trunc = np.empty(m, bool)
        for j, i in enumerate(idx):
            obs[j], r, term[j], trunc[j], _ = self.envs[i].step(actions[j])
            rew[j] = float(r)
        return np.stack(obs), rew, term, trunc

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


class NormalizedVecEnv:
    """Frozen observation normalisation on top of a batched env (SB3 ``VecNormalize`` statistics)."""

    def __init__(self, venv: VecEnv, norm: Callable[[np.ndarray], np.ndarray]) -> None:
        self.venv, self.norm = venv, norm

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        return self.norm(self.venv.reset(seeds))

    def step(self, idx: np.ndarray, actions: np.ndarray) -> StepResult:
        obs, rew, term, trunc = self.venv.step(idx, actions)
        return self.norm(obs), rew, term, trunc

    def close(self) -> None:
        self.venv.close()
