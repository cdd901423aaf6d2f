"""The evaluation env pipeline, rebuilt from what the checkpoint says about training (methods.md §3).

Same wrappers as training (SB3's Atari preprocessing, frame stacking on the channel axis, channel-
first transposition), the checkpoint's own observation normalisation *frozen*, raw rewards (never
normalised or clipped), and for Atari the game score over full games (a lost life does not end the
episode).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from rlscape.core.errors import RlscapeError
from rlscape.core.vecenv import GymVecEnv, NormalizedVecEnv, VecEnv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObsNorm:
    """Frozen observation normalisation (SB3 ``VecNormalize`` statistics)."""

    mean: np.ndarray
    var: np.ndarray
    clip: float
    epsilon: float

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.clip((obs - self.mean) / np.sqrt(self.var + self.epsilon), -self.clip, self.clip).astype(np.float32)


@dataclass(frozen=True)
class RewardNorm:
    """Frozen reward normalisation (SB3 ``VecNormalize(norm_reward=True)`` statistics).

    The critic of such a checkpoint learned values of rewards ``r / sqrt(ret_rms.var + epsilon)``
    clipped to ``±clip``, cast to float32 (``VecNormalize.normalize_reward``); its TD errors are
    measured in those units, and the policy-gradient machinery uses them for rewards "in training units".
    Returns are never normalised.
    """

    var: float
    clip: float
    epsilon: float

    def __call__(self, reward: np.ndarray) -> np.ndarray:
        r = np.clip(np.asarray(reward, np.float64) / np.sqrt(self.var + self.epsilon), -self.clip, self.clip)
        return r.astype(np.float32).astype(np.float64)


def load_vecnormalize(path: str | Path) -> tuple[ObsNorm | None, RewardNorm | None]:
    """The frozen observation and reward normalisation of an SB3 ``vecnormalize.pkl`` (None: not used)."""
    try:
        with open(path, "rb") as fh:
            vn = pickle.load(fh)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the user's file
        raise RlscapeError(f"cannot read VecNormalize statistics {path} ({type(exc).__name__}); pass the vecnormalize.pkl saved with the model") from None
    obs_norm = None
    if getattr(vn, "norm_obs", False):
        rms = vn.obs_rms
        if isinstance(rms, dict):
            raise RlscapeError("dict observation spaces are not supported yet")
        obs_norm = ObsNorm(np.asarray(rms.mean, np.float32), np.asarray(rms.var, np.float32), float(vn.clip_obs), float(vn.epsilon))
    reward_norm = None
    if getattr(vn, "norm_reward", False):
        reward_norm = RewardNorm(float(np.asarray(vn.ret_rms.var).reshape(())), float(vn.clip_reward), float(vn.epsilon))
    return obs_norm, reward_norm


class _NormalizeObservation(gym.ObservationWrapper):
    def __init__(self, env: gym.Env, norm: ObsNorm) -> None:
        super().__init__(env)
        self.norm = norm
        shape = env.observation_space.shape
        self.observation_space = gym.spaces.Box(-norm.clip, norm.clip, shape, np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return self.norm(observation)


class StackLastAxis(gym.Wrapper):
    """Frame stacking exactly like SB3's ``VecFrameStack`` for channel-last images: the last ``n``
    observations concatenated on the last axis, zeros before the first one."""

    def __init__(self, env: gym.Env, n: int) -> None:
        super().__init__(env)
        space = env.observation_space
        assert isinstance(space, gym.spaces.Box)
        low = np.repeat(space.low, n, axis=-1)
        high = np.repeat(space.high, n, axis=-1)
        self.observation_space = gym.spaces.Box(low, high, dtype=space.dtype)
        self._c = space.shape[-1]
        self._stack = np.zeros(self.observation_space.shape, dtype=space.dtype)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        self._stack[...] = 0
        self._stack[..., -self._c :] = obs
        return self._stack.copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._stack = np.roll(self._stack, -self._c, axis=-1)
        self._stack[..., -self._c :] = obs
        return self._stack.copy(), reward, terminated, truncated, info


class _ChannelFirst(gym.ObservationWrapper):
    """HWC → CHW, as SB3's ``VecTransposeImage`` does for CNN policies."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box):
            raise RlscapeError(f"channel_first needs image (Box) observations, not {space}; drop channel_first")
        self.observation_space = gym.spaces.Box(
            np.transpose(space.low, (2, 0, 1)), np.transpose(space.high, (2, 0, 1)), dtype=space.dtype
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(observation, (2, 0, 1)))


def _register_optional_envs() -> None:
    try:
        import ale_py

        gym.register_envs(ale_py)
    except ImportError:  # pragma: no cover - ale-py is a dependency, but keep the core importable
        pass


def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` is an Arcade Learning Environment game."""
    _register_optional_envs()
    try:
        spec = gym.spec(env_id)
    except Exception:
        return False
    return "ale_py" in str(spec.entry_point)


@dataclass
class EnvSpec:
    """Everything needed to rebuild one evaluation env in any process (picklable)."""

    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    atari: bool = False
    frame_stack: int = 1
    channel_first: bool = False
    obs_norm: ObsNorm | None = None
    reward_norm: RewardNorm | None = None  # training normalised rewards (VecNormalize norm_reward)

    def critic_reward(self, reward: np.ndarray) -> np.ndarray:
        """Raw rewards ``(n,)`` in the units the critic was trained on (methods.md §3): SB3's Atari
        training clips each reward to its sign (``AtariWrapper(clip_reward=True)``, before any
        ``VecNormalize``), and a ``VecNormalize(norm_reward=True)`` run scales them (frozen)."""
        r = np.sign(reward).astype(np.float64) if self.atari else np.asarray(reward, np.float64)
        return self.reward_norm(r) if self.reward_norm is not None else r

    def critic_reward_units(self) -> str:
        """How :meth:`critic_reward` transforms rewards, in words (recorded as ``critic_reward_units``)."""
        steps = (["sign(r) (AtariWrapper clip_reward)"] if self.atari else [])
        if self.reward_norm is not None:
            n = self.reward_norm
            steps.append(f"VecNormalize frozen: r / sqrt({n.var:.6g} + {n.epsilon:g}) clipped to ±{n.clip:g}, float32")
        return " then ".join(steps) if steps else "raw"

    def make(self) -> gym.Env:
        """Build the env; unknown ids become a one-line :class:`RlscapeError`."""
        _register_optional_envs()
        try:
            env = gym.make(self.env_id, **self.env_kwargs)
        except (gym.error.Error, ModuleNotFoundError, ImportError, AttributeError) as exc:
            raise RlscapeError(
                f"unknown env id {self.env_id!r} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "pass a registered Gymnasium id, or module:EnvName-v0 for a custom env"
            ) from None
        if self.atari:
            from stable_baselines3.common.atari_wrappers import AtariWrapper

            env = AtariWrapper(env, terminal_on_life_loss=False, clip_reward=False)
        if self.obs_norm is not None:
            env = _NormalizeObservation(env, self.obs_norm)
        if self.frame_stack > 1:
            env = StackLastAxis(env, self.frame_stack)
        if self.channel_first:
            env = _ChannelFirst(env)
        return env

    def make_vec(self, generic: bool = False) -> VecEnv:
        """The batched env the evaluator steps: a native numpy implementation when one reproduces
        this env exactly (classic control), unless ``generic``; else Gymnasium envs one by one."""
        if not (generic or self.atari or self.frame_stack > 1 or self.channel_first):
            from rlscape.core.native import make_native

            native = make_native(self.env_id, self.env_kwargs)
            if native is not None:
                return native if self.obs_norm is None else NormalizedVecEnv(native, self.obs_norm)
        return GymVecEnv(self.make)

    def vec_engine(self, generic: bool = False) -> str:
        """``"native"`` or ``"gymnasium"``: which batched env :meth:`make_vec` gives."""
        venv = self.make_vec(generic)
        return "gymnasium" if isinstance(getattr(venv, "venv", venv), GymVecEnv) else "native"

    def default_max_envs(self) -> int:
        """Envs per worker rectangle: many for cheap envs (the forward pass is shared), few where
        the simulator dominates and each env is costly to create (MuJoCo, Atari)."""
        if self.atari:
            return 32
        try:
            entry = str(gym.spec(self.env_id).entry_point)
        except Exception:  # noqa: BLE001 - custom ids are checked when the env is made
            entry = ""
        return 64 if "mujoco" in entry else 512

    def describe(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
            "wrappers": (["AtariWrapper(terminal_on_life_loss=False, clip_reward=False)"] if self.atari else [])
            + (["VecNormalize(frozen, obs only)"] if self.obs_norm is not None else [])
            + ([f"FrameStack({self.frame_stack}, channel-last)"] if self.frame_stack > 1 else [])
            + (["TransposeImage(CHW)"] if self.channel_first else []),
        }


def check_spaces(env: gym.Env, observation_space: gym.Space, action_space: gym.Space, env_id: str) -> None:
    """Refuse an env whose spaces differ from the ones the policy was trained with."""
    eo, ea = env.observation_space, env.action_space
    if type(eo) is not type(observation_space) or getattr(eo, "shape", None) != getattr(observation_space, "shape", None):
        raise RlscapeError(
            f"env {env_id!r} gives observations {eo} but the checkpoint expects {observation_space}; "
            "pass the env the agent was trained on with --env"
        )
    same_action = type(ea) is type(action_space) and getattr(ea, "shape", None) == getattr(action_space, "shape", None)
    if same_action and isinstance(ea, gym.spaces.Discrete):
        same_action = int(ea.n) == int(action_space.n)  # type: ignore[attr-defined]
    if not same_action:
        raise RlscapeError(
            f"env {env_id!r} has actions {ea} but the checkpoint expects {action_space}; "
            "pass the env the agent was trained on with --env"
        )
