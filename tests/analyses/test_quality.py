"""Gradient-estimate quality against the closed-form linear-Gaussian task (methods.md §7), and value error."""

from __future__ import annotations

import numpy as np
import pytest

from rlscape.analyses.quality import cosine_summary, gae, gradient_quality, identity_gap, value_error
from rlscape.core.errors import RlscapeError
from rlscape.core.pg import reward_to_go
from rlscape.core.policy import load_checkpoint
from tests.analyses import linear_gaussian as lg


def _estimator_variance(w: np.ndarray, b: np.ndarray, n: int = 2_000_000) -> tuple[np.ndarray, float]:
    """(exact ∇J flat in [W b] row order, tr Σ of one sample ξ = ∇log π(a|s)·r) by plain numpy Monte Carlo."""
    rng = np.random.default_rng(123)
    s = lg.M + np.sqrt(lg.V) * rng.standard_normal((n, 2))
    x = np.c_[s, np.ones(n)]
    mu = x @ np.c_[w, b].T
    a = mu + lg.SIGMA * rng.standard_normal((n, 2))
    r = -((a - lg.C) ** 2).sum(1)
    xi = (((a - mu) / lg.SIGMA**2)[:, :, None] * x[:, None, :] * r[:, None, None]).reshape(n, -1)
    ex = lg.exact_gradient(w, b)
    g = np.c_[ex["lin.weight"], ex["lin.bias"]].ravel()
    return g, float((xi**2).sum(1).mean() - g @ g)


@pytest.fixture(scope="module")
def lg_quality():
    agent, w, b = lg.agent()
    ds = gradient_quality(agent, samples=[10, 100, 1000], repeats=30, true_samples=40_000, baseline="none", seed=0)
    return ds, w, b


def test_cosines_follow_the_analytic_variance(lg_quality):
    ds, w, b = lg_quality
    g, tr = _estimator_variance(w, b)
    n = ds["samples"].values
    rho = g @ g / (g @ g + tr / n)  # E[cos(ĝ1, ĝ2)] ≈ ‖g‖²/(‖g‖² + tr Σ/N): 0.12, 0.58, 0.93
    pw = ds["pairwise_cosine_mean"].values
    # 30 repeats (435 pairs, correlated): the standard error of the mean pairwise cosine is ≈ 0.05 at
    # N = 100 and < 0.01 at N = 1000; the ratio approximation itself is off by < 0.02 at P = 6
    assert abs(pw[1] - rho[1]) < 0.15, (pw, rho)
    assert abs(pw[2] - rho[2]) < 0.03, (pw, rho)
    assert pw[0] < pw[1] < pw[2]
    # the bootstrap CI brackets the mean and the prediction at every N
    assert np.all(ds["pairwise_cosine_low"].values <= pw) and np.all(pw <= ds["pairwise_cosine_high"].values)
    assert np.all((ds["pairwise_cosine_low"].values <= rho) & (rho <= ds["pairwise_cosine_high"].values)), (pw, rho)
    # one-step episodes: exactly N pairs per estimate
    assert np.all(ds["pairs"].values == n[:, None])


def test_truth_converges_to_the_exact_gradient_and_the_identity_holds(lg_quality):
    ds, w, b = lg_quality
    ex = lg.exact_gradient(w, b)
    exact = np.concatenate([ex["lin.weight"].ravel(), ex["lin.bias"].ravel()])  # FlatPolicy order: weight, bias
    t = ds["true_gradient"].values
    cos = t @ exact / (np.linalg.norm(t) * np.linalg.norm(exact))
    assert cos > 0.995, cos  # tr Σ/‖g‖² ≈ 72, so at 40 000 pairs E[cos] ≈ 1 − 72/(2·40 000) ≈ 0.999
    # unbiased estimator: E[cos(ĝ, g)]² ≈ E[cos(ĝ1, ĝ2)]; tolerance 0.08 ≈ 2 standard errors at N = 100
    gap = identity_gap(ds)
    assert np.all(np.abs(gap) < 0.08), gap


def test_pairwise_bootstrap_ignores_self_pairs():
    rng = np.random.default_rng(0)
    est = rng.standard_normal((10, 50))  # independent directions: mean pairwise cosine ≈ 0 (± 1/√50)
    s = cosine_summary(est, rng.standard_normal(50))
    assert abs(s["pairwise_mean"]) < 0.05
    assert s["pairwise_low"] < s["pairwise_mean"] < s["pairwise_high"] < 0.1  # duplicated picks (cos = 1) are not counted
    assert np.isnan(np.diag(s["pairwise"])).all()


def test_gae_with_lambda_one_is_return_minus_value():
    r = np.array([1.0, 2.0, 3.0, 0.5, 0.5])
    v = np.array([0.3, -0.2, 0.7, 1.0, 0.1])
    lengths = np.array([3, 2])
    np.testing.assert_allclose(gae(r, v, lengths, 0.9, 1.0), reward_to_go(r, lengths, 0.9) - v, atol=1e-12)
    # λ = 0: the one-step TD error
    np.testing.assert_allclose(gae(r, v, lengths, 0.9, 0.0)[:2], r[:2] + 0.9 * v[1:3] - v[:2], atol=1e-12)


def test_bad_input_is_one_line_error():
    agent, _, _ = lg.agent()
    with pytest.raises(RlscapeError, match="critic"):
        gradient_quality(agent, samples=[10], repeats=2, true_samples=10, baseline="critic")
    with pytest.raises(RlscapeError, match="--repeats"):
        gradient_quality(agent, samples=[10], repeats=1, true_samples=10, baseline="none")
    with pytest.raises(RlscapeError, match="--true-samples"):
        gradient_quality(agent, samples=[100], repeats=2, true_samples=10, baseline="none")
    with pytest.raises(RlscapeError, match="--estimator"):
        gradient_quality(agent, estimator="bogus", baseline="none")
    with pytest.raises(RlscapeError, match="PPO, A2C or TRPO"):
        gradient_quality(agent, estimator="update", baseline="none")
    with pytest.raises(RlscapeError, match="value-error"):
        value_error(agent)


def test_value_error_on_a_ppo_checkpoint(cartpole_ppo):
    agent = load_checkpoint(cartpole_ppo)
    ds = value_error(agent, episodes=8, seed=0)
    assert int(ds["states"]) > 8 and 0 <= int(ds["excluded"]) < int(ds["states"])
    assert np.isfinite(float(ds["mre"])) and float(ds["mre"]) >= 0
    again = value_error(agent, episodes=8, seed=0)
    assert float(again["mre"]) == float(ds["mre"])  # seeded


def test_critic_and_true_baselines_run_on_ppo(cartpole_ppo):
    agent = load_checkpoint(cartpole_ppo)
    for baseline, estimator in (("critic", "reinforce"), ("true", "reinforce"), ("critic", "gae"), ("critic", "update")):
        ds = gradient_quality(agent, samples=[100, 300], repeats=3, true_samples=1000, estimator=estimator, baseline=baseline,
                              seed=0)
        assert np.all(ds["pairs"].values >= ds["samples"].values[:, None])
        assert np.all(np.abs(ds["true_cosine"].values) <= 1 + 1e-9)


def test_surrogate_equals_sb3_ppo_loss_on_the_same_batch(cartpole_ppo):
    """At θ0 + 3·d (d a unit random direction), the surrogate equals −(SB3's PPO policy loss) computed
    with SB3's own ``evaluate_actions`` log-probabilities on the same batch and advantages."""
    import torch
    from stable_baselines3 import PPO

    from rlscape.analyses.surrogate import batch_advantages, surrogate_objective
    from rlscape.core.pg import FlatPolicy
    from rlscape.core.trajectories import collect

    agent = load_checkpoint(cartpole_ppo)
    traj = collect(agent, 6, seed=0, stream="direction")
    adv = batch_advantages(agent, traj, agent.gamma, 0.95, True)
    fp = FlatPolicy(agent, "actor")
    d = torch.from_numpy(np.random.default_rng(0).standard_normal(fp.size)).to(fp.dtype)
    theta = fp.theta + 3.0 * d / d.norm()
    ours = surrogate_objective(fp, traj, adv, torch.stack([fp.theta, theta]), clip=0.2)

    model = PPO.load(str(cartpole_ppo / "model.zip"), device="cpu")
    obs = torch.from_numpy(traj.obs)
    actions = torch.from_numpy(traj.actions)
    with torch.no_grad():
        _, old, _ = model.policy.evaluate_actions(obs, actions)
        table = dict(model.policy.named_parameters())
        for name, value in fp.to_named(theta).items():
            table[name].copy_(torch.from_numpy(value))
        _, new, _ = model.policy.evaluate_actions(obs, actions)
    a = torch.from_numpy(adv).float()
    ratio = torch.exp(new - old)  # SB3 PPO.train(): policy_loss = −mean(min(Â·r, Â·clamp(r, 1 − ε, 1 + ε)))
    sb3_loss = -torch.min(a * ratio, a * torch.clamp(ratio, 0.8, 1.2)).mean()
    assert abs(ours[0] - float(a.mean())) < 1e-6  # at θ0 the ratio is 1: the mean normalised advantage (≈ 0)
    moved = abs(ours[1] - ours[0])
    assert moved > 1e-3, ours  # the perturbation moved the surrogate: the check is not vacuous
    # SB3 computes in float32: its log-probabilities carry ~1e-7 relative error per step
    assert abs(ours[1] - (-float(sb3_loss))) < 1e-3 * moved, (ours, float(sb3_loss))


def test_update_estimator_is_sb3s_own_policy_loss_gradient(cartpole_ppo):
    """``--estimator update`` on a batch = −∇ of SB3's PPO policy loss at θ (ratio 1) on the same batch,
    computed with SB3's ``evaluate_actions`` and autograd: normalised GAE advantages, mean over pairs."""
    import torch
    from stable_baselines3 import PPO

    from rlscape.analyses.quality import advantages, chunk_gradients, update_weights
    from rlscape.core.pg import FlatPolicy
    from rlscape.core.trajectories import collect

    agent = load_checkpoint(cartpole_ppo)
    traj = collect(agent, 6, seed=0, stream="direction")
    gae_adv = advantages(agent, traj, "update", "critic", agent.gamma, 0.95, None)
    bounds = [(0, traj.n_episodes)]
    ours = chunk_gradients(agent, traj, update_weights(traj, gae_adv, bounds, normalize=True), bounds)[0]

    model = PPO.load(str(cartpole_ppo / "model.zip"), device="cpu")
    obs, actions = torch.from_numpy(traj.obs), torch.from_numpy(traj.actions)
    a = torch.from_numpy((gae_adv - gae_adv.mean()) / (gae_adv.std() + 1e-8)).float()
    _, log_prob, _ = model.policy.evaluate_actions(obs, actions)
    ratio = torch.exp(log_prob - log_prob.detach())
    loss = -torch.min(a * ratio, a * torch.clamp(ratio, 0.8, 1.2)).mean()  # SB3 PPO.train()'s policy loss
    model.policy.zero_grad()
    loss.backward()
    fp = FlatPolicy(agent, "actor")
    for name, g in fp.to_named(torch.from_numpy(ours).to(fp.dtype)).items():
        want = -model.policy.get_parameter(name).grad.double().numpy()
        np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-6 * float(np.abs(want).max()), err_msg=name)
    assert np.linalg.norm(ours) > 0
    # without normalisation (A2C) the weights are the plain advantages per pair
    plain = chunk_gradients(agent, traj, update_weights(traj, gae_adv, bounds, normalize=False), bounds)[0]
    assert not np.allclose(plain / np.linalg.norm(plain), ours / np.linalg.norm(ours))
