"""Batched numpy versions of Gymnasium's classic-control envs, step for step the same numbers.

One :class:`NativeVecEnv` holds ``n`` independent envs of one id as columns of a float64 state
array and steps any subset of them with a handful of numpy calls, instead of ``n`` Python
``env.step`` calls. Env ``i`` reproduces ``gym.make(env_id, **env_kwargs)`` reset with
``seeds[i]``: the same initial state (the same ``np_random(seed)`` generator and the same
``uniform`` calls), then the same float arithmetic in the same order as the installed Gymnasium
source, so observations, rewards, terminations and truncations (the registered ``TimeLimit``) are
the reference's — bit for bit in our tests.

Three details of the reference that matter for bit-identity:

- ``x ** 2`` on a NumPy *scalar* calls libm ``pow``, which rounds differently from ``x * x`` in
  about 0.1 % of cases (glibc's ``pow`` is accurate to 0.52 ulp, not correctly rounded). The
  vectorised :func:`_pow2` squares exactly and recomputes with the scalar operation only the
  few elements whose exact square lies within 0.02 ulp of a rounding midpoint.
- NumPy 2 treats a Python float as "weak": ``np.float32 * 0.0015`` is a float32 product. Where the
  reference mixes float32 actions or states with Python floats (Pendulum, MountainCarContinuous),
  the same expressions are evaluated here with arrays of the same dtypes.
- Acrobot resets to a float32 state (its first observation's cosines are float32 cosines);
  MountainCarContinuous keeps a float32 state after the first step but a float64 one before.

Continuous actions are expected already clipped to the Box, as the evaluator produces them;
the result is bit-identical for actions of the space's dtype (float32).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils.seeding import np_random

from rlscape.core.errors import RlscapeError

__all__ = ["NativeVecEnv", "make_native", "native_env_ids"]

_MIDPOINT_MARGIN = 0.48  # |x² − fl(x²)| / ulp above this: pow may round the other way (0.52-ulp bound)


def _pow2(x: np.ndarray) -> np.ndarray:
    """``x ** 2`` elementwise, bit-identical to ``x[i] ** 2`` on NumPy scalars (libm ``pow``)."""
    p = x * x
    if x.dtype == np.float32:
        err = np.square(x.astype(np.float64)) - p.astype(np.float64)  # exact: 48 bits fit in 53
        ulp = np.spacing(p).astype(np.float64)
    else:
        c = 134217729.0 * x  # Veltkamp split, then Dekker's exact product error
        hi = c - (c - x)
        lo = x - hi
        err = ((hi * hi - p) + 2.0 * hi * lo) + lo * lo
        ulp = np.spacing(p)
    risky = np.flatnonzero(np.abs(err) > _MIDPOINT_MARGIN * ulp)
    for i in risky:  # ~4 % of elements; the scalar operation the reference performs
        p[i] = x[i] ** 2
    return p


def _uniform_rows(seeds: Sequence[int], draw: Callable[[np.random.Generator], Any]) -> list[Any]:
    """One reset draw per env, from the generator ``Env.reset(seed=s)`` creates."""
    out = []
    for s in seeds:
        rng, _ = np_random(int(s))
        out.append(draw(rng))
    return out


class NativeVecEnv:
    """``num_envs`` envs of one classic-control id, stepped together.

    ``observation_space`` and ``action_space`` are the single-env spaces of ``gym.make``.
    Subclasses implement ``_reset_state`` and ``_step_state``.
    """

    env_id: str
    num_envs: int
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Discrete | gym.spaces.Box
    max_episode_steps: int | None

    def __init__(self, env_id: str, kwargs: Mapping[str, Any], observation_space: gym.spaces.Box,
                 action_space: gym.spaces.Discrete | gym.spaces.Box, max_episode_steps: int | None) -> None:
        self.env_id = env_id
        self.kwargs = dict(kwargs)
        self.observation_space = observation_space
        self.action_space = action_space
        self.max_episode_steps = max_episode_steps
        self.num_envs = 0
        self._elapsed = np.zeros(0, np.int64)
        self._done = np.zeros(0, bool)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env_id}, num_envs={self.num_envs})"

    def close(self) -> None:
        """Nothing to release (the state is numpy arrays); part of the batched-env interface."""

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """(Re)start ``len(seeds)`` envs; env ``i`` as ``gym.make(...).reset(seed=seeds[i])``.

        Returns the observations, ``(n, obs_dim)`` float32.
        """
        n = len(seeds)
        self.num_envs = n
        self._elapsed = np.zeros(n, np.int64)
        self._done = np.zeros(n, bool)
        return self._reset_state(seeds)

    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step the envs ``idx`` (sorted, distinct ints) with ``actions`` (``len(idx)`` rows).

        Returns ``obs`` ``(m, obs_dim)`` float32, ``reward`` ``(m,)`` float64, ``terminated`` and
        ``truncated`` ``(m,)`` bool; ``truncated`` is the time limit, counted since each env's reset.
        Envs that ended must be reset before they are stepped again.
        """
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        m = idx.size
        if m and (idx[0] < 0 or idx[-1] >= self.num_envs or (m > 1 and np.any(np.diff(idx) <= 0))):
            raise ValueError(f"idx must be sorted, distinct env indices in [0, {self.num_envs})")
        if self._done[idx].any():
            raise ValueError("an env that has terminated or been truncated was stepped; reset it first")
        actions = np.asarray(actions)
        if isinstance(self.action_space, gym.spaces.Discrete):
            actions = actions.reshape(m)
            if m and (actions.min() < 0 or actions.max() >= self.action_space.n):
                raise ValueError(f"actions must lie in [0, {self.action_space.n}) for {self.env_id}")
        else:
            actions = actions.reshape(m, *self.action_space.shape)
        obs, reward, terminated = self._step_state(idx, actions)
        self._elapsed[idx] += 1
        if self.max_episode_steps is None:
            truncated = np.zeros(m, bool)
        else:
            truncated = self._elapsed[idx] >= self.max_episode_steps
        self._done[idx] = terminated | truncated
        return obs, reward, terminated, truncated

    def _reset_state(self, seeds: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def _step_state(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError


class CartPoleVec(NativeVecEnv):
    """``gymnasium.envs.classic_control.cartpole.CartPoleEnv`` (Euler integrator)."""

    gravity = 9.8
    masscart = 1.0
    masspole = 0.1
    total_mass = masspole + masscart
    length = 0.5
    polemass_length = masspole * length
    force_mag = 10.0
    tau = 0.02
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def _reset_state(self, seeds: Sequence[int]) -> np.ndarray:
        rows = _uniform_rows(seeds, lambda rng: rng.uniform(low=-0.05, high=0.05, size=(4,)))
        self._state = np.array(rows, dtype=np.float64).reshape(len(seeds), 4).T.copy()  # (4, n)
        return self._state.T.astype(np.float32)

    def _step_state(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, x_dot, theta, theta_dot = self._state[:, idx]
        force = np.where(actions == 1, self.force_mag, -self.force_mag)
        costheta = np.cos(theta)
        sintheta = np.sin(theta)
        temp = (force + self.polemass_length * np.square(theta_dot) * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * np.square(costheta) / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * xacc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * thetaacc
        new = np.stack((x, x_dot, theta, theta_dot))
        self._state[:, idx] = new
        terminated = (
            (x < -self.x_threshold) | (x > self.x_threshold)
            | (theta < -self.theta_threshold_radians) | (theta > self.theta_threshold_radians)
        )
        if self.kwargs.get("sutton_barto_reward", False):
            reward = np.where(terminated, -1.0, 0.0)
        else:
            reward = np.ones(idx.size)
        return new.T.astype(np.float32), reward, terminated


class PendulumVec(NativeVecEnv):
    """``gymnasium.envs.classic_control.pendulum.PendulumEnv``."""

    max_speed = 8
    max_torque = 2.0
    dt = 0.05
    m = 1.0
    l = 1.0  # noqa: E741 - the reference's name

    def _reset_state(self, seeds: Sequence[int]) -> np.ndarray:
        high = np.array([np.pi, 1.0])
        rows = _uniform_rows(seeds, lambda rng: rng.uniform(low=-high, high=high))
        self._state = np.array(rows, dtype=np.float64).reshape(len(seeds), 2).T.copy()  # (2, n)
        return self._obs(self._state[0], self._state[1])

    @staticmethod
    def _obs(th: np.ndarray, thdot: np.ndarray) -> np.ndarray:
        return np.stack((np.cos(th), np.sin(th), thdot), axis=1).astype(np.float32)

    def _step_state(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        th, thdot = self._state[:, idx]
        g = self.kwargs.get("g", 10.0)
        m, l, dt = self.m, self.l, self.dt  # noqa: E741
        u = np.clip(actions, -self.max_torque, self.max_torque)[:, 0]
        costs = _pow2(((th + np.pi) % (2 * np.pi)) - np.pi) + 0.1 * _pow2(thdot) + 0.001 * _pow2(u)
        newthdot = thdot + (3 * g / (2 * l) * np.sin(th) + 3.0 / (m * l**2) * u) * dt
        newthdot = np.clip(newthdot, -self.max_speed, self.max_speed)
        newth = th + newthdot * dt
        self._state[0, idx] = newth
        self._state[1, idx] = newthdot
        return self._obs(newth, newthdot), -costs, np.zeros(idx.size, bool)


class AcrobotVec(NativeVecEnv):
    """``gymnasium.envs.classic_control.acrobot.AcrobotEnv`` ("book" dynamics, rk4, no torque noise)."""

    dt = 0.2
    LINK_LENGTH_1 = 1.0
    LINK_MASS_1 = 1.0
    LINK_MASS_2 = 1.0
    LINK_COM_POS_1 = 0.5
    LINK_COM_POS_2 = 0.5
    LINK_MOI = 1.0
    MAX_VEL_1 = 4 * np.pi
    MAX_VEL_2 = 9 * np.pi
    AVAIL_TORQUE = np.array([-1.0, 0.0, +1])

    def _reset_state(self, seeds: Sequence[int]) -> np.ndarray:
        rows = _uniform_rows(seeds, lambda rng: rng.uniform(low=-0.1, high=0.1, size=(4,)).astype(np.float32))
        s32 = np.array(rows, dtype=np.float32).reshape(len(seeds), 4).T  # the reference's float32 state
        self._state = s32.astype(np.float64)  # (4, n)
        return self._obs(s32)

    @staticmethod
    def _obs(s: np.ndarray) -> np.ndarray:
        return np.stack((np.cos(s[0]), np.sin(s[0]), np.cos(s[1]), np.sin(s[1]), s[2], s[3]), axis=1).astype(np.float32)

    def _dsdt(self, s: Sequence[np.ndarray], a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Time derivative of the state ``s`` = (θ1, θ2, θ̇1, θ̇2), each ``(n,)``, under torques ``a`` ``(n,)``."""
        theta1, theta2, dtheta1, dtheta2 = s
        cos, sin, pi = np.cos, np.sin, np.pi
        m1 = self.LINK_MASS_1
        m2 = self.LINK_MASS_2
        l1 = self.LINK_LENGTH_1
        lc1 = self.LINK_COM_POS_1
        lc2 = self.LINK_COM_POS_2
        I1 = self.LINK_MOI
        I2 = self.LINK_MOI
        g = 9.8
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos(theta2)) + I1 + I2
        d2 = m2 * (lc2**2 + l1 * lc2 * cos(theta2)) + I2
        phi2 = m2 * lc2 * g * cos(theta1 + theta2 - pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * _pow2(dtheta2) * sin(theta2)
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin(theta2)
            + (m1 * lc1 + m2 * l1) * g * cos(theta1 - pi / 2)
            + phi2
        )
        ddtheta2 = (
            a + d2 / d1 * phi1 - m2 * l1 * lc2 * _pow2(dtheta1) * sin(theta2) - phi2
        ) / (m2 * lc2**2 + I2 - _pow2(d2) / d1)
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return dtheta1, dtheta2, ddtheta1, ddtheta2

    def _step_state(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y0 = self._state[:, idx]
        a = self.AVAIL_TORQUE[actions]
        t = [0, self.dt]  # rk4(self._dsdt, s_augmented, [0, self.dt]): one step
        dt = t[1] - t[0]
        dt2 = dt / 2.0
        k1 = self._dsdt(list(y0), a)
        k2 = self._dsdt([y0[j] + dt2 * k1[j] for j in range(4)], a)
        k3 = self._dsdt([y0[j] + dt2 * k2[j] for j in range(4)], a)
        k4 = self._dsdt([y0[j] + dt * k3[j] for j in range(4)], a)
        ns = [y0[j] + dt / 6.0 * (k1[j] + 2 * k2[j] + 2 * k3[j] + k4[j]) for j in range(4)]
        ns[0] = _wrap(ns[0], -np.pi, np.pi)
        ns[1] = _wrap(ns[1], -np.pi, np.pi)
        ns[2] = np.minimum(np.maximum(ns[2], -self.MAX_VEL_1), self.MAX_VEL_1)
        ns[3] = np.minimum(np.maximum(ns[3], -self.MAX_VEL_2), self.MAX_VEL_2)
        new = np.stack(ns)
        self._state[:, idx] = new
        terminated = -np.cos(new[0]) - np.cos(new[1] + new[0]) > 1.0
        reward = np.where(terminated, 0.0, -1.0)
        return self._obs(new), reward, terminated


def _wrap(x: np.ndarray, m: float, M: float) -> np.ndarray:
    """Acrobot's ``wrap``: shift by whole periods until ``m <= x <= M`` (the same subtractions)."""
    diff = M - m
    while (above := x > M).any():
        x = np.where(above, x - diff, x)
    while (below := x < m).any():
        x = np.where(below, x + diff, x)
    return x


class MountainCarVec(NativeVecEnv):
    """``gymnasium.envs.classic_control.mountain_car.MountainCarEnv``."""

    min_position = -1.2
    max_position = 0.6
    max_speed = 0.07
    goal_position = 0.5
    force = 0.001
    gravity = 0.0025

    def _reset_state(self, seeds: Sequence[int]) -> np.ndarray:
        rows = _uniform_rows(seeds, lambda rng: rng.uniform(low=-0.6, high=-0.4))
        self._state = np.zeros((2, len(seeds)))
        self._state[0] = rows
        return self._state.T.astype(np.float32)

    def _step_state(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        position, velocity = self._state[:, idx]
        velocity = velocity + ((actions - 1) * self.force + np.cos(3 * position) * (-self.gravity))
        velocity = np.clip(velocity, -self.max_speed, self.max_speed)
        position = position + velocity
        position = np.clip(position, self.min_position, self.max_position)
        velocity = np.where((position == self.min_position) & (velocity < 0), 0.0, velocity)
        terminated = (position >= self.goal_position) & (velocity >= self.kwargs.get("goal_velocity", 0))
        new = np.stack((position, velocity))
        self._state[:, idx] = new
        return new.T.astype(np.float32), np.full(idx.size, -1.0), terminated


class MountainCarContinuousVec(NativeVecEnv):
    """``gymnasium.envs.classic_control.continuous_mountain_car.Continuous_MountainCarEnv``.

    The reference's state is float64 before the first step and float32 after, and its arithmetic
    follows those dtypes (NumPy 2 promotion), so each step runs once per group of envs in the
    same phase.
    """

    min_action = -1.0
    max_action = 1.0
    min_position = -1.2
    max_position = 0.6
    max_speed = 0.07
    goal_position = 0.45
    power = 0.0015

    def _reset_state(self, seeds: Sequence[int]) -> np.ndarray:
        rows = _uniform_rows(seeds, lambda rng: rng.uniform(low=-0.6, high=-0.4))
        self._state = np.zeros((2, len(seeds)))  # float32 values once stepped
        self._state[0] = rows
        self._fresh = np.ones(len(seeds), bool)  # not stepped since reset: float64 state
        return self._state.T.astype(np.float32)

    def _step_state(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raw = actions[:, 0]
        actions = np.clip(actions, self.action_space.low, self.action_space.high)
        fresh = self._fresh[idx]
        obs = np.empty((idx.size, 2), np.float32)
        reward = np.empty(idx.size)
        terminated = np.empty(idx.size, bool)
        for group, dtype in ((fresh, np.float64), (~fresh, np.float32)):
            if not group.any():
                continue
            sel = idx[group]
            new, reward[group], terminated[group] = self._group_step(
                self._state[0, sel].astype(dtype), self._state[1, sel].astype(dtype), actions[group, 0], raw[group])
            self._state[:, sel] = new
            obs[group] = new.T
        self._fresh[idx] = False
        return obs, reward, terminated

    def _group_step(self, position: np.ndarray, velocity: np.ndarray, force: np.ndarray,
                    action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # velocity += force * self.power - 0.0025 * math.cos(3 * position): the Python float
        # 0.0025·cos(...) is cast to the action's dtype before the subtraction (a weak scalar)
        drift = (0.0025 * np.cos((3 * position).astype(np.float64))).astype(force.dtype, copy=False)
        velocity = velocity + (force * self.power - drift)
        velocity = np.where(velocity > self.max_speed, self.max_speed, velocity)
        velocity = np.where(velocity < -self.max_speed, -self.max_speed, velocity)
        position = position + velocity
        position = np.where(position > self.max_position, self.max_position, position)
        position = np.where(position < self.min_position, self.min_position, position)
        velocity = np.where((position == self.min_position) & (velocity < 0), 0, velocity)
        terminated = (position >= self.goal_position) & (velocity >= self.kwargs.get("goal_velocity", 0))
        reward = np.where(terminated, 100.0, 0.0) - _pow2(action.astype(np.float64)) * 0.1  # the unclipped action, as math.pow
        new = np.stack((position, velocity)).astype(np.float32)
        return new, reward, terminated


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool | np.bool_)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not _is_bool(v) and math.isfinite(float(v))


_CC = "gymnasium.envs.classic_control"
# entry point → (implementation, the env kwargs it supports and their check)
_NATIVE: dict[str, tuple[type[NativeVecEnv], dict[str, Callable[[Any], bool]]]] = {
    f"{_CC}.cartpole:CartPoleEnv": (CartPoleVec, {"sutton_barto_reward": _is_bool}),
    f"{_CC}.pendulum:PendulumEnv": (PendulumVec, {"g": _is_real}),
    f"{_CC}.acrobot:AcrobotEnv": (AcrobotVec, {}),
    f"{_CC}.mountain_car:MountainCarEnv": (MountainCarVec, {"goal_velocity": _is_real}),
    f"{_CC}.continuous_mountain_car:Continuous_MountainCarEnv": (MountainCarContinuousVec, {"goal_velocity": _is_real}),
}
_NEUTRAL_MAKE_KWARGS = {"disable_env_checker"}  # gym.make options that change no value


def native_env_ids() -> list[str]:
    """Registered Gymnasium ids that have a native implementation."""
    return sorted(k for k, s in gym.registry.items() if str(s.entry_point) in _NATIVE)


def make_native(env_id: str, env_kwargs: Mapping[str, Any] | None = None,
                max_episode_steps: int | None = None) -> NativeVecEnv | None:
    """A native batched version of ``gym.make(env_id, **env_kwargs)``, or ``None`` when there is none.

    ``None`` for ids without a native implementation and for any kwarg the implementation does
    not reproduce (the caller then uses Gymnasium). ``render_mode=None`` is accepted and ignored.
    ``max_episode_steps`` (here or in ``env_kwargs``, as ``gym.make`` takes it) replaces the
    registered time limit. The returned env has no envs until :meth:`NativeVecEnv.reset`.
    """
    kwargs = dict(env_kwargs or {})
    if "max_episode_steps" in kwargs:
        given = kwargs.pop("max_episode_steps")
        if max_episode_steps is not None and given != max_episode_steps:
            raise RlscapeError(
                f"max_episode_steps is given twice ({max_episode_steps} and env_kwargs {given}); pass it once"
            )
        max_episode_steps = given
    if max_episode_steps is not None and (
        not isinstance(max_episode_steps, numbers.Integral) or _is_bool(max_episode_steps) or max_episode_steps < 1
    ):
        raise RlscapeError(f"max_episode_steps must be a positive integer, got {max_episode_steps!r}")
    try:
        spec = gym.spec(env_id)
    except Exception:  # noqa: BLE001 - unknown or unregistered ids: not ours
        return None
    entry = _NATIVE.get(str(spec.entry_point))
    if entry is None or spec.additional_wrappers or getattr(spec, "apply_api_compatibility", False):
        return None
    cls, supported = entry
    for key in _NEUTRAL_MAKE_KWARGS:
        kwargs.pop(key, None)
    if kwargs.get("render_mode", "absent") is None:
        kwargs.pop("render_mode")
    merged = {**spec.kwargs, **kwargs}
    if any(k not in supported or not supported[k](v) for k, v in merged.items()):
        return None
    env = gym.make(env_id, **merged)
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if not isinstance(obs_space, gym.spaces.Box) or not isinstance(act_space, (gym.spaces.Discrete, gym.spaces.Box)):
        return None  # every native env has these spaces; anything else runs in gymnasium
    limit = spec.max_episode_steps if max_episode_steps is None else int(max_episode_steps)
    return cls(env_id, merged, obs_space, act_space, limit)
