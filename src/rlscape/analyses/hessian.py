"""Policy-Hessian curvature (methods.md §5, seed 004): extreme eigenpairs, trace and spectral density.

Read top to bottom: a **fixed** batch of N episodes is sampled once, from the *direction* episode
stream (independent of the episodes that later evaluate along the eigenvectors) →
:class:`~rlscape.core.pg.PolicyHessian`, a symmetric linear operator on that batch (the Hessian is
never formed; averaged over episodes, leave-one-out baseline, so unbiased) →
:func:`~rlscape.core.linalg.lanczos` (LA and SA, seeded ``v0``),
:func:`~rlscape.core.linalg.hutchinson` for the trace, :func:`~rlscape.core.linalg.slq` for the
spectral density → :class:`CurvatureResult` → eigenvectors as direction files and a Dataset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlscape.core.errors import RlscapeError
from rlscape.core.kinds import kind_attrs
from rlscape.core.linalg import EigResult, SpectralDensity, hutchinson, lanczos, slq
from rlscape.core.pg import FlatPolicy, PolicyHessian, torch_threads
from rlscape.core.policy import Agent
from rlscape.core.trajectories import Trajectories, check_stochastic, collect, stream_seeds

log = logging.getLogger(__name__)

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
    "grad_norm": "‖g‖ of the score-function gradient on the same batch (whole-episode returns, leave-one-out mean baseline)",
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
    from rlscape.analyses.gradient import train_curve
    from rlscape.core.directions import Direction
    from rlscape.core.lifecycle import Run, checkpoint_or_run
    from rlscape.core.policy import load_checkpoint
    from rlscape.core.runs import first_checkpoint

    if episodes < 2:
        raise RlscapeError(f"--episodes must be at least 2 (the mean baseline needs a batch), not {episodes}")
    if seed < 0:
        raise RlscapeError(f"--seed must be ≥ 0, not {seed}")
    many, first_path = first_checkpoint(source, checkpoints)
    first = load_checkpoint(first_path, env_id, algo=algo)
    check_stochastic(first, "the policy Hessian", update_hint=False)
    P = FlatPolicy(first, which).size
    if k < 1 or k >= P:
        raise RlscapeError(f"--k must be between 1 and {P - 1} (the policy has {P} parameters), not {k}")
    spec = {"kind": "hessian", "source": str(Path(source).resolve()), "episodes": episodes, "k": k, "seed": seed, "params": which,
            "tol": tol, "maxiter": maxiter, "trace_vectors": trace_vectors, "slq_vectors": slq_vectors, "slq_steps": slq_steps,
            "env_id": env_id, "algo": algo}
    seeds = {"direction_episodes": stream_seeds(seed, "direction"),
             "lanczos_v0": f"default_rng({seed}) (LA), default_rng({seed + 1}) (SA): N(0, I)",
             "hutchinson": f"default_rng([{seed}, 0x7a]) Rademacher", "slq": f"default_rng([{seed}, 0x51]) Rademacher"}
    attrs = {**kind_attrs("hessian"), "env_id": first.env.env_id, "algo": first.algo, "source": str(Path(source).resolve()), "params": which,
             "episodes": episodes, "k": k, "seed": seed, "n_parameters": P, "baseline": "leave-one-out mean return (constant, unbiased)",
             "average": "mean over episodes", "over_training": int(many)}
    chatty = progress and not many

    def compute(step: int | None, path: Path, run: Run) -> Any:
        agent = first if Path(path) == first_path else load_checkpoint(path, env_id, algo=algo)
        traj = collect(agent, episodes, seed, stream="direction", progress=chatty)
        t0 = time.perf_counter()
        with torch_threads(P):
            res, op = curvature(agent, traj, k=k, seed=seed, which=which, tol=tol, maxiter=maxiter, trace_vectors=trace_vectors,
                                slq_vectors=slq_vectors, slq_steps=slq_steps,
                                on_stage=lambda s: log.info("%s …", s) if chatty else None)
        theta = agent.parameters(which)
        for tag, eig in (("max", res.top), ("min", res.bottom)):
            for i in range(k):
                if not np.all(np.isfinite(eig.vectors[:, i])):
                    continue
                run.dir.save_direction(f"eig_{tag}_{i + 1}", Direction(op.flat.to_named(eig.vectors[:, i]), {
                    "kind": "hessian_eigenvector", "which": eig.which, "rank": i + 1, "eigenvalue": float(eig.values[i]),
                    "residual": float(eig.residuals[i]), "converged": bool(eig.converged[i]), "episodes": episodes, "seed": seed,
                    "episode_stream": traj.stream, "episode_seeds": stream_seeds(seed, traj.stream),
                    "params": which, "scale": "unit", "checkpoint": str(Path(path).resolve()), "step": step,
                    "label": f"Hessian eigenvector λ_{tag}{'' if i == 0 else f'#{i + 1}'} = {eig.values[i]:.3g}",
                }), theta, replace=True)
        row = _row(res)
        row["train_return"] = train_curve(Path(path))[0]
        row["wall_s"] = time.perf_counter() - t0
        log.info("%sλ_max = %.4g, λ_min = %.4g, ratio %.3g; %d HVPs at %.1f/s", f"step {step}: " if step is not None else "",
                 res.lambda_max, res.lambda_min, res.ratio, res.n_products, row["hvp_per_s"])
        return curvature_dataset([row], None, attrs)

    return checkpoint_or_run(source, out, spec, compute, checkpoints=checkpoints, overwrite=overwrite, progress=progress,
                             record={"seeds": seeds})
