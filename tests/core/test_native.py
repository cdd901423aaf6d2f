"""Native batched classic-control envs against Gymnasium's own envs, side by side.

Each case runs ``N`` ``gym.make`` reference envs and one :class:`NativeVecEnv` over several rounds
of complete episodes, stepping only the live envs as the evaluator does, with actions from a fixed
generator: random ones (continuous: drawn beyond the Box, then clipped, plus exact edges) mixed with
controllers that reach the goal, so both terminations and time-limit truncations happen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from rlscape.core.errors import RlscapeError
from rlscape.core.native import NativeVecEnv, _pow2, make_native, native_env_ids

Policy = Callable[[np.random.Generator, np.ndarray, np.ndarray, gym.spaces.Space], np.ndarray]


def _cartpole(rng: np.random.Generator, obs: np.ndarray, ids: np.ndarray, space: gym.spaces.Space) -> np.ndarray:
    """Even envs balance (a PD rule with 10 % random flips: long episodes), odd envs act at random."""
    balance = (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)
    flip = rng.random(len(obs)) < 0.1
    balance = np.where(flip, 1 - balance, balance)
    return np.where(ids % 2 == 0, balance, rng.integers(0, 2, len(obs)))


def _bang_bang_discrete(rng: np.random.Generator, obs: np.ndarray, ids: np.ndarray, space: gym.spaces.Space) -> np.ndarray:
    """MountainCar: push along the velocity (reaches the goal) in even envs, random in odd envs."""
    push = np.where(obs[:, 1] >= 0, 2, 0)
    return np.where(ids % 2 == 0, push, rng.integers(0, 3, len(obs)))


def _acrobot(rng: np.random.Generator, obs: np.ndarray, ids: np.ndarray, space: gym.spaces.Space) -> np.ndarray:
    """Acrobot: torque against the first joint's velocity (pumps energy, swings up in ~80 steps) or random."""
    pump = np.where(obs[:, 4] >= 0, 0, 2)
    return np.where(ids % 2 == 0, pump, rng.integers(0, 3, len(obs)))


def _continuous(velocity_col: int | None) -> Policy:
    """Random actions drawn 1.5× beyond the Box then clipped (many exactly on its edges) or, with
    ``velocity_col``, full force along that observed velocity in even envs (edge values too)."""

    def policy(rng: np.random.Generator, obs: np.ndarray, ids: np.ndarray, space: gym.spaces.Space) -> np.ndarray:
        low, high = space.low, space.high
        raw = rng.uniform(1.5 * low, 1.5 * high, size=(len(obs), *space.shape)).astype(np.float32)
        a = np.clip(raw, low, high)
        if velocity_col is not None:
            push = np.where(obs[:, velocity_col:velocity_col + 1] >= 0, high, low).astype(np.float32)
            a = np.where((ids % 2 == 0)[:, None], push, a)
        return a

    return policy


def _compare(env_id: str, kwargs: dict[str, Any], max_steps: int | None, policy: Policy, *, n: int = 10,
             rounds: int = 2, action_dtype: type | None = None) -> dict[str, float]:
    """Run both side by side; assert equality (≤1e-6); return counts and the largest difference."""
    native = make_native(env_id, kwargs, max_steps)
    assert isinstance(native, NativeVecEnv)
    make_kw = dict(kwargs) if max_steps is None else {**kwargs, "max_episode_steps": max_steps}
    refs = [gym.make(env_id, **make_kw) for _ in range(n)]
    assert native.observation_space == refs[0].observation_space
    assert native.action_space == refs[0].action_space
    rng = np.random.default_rng(12345)
    worst, worst_state, steps, n_term, n_trunc, lengths = 0.0, 0.0, 0, 0, 0, []
    for r in range(rounds):
        seeds = [int(s) for s in rng.integers(0, 2**31, n)]
        obs_ref = np.stack([e.reset(seed=s)[0] for e, s in zip(refs, seeds, strict=True)])
        obs = native.reset(seeds)
        assert obs.dtype == np.float32 and obs.shape == obs_ref.shape
        np.testing.assert_array_equal(obs, obs_ref)
        live = np.ones(n, bool)
        length = np.zeros(n, np.int64)
        while live.any():
            idx = np.flatnonzero(live)
            actions = policy(rng, obs[idx], idx, native.action_space)
            if action_dtype is not None:
                actions = actions.astype(action_dtype)
            o, rew, term, trunc = native.step(idx, actions)
            assert o.dtype == np.float32 and rew.dtype == np.float64 and term.dtype == bool and trunc.dtype == bool
            for j, i in enumerate(idx):
                o_r, r_r, te_r, tr_r, _ = refs[i].step(actions[j])
                assert (bool(term[j]), bool(trunc[j])) == (te_r, tr_r), f"round {r} env {i} step {length[i]}"
                worst = max(worst, float(np.max(np.abs(o[j].astype(np.float64) - o_r))), abs(float(rew[j]) - float(r_r)))
                assert worst <= 1e-6, f"round {r} env {i} step {length[i]}: obs {o[j]} vs {o_r}, reward {rew[j]} vs {r_r}"
                # the hidden float64 state too (observations are float32 and could hide a drift)
                state_ref = np.asarray(refs[i].unwrapped.state, dtype=np.float64)
                worst_state = max(worst_state, float(np.max(np.abs(native._state[:, i] - state_ref))))
            obs[idx] = o
            length[idx] += 1
            steps += idx.size
            n_term += int(term.sum())
            n_trunc += int(trunc.sum())
            live[idx] = ~(term | trunc)
        lengths.extend(length.tolist())
    return {"worst": worst, "worst_state": worst_state, "steps": steps, "terminated": n_term, "truncated": n_trunc, "max_len": max(lengths)}


CASES = [
    # id, kwargs, max_episode_steps, policy, expect terminations, expect truncations
    ("CartPole-v1", {}, None, _cartpole, True, True),
    ("CartPole-v0", {}, 40, _cartpole, True, True),
    ("CartPole-v1", {"sutton_barto_reward": True}, 30, _cartpole, True, True),
    ("Pendulum-v1", {}, None, _continuous(None), False, True),
    ("Pendulum-v1", {"g": 9.81}, 60, _continuous(2), False, True),
    ("Acrobot-v1", {}, 100, _acrobot, True, True),
    ("MountainCar-v0", {}, None, _bang_bang_discrete, True, True),
    ("MountainCar-v0", {"goal_velocity": 0.01}, None, _bang_bang_discrete, True, True),
    ("MountainCarContinuous-v0", {}, 200, _continuous(1), True, True),
    ("MountainCarContinuous-v0", {"goal_velocity": 0.02, "render_mode": None}, 160, _continuous(1), True, True),
]


@pytest.mark.parametrize(("env_id", "kwargs", "max_steps", "policy", "terminates", "truncates"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_matches_gymnasium(env_id: str, kwargs: dict, max_steps: int | None, policy: Policy,
                           terminates: bool, truncates: bool) -> None:
    stats = _compare(env_id, kwargs, max_steps, policy)
    assert (stats["terminated"] > 0) == terminates, stats
    assert (stats["truncated"] > 0) == truncates, stats
    limit = max_steps or gym.spec(env_id).max_episode_steps
    assert stats["max_len"] == limit  # truncation happens exactly at the time limit
    assert stats["worst"] == 0.0 and stats["worst_state"] == 0.0, f"not bit-identical (still within 1e-6): {stats}"


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "MountainCarContinuous-v0"])
def test_float64_actions(env_id: str) -> None:
    """float64 actions (not what the evaluator produces) still follow the reference's promotion."""
    stats = _compare(env_id, {}, 120, _continuous(1 if env_id.startswith("Mountain") else 2), n=6, rounds=1,
                     action_dtype=np.float64)
    assert stats["truncated"] > 0 and stats["worst"] <= 1e-6


def test_pow2_is_the_scalar_power() -> None:
    """Squares equal NumPy scalar ``x ** 2`` (libm pow), not just ``x * x``, which differ at times."""
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        x = rng.uniform(-30, 30, 20_000).astype(dtype)
        ref = np.array([v**2 for v in x], dtype=dtype)
        np.testing.assert_array_equal(_pow2(x), ref)


def test_state_count_follows_reset_and_only_idx_move() -> None:
    env = make_native("CartPole-v1")
    assert env is not None
    assert env.reset([1, 2, 3]).shape == (3, 4) and env.num_envs == 3
    before = env._state.copy()
    env.step(np.array([1]), np.array([0]))
    assert np.array_equal(env._state[:, [0, 2]], before[:, [0, 2]]) and not np.array_equal(env._state[:, 1], before[:, 1])
    assert env.reset(list(range(7))).shape == (7, 4) and env.num_envs == 7


def test_stepping_an_ended_env_is_refused() -> None:
    env = make_native("CartPole-v1", max_episode_steps=1)
    assert env is not None
    env.reset([0, 1])
    _, _, _, trunc = env.step(np.array([0]), np.array([1]))
    assert trunc.tolist() == [True]
    with pytest.raises(ValueError, match="reset it first"):
        env.step(np.array([0, 1]), np.array([1, 1]))
    with pytest.raises(ValueError, match="sorted"):
        env.step(np.array([1, 1]), np.array([1, 1]))


@pytest.mark.parametrize(("env_id", "kwargs"), [
    ("CartPole-v1", {"render_mode": "rgb_array"}),
    ("CartPole-v1", {"sutton_barto_reward": "yes"}),
    ("Pendulum-v1", {"g": float("nan")}),
    ("Pendulum-v1", {"goal_velocity": 0.1}),
    ("Acrobot-v1", {"book_or_nips": "nips"}),
    ("MountainCarContinuous-v0", {"power": 1.0}),
    ("LunarLander-v3", {}),
    ("NoSuchEnv-v0", {}),
    ("CartPole-v9", {}),
])
def test_unsupported_gives_none(env_id: str, kwargs: dict) -> None:
    assert make_native(env_id, kwargs) is None


def test_supported_ids_and_limits() -> None:
    ids = native_env_ids()
    for env_id in ("CartPole-v0", "CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0"):
        assert env_id in ids
        env = make_native(env_id, {"render_mode": None})
        assert env is not None and env.max_episode_steps == gym.spec(env_id).max_episode_steps
    assert make_native("CartPole-v1", {"max_episode_steps": 7}).max_episode_steps == 7
    with pytest.raises(RlscapeError, match="positive integer"):
        make_native("CartPole-v1", max_episode_steps=0)
    with pytest.raises(RlscapeError, match="given twice"):
        make_native("CartPole-v1", {"max_episode_steps": 7}, max_episode_steps=8)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0"])
def test_empty_step_changes_nothing(env_id: str) -> None:
    env = make_native(env_id)
    assert env is not None
    env.reset([3, 4])
    before = env._state.copy()
    shape = (0,) if isinstance(env.action_space, gym.spaces.Discrete) else (0, *env.action_space.shape)
    obs, rew, term, trunc = env.step(np.array([], np.int64), np.zeros(shape, env.action_space.dtype))
    assert obs.shape == (0, env.observation_space.shape[0]) and rew.shape == term.shape == trunc.shape == (0,)
    np.testing.assert_array_equal(env._state, before)
