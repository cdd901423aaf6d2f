"""Policy gradients against truth: the closed-form linear-Gaussian task, SB3's own log-probabilities,
the evaluator's own episodes, and SB3's own update step."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from rlscape.analyses.gradient import estimate_gradient, update_step
from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import Budget, PopulationEvaluator
from rlscape.core.pg import FlatPolicy, log_prob, reinforce
from rlscape.core.policy import load_checkpoint
from rlscape.core.trajectories import collect
from tests.analyses import linear_gaussian as lg


def _flat(d: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    return np.concatenate([np.asarray(d[n], np.float64).ravel() for n in names])


def test_reinforce_converges_to_the_exact_gradient():
    agent, w, b = lg.agent()
    exact = _flat(lg.exact_gradient(w, b), ["lin.weight", "lin.bias"])
    est = estimate_gradient(agent, episodes=6000, seed=0)
    g = _flat(est.values, ["lin.weight", "lin.bias"])
    cos = g @ exact / (np.linalg.norm(g) * np.linalg.norm(exact))
    assert cos > 0.99, cos
    # the standard error is honest: the error is within a few standard errors
    assert np.linalg.norm(g - exact) < 3 * est.stderr
    assert est.stderr < 0.1 * np.linalg.norm(exact)


def test_standard_error_shrinks_like_one_over_sqrt_n():
    agent, _, _ = lg.agent()
    small = reinforce(agent, collect(agent, 400, seed=1))
    large = reinforce(agent, collect(agent, 6400, seed=2))
    ratio = small.stderr / large.stderr
    assert 2.5 < ratio < 6.5, ratio  # √16 = 4


def test_same_seed_same_gradient_other_seed_differs():
    agent, _, _ = lg.agent()
    a, b, c = (estimate_gradient(agent, episodes=50, seed=s).values for s in (3, 3, 4))
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert not all(np.array_equal(a[n], c[n]) for n in a)


def test_batches_are_the_evaluators_episodes(cartpole_ppo):
    """Rollouts sample exactly as the evaluator does (same reset seeds and action noise)."""
    agent = load_checkpoint(cartpole_ppo)
    traj = collect(agent, 6, seed=7)
    base = agent.parameters("actor")
    ev = PopulationEvaluator(agent, base, [], seed=7, deterministic=False)
    try:
        res = ev.evaluate(np.zeros((1, 0)), Budget(episodes=6))
    finally:
        ev.close()
    np.testing.assert_array_equal(traj.returns, res.returns[0])
    np.testing.assert_array_equal(traj.lengths, res.lengths[0])


@pytest.mark.parametrize(("algo", "env_id"), [("ppo", "CartPole-v1"), ("ppo", "Pendulum-v1"), ("sac", "Pendulum-v1")])
def test_log_prob_is_the_agents_own(untrained, algo, env_id):
    agent = load_checkpoint(untrained(algo, env_id), env_id)
    traj = collect(agent, 2, seed=0)
    from stable_baselines3 import PPO, SAC

    model = (PPO if algo == "ppo" else SAC).load(untrained(algo, env_id), device="cpu")
    obs = torch.from_numpy(traj.obs)
    with torch.no_grad():
        ours = log_prob(agent, agent.head(obs), torch.from_numpy(traj.actions))
        if algo == "ppo":
            theirs = model.policy.get_distribution(obs).log_prob(torch.from_numpy(traj.actions))
        else:
            mean, log_std, kw = model.actor.get_action_dist_params(obs)
            dist = model.actor.action_dist.proba_distribution(mean, log_std, **kw)
            u = torch.from_numpy(traj.actions)
            theirs = dist.log_prob(torch.tanh(u), gaussian_actions=u)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)


def test_deterministic_policies_are_refused_with_a_hint(untrained):
    agent = load_checkpoint(untrained("dqn", "CartPole-v1"), "CartPole-v1")
    with pytest.raises(RlscapeError, match="--kind update"):
        estimate_gradient(agent, episodes=2)


def test_update_step_is_sb3s_own_and_leaves_the_model_alone(cartpole_ppo):
    zip_path = cartpole_ppo / "model.zip"
    digest = hashlib.sha1(zip_path.read_bytes()).hexdigest()
    agent = load_checkpoint(cartpole_ppo)
    before = agent.parameters("all")
    est = update_step(agent, cartpole_ppo, seed=0, n_batches=2)
    assert hashlib.sha1(zip_path.read_bytes()).hexdigest() == digest
    after = agent.parameters("all")
    assert all(np.array_equal(before[n], after[n]) for n in before)
    assert set(est.values) == set(FlatPolicy(agent, "actor").names)
    assert 0 < est.norm < 10 and np.isfinite(est.stderr)


def test_update_step_off_policy_uses_the_saved_replay_buffer(tmp_path):
    from stable_baselines3 import SAC

    # learning_starts > steps: the buffer fills without any (slow) training
    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=1000, buffer_size=500, batch_size=32, seed=0, device="cpu")
    model.learn(64)
    model.save(tmp_path / "model.zip")
    agent = load_checkpoint(tmp_path, "Pendulum-v1")
    with pytest.raises(RlscapeError, match="replay buffer"):
        update_step(agent, tmp_path)
    model.save_replay_buffer(tmp_path / "replay_buffer.pkl")
    est = update_step(agent, tmp_path, n_batches=2)
    assert est.norm > 0 and all(n.startswith("actor.") for n in est.values)
