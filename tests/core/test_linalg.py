"""The spectral algorithms on operators with known spectra: Lanczos, Hutchinson, SLQ."""

from __future__ import annotations

import numpy as np
import pytest

from rlscape.core.errors import RlscapeError
from rlscape.core.linalg import MatrixOperator, hutchinson, lanczos, lanczos_tridiagonal, slq


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




def test_hutchinson_is_exact_on_a_diagonal_and_products_are_counted():
    """Rademacher zᵀDz = tr D for every z: no variance on a diagonal matrix."""
    op = MatrixOperator(np.diag(np.arange(1.0, 11.0)))
    trace, se = hutchinson(op, 5, seed=3)
    assert trace == 55.0 and se == 0.0 and op.n_products == 5
    res = lanczos(op, 2, "SA", seed=0)
    np.testing.assert_allclose(res.values, [1.0, 2.0], rtol=1e-10)
    assert res.which == "SA" and res.vectors.shape == (10, 2) and op.n_products == 5 + res.n_products + 2  # + residual checks
