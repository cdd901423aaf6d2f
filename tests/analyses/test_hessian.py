"""The policy-Hessian operator against truth: a dense reference Hessian and the closed-form
linear-Gaussian task (the spectral algorithms on known matrices: tests/core/test_linalg.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlscape.core.errors import RlscapeError
from rlscape.core.linalg import lanczos
from rlscape.core.pg import FlatPolicy, PolicyHessian, batch_tensors, leave_one_out
from rlscape.core.policy import load_checkpoint
from rlscape.core.trajectories import Trajectories, collect
from tests.analyses import linear_gaussian as lg


def _tiny_categorical_agent():
    import rlscape

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    return rlscape.Agent.from_torch(net, _categorical, "CartPole-v1")


def _categorical(net, obs):
    return torch.distributions.Categorical(logits=net(obs))


def test_hvp_matches_a_dense_reference_hessian():
    """H = (1/N)[Jᵀ diag(A) J + ∇²(Σ A_τ log P_τ)], built densely with torch.autograd.functional."""
    agent = _tiny_categorical_agent()
    traj = collect(agent, 12, seed=0)
    op = PolicyHessian(agent, traj)
    fp = FlatPolicy(agent)
    obs, actions, ep = batch_tensors(traj, fp.dtype)
    A = torch.from_numpy(traj.returns - leave_one_out(traj.returns))

    def log_p(theta):
        return torch.zeros(traj.n_episodes, dtype=theta.dtype).index_add(0, ep, fp.step_log_probs(theta, obs, actions))

    J = torch.autograd.functional.jacobian(log_p, fp.theta)
    H2 = torch.autograd.functional.hessian(lambda t: (A * log_p(t)).sum(), fp.theta)
    dense = ((J.T * A) @ J + H2).numpy() / traj.n_episodes
    ours = np.stack([op.matvec(e) for e in np.eye(op.size)], axis=1)
    np.testing.assert_allclose(ours, dense, rtol=1e-9, atol=1e-9 * np.abs(dense).max())


@pytest.mark.parametrize("mode", ["autograd", "functorch"])
def test_hvp_is_symmetric_on_its_fixed_batch(cartpole_ppo, mode):
    agent = load_checkpoint(cartpole_ppo)
    op = PolicyHessian(agent, collect(agent, 4, seed=0), mode=mode)
    assert op.mode == mode
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(op.size), rng.standard_normal(op.size)
    uhv, vhu = u @ op.matvec(v), v @ op.matvec(u)
    assert abs(uhv - vhu) <= 1e-4 * max(abs(uhv), 1.0)  # float32 policy: rounding only
    np.testing.assert_array_equal(op.matvec(v), op.matvec(v))  # a fixed operator


def test_extreme_eigenvalues_converge_to_the_closed_form():
    """The Hessian of J is −2 E[xxᵀ] ⊗ I whatever θ; near the optimum the estimator's variance is lowest."""
    w, b = lg.optimal_parameters()
    agent, _, _ = lg.agent(w + 0.05, b - 0.05)
    op = PolicyHessian(agent, collect(agent, 20000, seed=0))
    rng = np.random.default_rng(1)
    u, v = rng.standard_normal(6), rng.standard_normal(6)
    assert abs(u @ op.matvec(v) - v @ op.matvec(u)) < 1e-10 * np.abs(u @ op.matvec(v))
    exact = lg.exact_hessian_eigenvalues()
    lam_max = lanczos(op, 1, "LA", seed=0).values[0]
    lam_min = lanczos(op, 1, "SA", seed=0).values[0]
    assert abs(lam_max - exact[-1]) < 0.1 * abs(exact[-1]), (lam_max, exact)
    assert abs(lam_min - exact[0]) < 0.1 * abs(exact[0]), (lam_min, exact)


def test_hessian_is_averaged_over_episodes_not_summed():
    """Defect 5: a summed estimator grows with N; the mean does not."""
    w, b = lg.optimal_parameters()
    agent, _, _ = lg.agent(w, b)
    small = lanczos(PolicyHessian(agent, collect(agent, 1000, seed=3)), 1, "SA").values[0]
    large = lanczos(PolicyHessian(agent, collect(agent, 8000, seed=4)), 1, "SA").values[0]
    assert 0.75 < small / large < 1.33, (small, large)


def test_deterministic_policies_have_no_policy_hessian(untrained):
    agent = load_checkpoint(untrained("td3", "Pendulum-v1"), "Pendulum-v1")
    empty = Trajectories(np.zeros((0, 3), np.float32), np.zeros((0, 1), np.float32), np.zeros(0), np.zeros(0), np.zeros(0, np.int64),
                         np.zeros(0, np.int64), np.zeros(1), np.zeros(1, np.int64), np.zeros(1, np.int64), 0)
    with pytest.raises(RlscapeError, match="deterministic"):
        PolicyHessian(agent, empty)


def test_equal_returns_give_the_zero_matrix_not_a_crash():
    """A batch where every episode has the same return (all at the time limit) has A ≡ 0."""
    from rlscape.analyses.hessian import curvature

    agent = _tiny_categorical_agent()
    traj = collect(agent, 3, seed=0)
    traj.returns[:] = 7.0
    res, _ = curvature(agent, traj, k=1, trace_vectors=2, slq_vectors=2, slq_steps=3)
    assert res.lambda_max == 0 and res.lambda_min == 0 and np.isnan(res.ratio) and res.trace == 0
    assert res.density.nodes.shape == (2, 3) and np.allclose(res.density.weights.sum(axis=1), 1)  # stacks with other checkpoints
