"""Policy-Hessian curvature (methods.md §5, seed 004): HVP operator, Lanczos, Hutchinson, SLQ.

Read top to bottom: a **fixed** batch of N episodes is sampled once → :class:`PolicyHessian`, a
symmetric linear operator on that batch (the Hessian is never formed) →
:func:`lanczos` (scipy ``eigsh``, seeded ``v0``) for the extreme eigenpairs, :func:`hutchinson`
for the trace, :func:`slq` for the spectral density → :class:`CurvatureResult`.

The estimator, averaged over episodes (the reference summed, defect 5):

    H·v = (1/N) Σ_τ [ g_τ (g_τ·v) A_τ + A_τ ∇_θ(g_τ·v) ],  g_τ = Σ_t ∇ log π(a_t|s_t),  A_τ = R(τ) − b

with b the batch's mean return (a constant baseline keeps it unbiased: E[g gᵀ + ∇² log P] = 0).
The first term is ``Jᵀ diag(A) J v`` with J the per-episode score Jacobian (a ``jvp`` then a
``vjp``); the second is the Hessian-vector product of ``Σ_τ A_τ log P_τ`` (forward-over-reverse).
Both come from one batched forward over every step of every episode.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.func import grad, jvp, vjp

from rlscape.analyses.gradient import FlatPolicy, Trajectories, batch_tensors, check_stochastic
from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import episode_seeds
from rlscape.core.kinds import kind_attrs
from rlscape.core.policy import Agent

log = logging.getLogger(__name__)

CONVERGENCE_RTOL = 1e-3  # an eigenpair counts as converged when ‖Hv − λv‖ ≤ rtol · max|λ|


class LinearOp(Protocol):
    """What the algorithms need: ``size`` and ``matvec`` on float64 vectors (counted in ``n_products``)."""

    size: int
    n_products: int

    def matvec(self, v: np.ndarray) -> np.ndarray: ...


class MatrixOperator:
    """A dense symmetric matrix as a :class:`LinearOp` (for tests and small problems)."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = np.asarray(matrix, np.float64)
        self.size = int(self.matrix.shape[0])
        self.n_products = 0

    def matvec(self, v: np.ndarray) -> np.ndarray:
        self.n_products += 1
        return self.matrix @ np.asarray(v, np.float64).reshape(-1)


_JACOBIAN_LIMIT = 50_000_000  # N·P above which the per-episode score matrix is not kept in memory


def _per_episode_scores(log_p: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, n: int, steps: int) -> torch.Tensor:
    """J (N, P): row τ = g_τ = ∇_θ log P(τ). Reverse mode (one vjp per episode) when N ≤ P, forward
    mode (one jvp per parameter) otherwise; vmapped in chunks so memory stays ~chunk × steps."""
    P = theta.numel()
    chunk = max(1, min(max(n, P), _CHUNK_ELEMENTS // max(steps, 1)))
    if n <= P:
        _, pullback = vjp(log_p, theta)
        rows = [torch.vmap(pullback)(torch.eye(n, dtype=theta.dtype)[i : i + chunk])[0] for i in range(0, n, chunk)]
        return torch.cat(rows)
    cols = [torch.vmap(lambda t: jvp(log_p, (theta,), (t,))[1])(torch.eye(P, dtype=theta.dtype)[i : i + chunk]) for i in range(0, P, chunk)]
    return torch.cat(cols).T.contiguous()


_CHUNK_ELEMENTS = 2_000_000  # vmap chunk × packed steps


class PolicyHessian:
    """The policy-Hessian operator on one fixed batch of trajectories (methods.md §5).

    ``matvec(v)`` takes and returns float64 vectors of the selected parameters in
    :class:`~rlscape.analyses.gradient.FlatPolicy` order. The same batch is used for every
    product, so the operator is one symmetric matrix (up to rounding).
    """

    def __init__(self, agent: Agent, traj: Trajectories, *, which: str = "actor", baseline: str = "mean",
                 dtype: torch.dtype | None = None) -> None:
        check_stochastic(agent, "the policy Hessian", update_hint=False)
        if baseline not in ("mean", "none"):
            raise RlscapeError(f"the policy Hessian takes a constant baseline: --baseline mean or none, not {baseline!r}")
        self.flat = FlatPolicy(agent, which, dtype)
        self.traj, self.baseline = traj, baseline
        self.size = self.flat.size
        self.n_products = 0
        self.seconds = 0.0
        self.N = traj.n_episodes
        dtype = self.flat.dtype
        obs, actions, ep = batch_tensors(traj, dtype)
        returns = torch.from_numpy(traj.returns).to(dtype)
        self.A = returns - returns.mean() if baseline == "mean" else returns
        fp, N, A = self.flat, self.N, self.A

        def log_p(theta: torch.Tensor) -> torch.Tensor:  # (N,) log P(τ) up to θ-free terms
            lp = fp.step_log_probs(theta, obs, actions)
            return torch.zeros(N, dtype=lp.dtype).index_add(0, ep, lp)

        def weighted(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            lpe = log_p(theta)
            return (A * lpe).sum(), lpe

        self._grad_s = grad(weighted, has_aux=True)  # θ ↦ (Σ A_τ g_τ, log P)
        self.mode = "autograd" if N * self.size <= _JACOBIAN_LIMIT else "functorch"
        if self.mode == "autograd":
            # built once on the fixed batch: the per-episode scores J (N, P) and the graph of Σ A_τ g_τ,
            # so each product is J-matvecs plus one backward through that graph
            theta = fp.theta.clone().requires_grad_(True)
            lpe = log_p(theta)
            (self._gs,) = torch.autograd.grad((A * lpe).sum(), theta, create_graph=True)
            self._theta = theta
            self._J = _per_episode_scores(log_p, fp.theta, N, int(obs.shape[0])).detach()
        else:  # forward-over-reverse per product; memory O(P), not O(N·P)
            _, self._vjp = vjp(log_p, fp.theta)

    def gradient(self) -> np.ndarray:
        """The score-function gradient with the same baseline: ``(1/N) Σ_τ A_τ g_τ`` (whole-episode returns)."""
        g, _ = self._grad_s(self.flat.theta)
        return (g / self.N).double().numpy()

    def matvec(self, v: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        vt = torch.as_tensor(np.asarray(v, np.float64).reshape(-1), dtype=self.flat.dtype)
        if self.mode == "autograd":
            h1v = self._J.T @ (self.A * (self._J @ vt))
            (h2v,) = torch.autograd.grad(self._gs, self._theta, grad_outputs=vt, retain_graph=True)
        else:
            _, (h2v, jv) = jvp(self._grad_s, (self.flat.theta,), (vt,))
            (h1v,) = self._vjp(self.A * jv)
        self.n_products += 1
        self.seconds += time.perf_counter() - t0
        return ((h1v + h2v) / self.N).double().numpy()


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
        raise RlscapeError(f"--k must be between 1 and {n - 1} (the policy has {n} parameters), not {k}")
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


# -- the analysis ----------------------------------------------------------------------------------

@dataclass
class CurvatureResult:
    """Everything one curvature analysis found at one θ."""

    top: EigResult
    bottom: EigResult
    trace: float
    trace_se: float
    density: SpectralDensity
    n_products: int
    hvp_seconds: float
    n_parameters: int
    episodes: int
    steps: int
    return_mean: float
    grad_norm: float
    names: list[str] = field(default_factory=list)

    @property
    def lambda_max(self) -> float:
        return float(self.top.values[0])

    @property
    def lambda_min(self) -> float:
        return float(self.bottom.values[0])

    @property
    def ratio(self) -> float:
        """The seed's ratio −λ_max/λ_min (NaN when λ_min = 0)."""
        return -self.lambda_max / self.lambda_min if self.lambda_min != 0 else float("nan")


def curvature(agent: Agent, traj: Trajectories, *, k: int = 1, seed: int = 0, which: str = "actor", tol: float = 1e-6,
              maxiter: int | None = None, trace_vectors: int = 10, slq_vectors: int = 4, slq_steps: int = 30,
              on_stage: Callable[[str], Any] | None = None) -> tuple[CurvatureResult, PolicyHessian]:
    """Extreme eigenpairs (LA and SA), Hutchinson trace and SLQ density of the policy Hessian on ``traj``."""
    op = PolicyHessian(agent, traj, which=which)
    if k < 1 or k >= op.size:
        raise RlscapeError(f"--k must be between 1 and {op.size - 1} (the policy has {op.size} parameters), not {k}")
    if not bool(torch.any(op.A != 0)):
        # every episode has the same return (e.g. all reached the time limit): A ≡ 0, the estimate is exactly 0
        log.warning("all %d episodes have the same return %.6g: the Hessian estimate on this batch is the zero matrix "
                    "(eigenvalues 0, no eigenvectors saved)", traj.n_episodes, float(traj.returns[0]))
        zero = EigResult(np.zeros(k), np.full((op.size, k), np.nan), np.zeros(k), np.ones(k, bool), 0, "LA")
        m = min(slq_steps, op.size) if slq_vectors > 0 else 0
        weights = np.zeros((slq_vectors, m))
        weights[:, :1] = 1.0  # all mass at the single eigenvalue 0, shaped like a regular result
        dens = SpectralDensity(np.zeros((slq_vectors, m)), weights)
        res = CurvatureResult(zero, EigResult(zero.values, zero.vectors, zero.residuals, zero.converged, 0, "SA"), 0.0, 0.0, dens,
                              0, 0.0, op.size, traj.n_episodes, int(traj.lengths.sum()), float(traj.returns.mean()), 0.0, op.flat.names)
        return res, op
    stage = on_stage or (lambda _s: None)
    stage("lanczos LA")
    top = lanczos(op, k, "LA", seed=seed, tol=tol, maxiter=maxiter)
    stage("lanczos SA")
    bottom = lanczos(op, k, "SA", seed=seed + 1, tol=tol, maxiter=maxiter)
    trace, trace_se = (float("nan"), float("nan"))
    if trace_vectors >= 2:
        stage("hutchinson")
        trace, trace_se = hutchinson(op, trace_vectors, seed=seed)
    stage("slq")
    dens = slq(op, slq_vectors, slq_steps, seed=seed) if slq_vectors > 0 else SpectralDensity(np.zeros((0, 0)), np.zeros((0, 0)))
    g = op.gradient()
    res = CurvatureResult(top, bottom, trace, trace_se, dens, op.n_products, op.seconds, op.size, traj.n_episodes,
                          int(traj.lengths.sum()), float(traj.returns.mean()), float(np.linalg.norm(g)), op.flat.names)
    return res, op


# -- the analysis as the CLI runs it ---------------------------------------------------------------

def _row(res: CurvatureResult) -> dict[str, Any]:
    return {
        "lambda_max": res.lambda_max, "lambda_min": res.lambda_min, "curvature_ratio": res.ratio,
        "eigenvalues_top": res.top.values.tolist(), "eigenvalues_bottom": res.bottom.values.tolist(),
        "residuals_top": res.top.residuals.tolist(), "residuals_bottom": res.bottom.residuals.tolist(),
        "converged_top": res.top.converged.astype(int).tolist(), "converged_bottom": res.bottom.converged.astype(int).tolist(),
        "n_hvp": res.n_products, "n_hvp_lanczos": res.top.n_products + res.bottom.n_products,
        "hvp_per_s": res.n_products / max(res.hvp_seconds, 1e-12), "trace": res.trace, "trace_se": res.trace_se,
        "slq_nodes": res.density.nodes.tolist(), "slq_weights": res.density.weights.tolist(),
        "return_mean": res.return_mean, "grad_norm": res.grad_norm, "episodes": res.episodes, "env_steps": res.steps,
    }


_DESCRIPTIONS = {
    "lambda_max": "largest eigenvalue of the policy Hessian",
    "lambda_min": "smallest eigenvalue of the policy Hessian",
    "curvature_ratio": "−λ_max/λ_min (large: far from locally concave)",
    "n_hvp": "Hessian-vector products (Lanczos LA + SA, residual checks, Hutchinson, SLQ)",
    "hvp_per_s": "Hessian-vector products per second",
    "trace": "Hutchinson estimate of tr(H)",
    "trace_se": "standard error of the Hutchinson trace",
    "return_mean": "mean return of the fixed batch",
    "grad_norm": "‖g‖ of the score-function gradient on the same batch (whole-episode returns, mean baseline)",
    "train_return": "mean of the recent training returns at the checkpoint",
}


def curvature_dataset(rows: list[dict[str, Any]], steps: list[int] | None, attrs: dict[str, Any]) -> Any:
    """One Dataset from per-checkpoint rows; dim ``step`` when ``steps`` is given."""
    import xarray as xr

    def dims_of(key: str, value: Any) -> tuple[str, ...]:
        arr = np.asarray(value)
        if key.startswith(("eigenvalues", "residuals", "converged")):
            return ("rank",)
        if key.startswith("slq"):
            return ("slq_vector", "slq_node")
        return () if arr.ndim == 0 else ("x",)

    data = {}
    for key in rows[0]:
        vals = np.stack([np.asarray(r[key], np.float64) for r in rows])
        dims = ("step", *dims_of(key, rows[0][key]))
        data[key] = (dims, vals, {"long_name": _DESCRIPTIONS.get(key, key.replace("_", " "))})
    k = len(rows[0]["eigenvalues_top"])
    ds = xr.Dataset(data, coords={"step": np.asarray(steps if steps is not None else [-1], np.int64), "rank": np.arange(1, k + 1)},
                    attrs=attrs)
    for key in ("converged_top", "converged_bottom"):
        ds[key] = ds[key].astype(bool)
    if steps is None:
        ds = ds.isel(step=0, drop=True)
    return ds


def run_hessian(source: str | Path, out: str | Path, *, episodes: int = 100, k: int = 1, seed: int = 0, which: str = "actor",
                tol: float = 1e-6, maxiter: int | None = None, trace_vectors: int = 10, slq_vectors: int = 4, slq_steps: int = 30,
                checkpoints: str | None = None, env_id: str | None = None, algo: str | None = None,
                overwrite: bool = False, progress: bool = True) -> Any:
    """Curvature of a checkpoint, or of every checkpoint of a training run (dim ``step``).

    Writes ``results.zarr`` and the eigenvectors as direction files ``eig_max_<i>.npz`` /
    ``eig_min_<i>.npz`` (unit norm) in ``directions/`` (``steps/<step>/directions/`` for a run).
    """
    from rlscape.analyses.gradient import (
        collect,
        prepare_run,
        step_dir,
        targets,
        torch_threads,
        train_curve,
        write_json,
    )
    from rlscape.core.directions import Direction
    from rlscape.core.policy import load_checkpoint
    from rlscape.core.store import package_versions

    if episodes < 2:
        raise RlscapeError(f"--episodes must be at least 2 (the mean baseline needs a batch), not {episodes}")
    if seed < 0:
        raise RlscapeError(f"--seed must be ≥ 0, not {seed}")
    todo = targets(source, checkpoints)
    first = load_checkpoint(todo[0][1], env_id, algo=algo)
    check_stochastic(first, "the policy Hessian", update_hint=False)
    P = FlatPolicy(first, which).size
    if k < 1 or k >= P:
        raise RlscapeError(f"--k must be between 1 and {P - 1} (the policy has {P} parameters), not {k}")
    spec = {"analysis": "hessian", "source": str(Path(source).resolve()), "episodes": episodes, "k": k, "seed": seed, "params": which,
            "tol": tol, "maxiter": maxiter, "trace_vectors": trace_vectors, "slq_vectors": slq_vectors, "slq_steps": slq_steps,
            "checkpoints": [s for s, _ in todo] if todo[0][0] is not None else None, "env_id": env_id, "algo": algo}
    out = Path(out)
    run = prepare_run(out, spec, overwrite, "curvature.json")
    run.update_run(status="running", versions=package_versions(), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   seeds={**episode_seeds(seed),
                          "lanczos_v0": f"default_rng({seed}) (LA), default_rng({seed + 1}) (SA): N(0, I)",
                          "hutchinson": f"default_rng([{seed}, 0x7a]) Rademacher", "slq": f"default_rng([{seed}, 0x51]) Rademacher"})
    rows, steps = [], []
    bar = None
    if progress and len(todo) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="ckpt", desc="checkpoints", dynamic_ncols=True)
    for step, path in todo:
        here = step_dir(out, step)
        summary = here / "curvature.json"
        if summary.is_file():
            rows.append(json.loads(summary.read_text()))
            steps.append(step)
            if bar is not None:
                bar.update(1)
            continue
        agent = first if step == todo[0][0] else load_checkpoint(path, env_id, algo=algo)
        traj = collect(agent, episodes, seed, progress=progress and len(todo) == 1)
        t0 = time.perf_counter()
        with torch_threads(P):
            res, op = curvature(agent, traj, k=k, seed=seed, which=which, tol=tol, maxiter=maxiter, trace_vectors=trace_vectors,
                                slq_vectors=slq_vectors, slq_steps=slq_steps,
                                on_stage=lambda s: log.info("%s …", s) if progress and len(todo) == 1 else None)
        for tag, eig in (("max", res.top), ("min", res.bottom)):
            for i in range(k):
                if not np.all(np.isfinite(eig.vectors[:, i])):
                    continue
                Direction(op.flat.to_named(eig.vectors[:, i]), {
                    "kind": "hessian_eigenvector", "which": eig.which, "rank": i + 1, "eigenvalue": float(eig.values[i]),
                    "residual": float(eig.residuals[i]), "converged": bool(eig.converged[i]), "episodes": episodes, "seed": seed,
                    "params": which, "scale": "unit", "checkpoint": str(Path(path).resolve()), "step": step,
                    "label": f"Hessian eigenvector λ_{tag}{'' if i == 0 else f'#{i + 1}'} = {eig.values[i]:.3g}",
                }).save(here / "directions" / f"eig_{tag}_{i + 1}.npz")
        row = _row(res)
        row["train_return"] = train_curve(Path(path))[0]
        row["wall_s"] = time.perf_counter() - t0
        write_json(summary, row)
        rows.append(row)
        steps.append(step)
        log.info("%sλ_max = %.4g, λ_min = %.4g, ratio %.3g; %d HVPs at %.1f/s", f"step {step}: " if step is not None else "",
                 res.lambda_max, res.lambda_min, res.ratio, res.n_products, row["hvp_per_s"])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    attrs = {**kind_attrs("hessian"), "env_id": first.env.env_id, "algo": first.algo, "source": str(Path(source).resolve()), "params": which,
             "episodes": episodes, "k": k, "seed": seed, "n_parameters": P, "baseline": "mean return of the batch (constant)",
             "average": "mean over episodes", "over_training": int(todo[0][0] is not None)}
    ds = curvature_dataset(rows, steps if todo[0][0] is not None else None, attrs)
    run.write_dataset(ds)
    run.update_run(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return ds
