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


def test_slope_along_the_gradient_direction_is_measured_out_of_sample():
    """methods.md §4: the gradient behind ``--direction gradient`` comes from the direction episode
    stream, so the slope the evaluator measures along it (same seed) agrees with the exact
    ∇J·d. Mean over 400 seeds of (central-difference slope − exact slope), N = E = 8 episodes:
    −0.05 ± 0.07 now; the evaluator's own episodes gave +0.41 ± 0.08 (5.1σ; +7 % of the slope ≈ 6.1) before."""
    from rlscape.analyses.surface import make_directions
    from rlscape.core.spec import EvalSpec, SurfaceSpec, validated

    agent, w, b = lg.agent()
    theta = agent.parameters("actor")
    exact_g = lg.exact_gradient(w, b)
    a, n = 0.1, 8
    diffs = []
    for seed in range(400):
        spec = validated(SurfaceSpec, kind="line", checkpoint="<in-memory>", grid=(2,), ranges=((-a, a),), directions=("gradient",),
                         scale="unit", gradient_episodes=n, evaluation=EvalSpec.from_budget(n, None, seed, False))
        (d,), _ = make_directions(spec, agent, theta)
        assert d.meta["episode_stream"] == "direction" and "0xde" in d.meta["episode_seeds"]["env_reset"]
        ev = PopulationEvaluator(agent, theta, [d.values], seed=seed, deterministic=False)
        try:
            r = ev.evaluate(np.array([[-a], [a]]), Budget(episodes=n)).returns
        finally:
            ev.close()
        # J is quadratic: the central difference of the common-random-number returns is unbiased for ∇J·d
        diffs.append(((r[1] - r[0]) / (2 * a)).mean() - sum(float(np.sum(exact_g[k] * d.values[k])) for k in theta))
    diffs = np.array(diffs)
    se = diffs.std(ddof=1) / np.sqrt(len(diffs))
    assert abs(diffs.mean()) < 3 * se, (diffs.mean(), se)


def test_runs_record_the_direction_episode_stream(cartpole_ppo, tmp_path):
    import json

    from rlscape.analyses.gradient import run_gradient
    from rlscape.analyses.surface import line
    from rlscape.core.directions import load_direction

    agent, _, _ = lg.agent()
    line(agent, direction="gradient", points=2, episodes=2, seed=5, out=tmp_path / "line", workers=1, progress=False)
    seeds = json.loads((tmp_path / "line" / "run.json").read_text())["seeds"]
    assert seeds["direction_episodes"]["env_reset"] == "SeedSequence([5, 0xde, 0x5e, episode]).generate_state(1)[0]"
    assert seeds["env_reset"] == "SeedSequence([5, 0x5e, episode]).generate_state(1)[0]"
    run_gradient(cartpole_ppo, tmp_path / "g", episodes=4, n_batches=2, seed=5, progress=False)
    seeds = json.loads((tmp_path / "g" / "run.json").read_text())["seeds"]
    assert "0xde" in seeds["direction_episodes"]["env_reset"]
    d = load_direction(tmp_path / "g" / "directions" / "gradient.npz", load_checkpoint(cartpole_ppo).parameters("actor"))
    assert d.meta["episode_stream"] == "direction"


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
