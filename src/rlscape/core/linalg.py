"""Spectral algorithms on symmetric linear operators (methods.md §5): Lanczos, Hutchinson, SLQ.

Operator-level and model-free: every function takes a :class:`LinearOp` (``size`` P and
``matvec`` on float64 vectors of shape (P,)) and never forms the matrix. The policy Hessian
(:class:`rlscape.core.pg.PolicyHessian`) is one such operator; :class:`MatrixOperator` wraps a
dense matrix for tests and small problems. Results are frozen dataclasses that carry their own
diagnostics (residuals, convergence flags, number of products).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rlscape.core.errors import RlscapeError

log = logging.getLogger(__name__)

CONVERGENCE_RTOL = 1e-3  # an eigenpair counts as converged when ‖Hv − λv‖ ≤ rtol · max|λ|


class LinearOp(Protocol):
    """A symmetric P × P operator: ``size`` P, ``matvec`` (P,) float64 → (P,) float64, and
    ``n_products``, the number of matvecs so far (each implementation counts its own)."""

    size: int
    n_products: int

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """H·v for v (P,) float64 → (P,) float64."""
        ...


class MatrixOperator:
    """A dense symmetric matrix (P, P) as a :class:`LinearOp` (for tests and small problems)."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = np.asarray(matrix, np.float64)
        self.size = int(self.matrix.shape[0])
        self.n_products = 0

    def matvec(self, v: np.ndarray) -> np.ndarray:
        self.n_products += 1
        return self.matrix @ np.asarray(v, np.float64).reshape(-1)


# -- eigenpairs ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EigResult:
    """Eigenpairs from Lanczos with their diagnostics. Shapes: values (k,), vectors (P, k)."""

    values: np.ndarray
    vectors: np.ndarray
    residuals: np.ndarray  # ‖H v − λ v‖ per pair
    converged: np.ndarray  # bool per pair
    n_products: int  # HVPs used by eigsh (the residual checks are not counted)
    which: str


def lanczos(op: LinearOp, k: int = 1, which: str = "LA", *, seed: int = 0, tol: float = 1e-6, maxiter: int | None = None,
            ncv: int | None = None) -> EigResult:
    """The ``k`` largest (``which='LA'``) or smallest (``'SA'``) eigenpairs of a symmetric operator.

    Implicitly restarted Lanczos (scipy ``eigsh`` / ARPACK) from the seeded start vector
    ``v0 = N(0, I)`` of ``default_rng(seed)``. Values are sorted from the extreme inwards
    (LA: descending, SA: ascending). Pairs ARPACK did not converge come back NaN-free if it
    returned them, flagged by ``converged``.
    """
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh

    if which not in ("LA", "SA"):
        raise RlscapeError(f"which must be 'LA' or 'SA', not {which!r}")
    n = int(op.size)
    if k < 1 or k >= n:
        raise RlscapeError(f"--k must be between 1 and {n - 1} (the operator has {n} dimensions), not {k}")
    v0 = np.random.default_rng(seed).standard_normal(n)
    start = op.n_products
    lin = LinearOperator((n, n), matvec=op.matvec, dtype=np.float64)
    try:
        vals, vecs = eigsh(lin, k=k, which=which, v0=v0, tol=tol, maxiter=maxiter, ncv=ncv)
    except ArpackNoConvergence as exc:
        log.warning("Lanczos (%s) did not converge within maxiter; keeping the %d pairs it found", which, len(exc.eigenvalues))
        vals, vecs = exc.eigenvalues, exc.eigenvectors
    except ArpackError as exc:
        raise RlscapeError(f"Lanczos ({which}) failed: {exc}; try another --seed or more --episodes") from None
    used = op.n_products - start
    order = np.argsort(-vals if which == "LA" else vals)
    vals, vecs = np.asarray(vals)[order], np.asarray(vecs)[:, order]
    res = np.array([np.linalg.norm(op.matvec(vecs[:, i]) - vals[i] * vecs[:, i]) for i in range(len(vals))])
    scale = max(float(np.max(np.abs(vals))) if len(vals) else 0.0, 1e-300)
    conv = res <= CONVERGENCE_RTOL * scale
    if len(vals) < k:  # pad what ARPACK did not return
        pad = k - len(vals)
        vals = np.concatenate([vals, np.full(pad, np.nan)])
        vecs = np.concatenate([vecs, np.full((n, pad), np.nan)], axis=1)
        res = np.concatenate([res, np.full(pad, np.nan)])
        conv = np.concatenate([conv, np.zeros(pad, bool)])
    return EigResult(vals, vecs, res, conv, used, which)


# -- trace and density -----------------------------------------------------------------------------

def hutchinson(op: LinearOp, n_vectors: int = 20, *, seed: int = 0) -> tuple[float, float]:
    """Hutchinson's estimate of tr(H) with Rademacher vectors: (mean of zᵀHz, its standard error)."""
    if n_vectors < 2:
        raise RlscapeError(f"--trace-vectors must be at least 2, not {n_vectors}")
    rng = np.random.default_rng([seed, 0x7A])
    samples = np.empty(n_vectors)
    for i in range(n_vectors):
        z = rng.choice([-1.0, 1.0], size=op.size)
        samples[i] = float(z @ op.matvec(z))
    return float(samples.mean()), float(samples.std(ddof=1) / math.sqrt(n_vectors))


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature: per start vector, Gauss nodes and weights (each row sums to 1).

    ``nodes`` and ``weights`` have shape (n_vectors, steps); unused slots (early breakdown) have
    weight 0. The density is ``(1/n_vectors) Σ_v Σ_j w_vj δ(λ − θ_vj)``.
    """

    nodes: np.ndarray
    weights: np.ndarray

    def smoothed(self, grid: np.ndarray, width: float) -> np.ndarray:
        """The density convolved with a Gaussian of std ``width`` on ``grid`` (integrates to ≈1)."""
        g = np.asarray(grid, np.float64)[:, None, None]
        k = np.exp(-0.5 * ((g - self.nodes[None]) / width) ** 2) / (width * math.sqrt(2 * math.pi))
        return (k * self.weights[None]).sum(axis=(1, 2)) / self.nodes.shape[0]


def lanczos_tridiagonal(op: LinearOp, v: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` Lanczos steps from ``v`` with full reorthogonalisation: (α (m,), β (m−1,)), m ≤ steps."""
    n = op.size
    m = min(steps, n)
    Q = np.zeros((m, n))
    alpha, beta = [], []
    q = v / np.linalg.norm(v)
    for j in range(m):
        Q[j] = q
        w = op.matvec(q)
        a = float(q @ w)
        alpha.append(a)
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)  # full reorthogonalisation (twice is enough)
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        b = float(np.linalg.norm(w))
        if j == m - 1 or b <= 1e-10 * max(abs(a), 1e-300):
            break
        beta.append(b)
        q = w / b
    return np.array(alpha), np.array(beta)


def slq(op: LinearOp, n_vectors: int = 4, steps: int = 30, *, seed: int = 0) -> SpectralDensity:
    """Spectral density by stochastic Lanczos quadrature (Rademacher start vectors, seeded).

    For each start vector: ``steps`` Lanczos steps → tridiagonal T → ``eigh(T)``; nodes are its
    eigenvalues, weights the squared first components of its eigenvectors.
    """
    from scipy.linalg import eigh_tridiagonal

    rng = np.random.default_rng([seed, 0x51])
    m = min(steps, op.size)
    nodes = np.zeros((n_vectors, m))
    weights = np.zeros((n_vectors, m))
    for i in range(n_vectors):
        a, b = lanczos_tridiagonal(op, rng.choice([-1.0, 1.0], size=op.size), m)
        theta, U = eigh_tridiagonal(a, b) if len(a) > 1 else (a.copy(), np.ones((1, 1)))
        nodes[i, : len(theta)] = theta
        weights[i, : len(theta)] = U[0] ** 2
        nodes[i, len(theta) :] = theta[-1]
    return SpectralDensity(nodes, weights)
