"""The policy-Hessian operator and the spectral algorithms against truth: known matrices, a dense
reference Hessian, and the closed-form linear-Gaussian task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlscape.analyses import hessian as hmod
from rlscape.analyses.gradient import FlatPolicy, batch_tensors, collect
from rlscape.analyses.hessian import MatrixOperator, PolicyHessian, hutchinson, lanczos, lanczos_tridiagonal, slq
from rlscape.core.errors import RlscapeError
from rlscape.core.policy import load_checkpoint
from tests.analyses import linear_gaussian as lg


def _known_matrix(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = np.concatenate([[-7.0, -3.5, -2.0], rng.uniform(-1, 1, n - 6), [2.5, 4.0, 9.0]])
    return (q * eig) @ q.T, np.sort(eig)


def test_lanczos_recovers_a_known_spectrum():
    m, eig = _known_matrix()
    op = MatrixOperator(m)
    top = lanczos(op, 3, "LA", seed=0)
    bottom = lanczos(op, 3, "SA", seed=0)
    np.testing.assert_allclose(top.values, eig[::-1][:3], rtol=1e-8)
    np.testing.assert_allclose(bottom.values, eig[:3], rtol=1e-8)
    assert top.converged.all() and bottom.converged.all() and top.residuals.max() < 1e-6
    assert top.n_products > 0 and np.allclose(np.abs(top.vectors.T @ top.vectors), np.eye(3), atol=1e-8)
    again = lanczos(MatrixOperator(m), 3, "LA", seed=0)
    assert again.n_products == top.n_products and np.array_equal(again.values, top.values)  # seeded v0
    with pytest.raises(RlscapeError, match="--k"):
        lanczos(op, 40, "LA")


def test_hutchinson_and_slq_on_a_known_matrix():
    m, eig = _known_matrix()
    op = MatrixOperator(m)
    trace, se = hutchinson(op, 200, seed=0)
    assert abs(trace - eig.sum()) < 4 * se
    # Gauss quadrature is exact for the first moment: Σ_j w_j θ_j = qᵀHq / qᵀq
    dens = slq(op, 3, 10, seed=0)
    np.testing.assert_allclose(dens.weights.sum(axis=1), 1.0, rtol=1e-10)
    rng = np.random.default_rng([0, 0x51])
    for i in range(3):
        z = rng.choice([-1.0, 1.0], size=40)
        np.testing.assert_allclose((dens.weights[i] * dens.nodes[i]).sum(), z @ m @ z / 40, rtol=1e-8)
    # with as many steps as dimensions the nodes are the eigenvalues
    a, b = lanczos_tridiagonal(op, np.ones(40), 40)
    from scipy.linalg import eigh_tridiagonal

    np.testing.assert_allclose(eigh_tridiagonal(a, b)[0][[0, -1]], eig[[0, -1]], rtol=1e-6)
    grid = np.linspace(-12, 14, 4001)
    assert abs(np.trapezoid(dens.smoothed(grid, 0.2), grid) - 1) < 1e-3


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
    A = torch.from_numpy(traj.returns - traj.returns.mean())

    def log_p(theta):
        return torch.zeros(traj.n_episodes, dtype=theta.dtype).index_add(0, ep, fp.step_log_probs(theta, obs, actions))

    J = torch.autograd.functional.jacobian(log_p, fp.theta)
    H2 = torch.autograd.functional.hessian(lambda t: (A * log_p(t)).sum(), fp.theta)
    dense = ((J.T * A) @ J + H2).numpy() / traj.n_episodes
    ours = np.stack([op.matvec(e) for e in np.eye(op.size)], axis=1)
    np.testing.assert_allclose(ours, dense, rtol=1e-9, atol=1e-9 * np.abs(dense).max())


@pytest.mark.parametrize("mode_limit", [hmod._JACOBIAN_LIMIT, 0], ids=["autograd", "functorch"])
def test_hvp_is_symmetric_on_its_fixed_batch(cartpole_ppo, monkeypatch, mode_limit):
    monkeypatch.setattr(hmod, "_JACOBIAN_LIMIT", mode_limit)
    agent = load_checkpoint(cartpole_ppo)
    op = PolicyHessian(agent, collect(agent, 4, seed=0))
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
    from rlscape.analyses.gradient import Trajectories

    empty = Trajectories(np.zeros((0, 3), np.float32), np.zeros((0, 1), np.float32), np.zeros(0), np.zeros(0, np.int64),
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
