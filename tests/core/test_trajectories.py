"""Trajectory batches: the evaluator's episodes exactly, independent of batching and of the env
engine, an independent direction stream, and rewards in training units."""

from __future__ import annotations

import numpy as np
import pytest

from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import Budget, PopulationEvaluator, reset_seed
from rlscape.core.policy import load_checkpoint
from rlscape.core.trajectories import DIRECTION_EPISODES_STREAM, collect, collect_steps, stream_seeds


def _evaluate(agent, episodes: int, seed: int):
    ev = PopulationEvaluator(agent, agent.parameters("actor"), [], seed=seed, deterministic=False)
    try:
        return ev.evaluate(np.zeros((1, 0)), Budget(episodes=episodes))
    finally:
        ev.close()


@pytest.mark.parametrize(("algo", "env_id"), [("ppo", "CartPole-v1"), ("ppo", "Pendulum-v1"), ("sac", "Pendulum-v1")])
def test_evaluation_stream_is_the_evaluators_episodes(untrained, algo, env_id):
    """Same reset seeds, same action noise, same forward: the evaluator's returns and lengths, bit for bit."""
    agent = load_checkpoint(untrained(algo, env_id), env_id)
    traj = collect(agent, 5, seed=7)
    res = _evaluate(agent, 5, seed=7)
    np.testing.assert_array_equal(traj.returns, res.returns[0])
    np.testing.assert_array_equal(traj.lengths, res.lengths[0])
    assert traj.n_steps == traj.lengths.sum() == len(traj.obs) == len(traj.actions) == len(traj.train_rewards)
    # packed episode by episode, in time order
    np.testing.assert_array_equal(traj.episode, np.repeat(np.arange(5), traj.lengths))
    np.testing.assert_array_equal(traj.t, np.concatenate([np.arange(n) for n in traj.lengths]))


def test_batching_and_env_engine_change_nothing(cartpole_ppo):
    agent = load_checkpoint(cartpole_ppo)
    a = collect(agent, 9, seed=2)
    b = collect(agent, 9, seed=2, max_envs=4)  # three rectangles
    c = collect(agent, 9, seed=2, generic=True)  # Gymnasium envs one by one
    later = collect(agent, 4, seed=2, first_episode=5)
    for other in (b, c):
        for f in ("obs", "actions", "rewards", "episode", "t", "returns", "lengths", "episode_ids"):
            np.testing.assert_array_equal(getattr(a, f), getattr(other, f), err_msg=f)
    np.testing.assert_array_equal(later.returns, a.returns[5:])
    np.testing.assert_array_equal(later.episode_ids, np.arange(5, 9))
    sub = a.subset(np.arange(5, 9))
    np.testing.assert_array_equal(sub.obs, later.obs)
    np.testing.assert_array_equal(sub.episode, later.episode)


def test_direction_episodes_are_independent_of_evaluation_episodes(cartpole_ppo):
    """methods.md §4: episodes that estimate a direction never are the ones that evaluate along it."""
    agent = load_checkpoint(cartpole_ppo)
    seed, n = 3, 200
    evaluation = {reset_seed(seed, e) for e in range(n)}
    direction = {reset_seed(seed, e, DIRECTION_EPISODES_STREAM) for e in range(n)}
    assert len(evaluation) == len(direction) == n and not evaluation & direction
    d = collect(agent, 6, seed, stream="direction")
    e = collect(agent, 6, seed, stream="evaluation")
    assert d.stream == "direction" and e.stream == "evaluation"
    assert not np.array_equal(d.obs[d.t == 0], e.obs[e.t == 0])  # other initial states
    first = agent.env.make().reset(seed=reset_seed(seed, 0, DIRECTION_EPISODES_STREAM))[0]
    np.testing.assert_array_equal(d.obs[0], first)
    assert "0xde" in stream_seeds(seed, "direction")["env_reset"] and "0xde" not in stream_seeds(seed, "evaluation")["env_reset"]
    with pytest.raises(RlscapeError, match="episode stream"):
        collect(agent, 2, seed, stream="test")


def test_observations_and_rewards_in_the_networks_units(tmp_path):
    """Frozen VecNormalize: observations normalised as the network saw them; raw rewards, and
    training-unit rewards clip(r / sqrt(var + eps), ±clip)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=0), norm_obs=True, norm_reward=True, clip_reward=3.0)
    venv.obs_rms.mean[:] = [0.5, -0.2, 0.1]
    venv.obs_rms.var[:] = [0.25, 2.0, 4.0]
    venv.ret_rms.var = np.array(16.0)
    PPO("MlpPolicy", venv, seed=0, device="cpu").save(tmp_path / "model.zip")
    venv.save(str(tmp_path / "vecnormalize.pkl"))
    agent = load_checkpoint(tmp_path, "Pendulum-v1")
    traj = collect(agent, 3, seed=1)
    raw0 = agent.env.make().unwrapped
    raw_obs, _ = raw0.reset(seed=reset_seed(1, 0))
    np.testing.assert_allclose(traj.obs[0], (raw_obs - venv.obs_rms.mean) / np.sqrt(venv.obs_rms.var + 1e-8), rtol=1e-5)
    assert traj.rewards_normalized and np.all(traj.rewards <= 0) and traj.rewards.min() < -3 * 4  # raw Pendulum costs
    # SB3's VecNormalize.normalize_reward on its float32 reward buffer: the same numbers, cast to float32
    expected = np.clip(traj.rewards / np.sqrt(16.0 + 1e-8), -3.0, 3.0).astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(traj.train_rewards, expected)
    np.testing.assert_allclose(traj.returns, [traj.rewards[traj.episode == i].sum() for i in range(3)], rtol=1e-12)


def test_without_reward_normalisation_training_units_are_raw(cartpole_ppo):
    traj = collect(load_checkpoint(cartpole_ppo), 2, seed=0)
    assert not traj.rewards_normalized and np.array_equal(traj.train_rewards, traj.rewards)


def test_a_steps_budget_keeps_the_evaluators_episodes(cartpole_ppo):
    """Episodes until ≥ steps, the last one finished: the same episodes as collecting them directly."""
    agent = load_checkpoint(cartpole_ppo)
    traj = collect_steps(agent, 700, seed=4, stream="direction")
    before = np.cumsum(traj.lengths) - traj.lengths
    assert traj.n_steps >= 700 and before[-1] < 700  # the last episode started before the budget ran out
    direct = collect(agent, traj.n_episodes, seed=4, stream="direction")
    for f in ("obs", "actions", "rewards", "episode", "t", "returns", "lengths", "episode_ids"):
        np.testing.assert_array_equal(getattr(traj, f), getattr(direct, f), err_msg=f)


def test_a_steps_budget_does_not_depend_on_its_rounds(cartpole_ppo):
    """A large budget starts with a wide first round (one episode per 2,000 steps); a narrow
    ``max_envs`` caps it at 16: other rounds, the same episodes."""
    agent = load_checkpoint(cartpole_ppo)
    wide = collect_steps(agent, 40_000, seed=2)
    narrow = collect_steps(agent, 40_000, seed=2, max_envs=16)
    for f in ("obs", "actions", "rewards", "episode", "t", "returns", "lengths", "episode_ids"):
        np.testing.assert_array_equal(getattr(wide, f), getattr(narrow, f), err_msg=f)
