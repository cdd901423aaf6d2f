"""Figures of stored curvature and gradient results (read only; nothing is recomputed).

Data contract: ``ds.attrs["kind"] == "hessian"`` holds ``lambda_max``, ``lambda_min``,
``curvature_ratio``, ``slq_nodes``/``slq_weights`` (dims ``slq_vector, slq_node``) and, for a
training run, a leading dim ``step`` plus ``train_return``. ``kind == "gradient"`` over training
holds ``grad_norm``, ``grad_stderr``, ``return_mean``, ``train_return`` with dim ``step``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from rlscape.core.errors import RlscapeError

from .figure import save_figure, subplots

log = logging.getLogger(__name__)

__all__ = ["slq_density_figure", "curvature_over_training_figure", "gradient_over_training_figure", "eigenvalues_figure",
           "gradient_figure", "plot_curvature", "plot_gradient"]


def _density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, width: float) -> np.ndarray:
    g = grid[:, None, None]
    k = np.exp(-0.5 * ((g - nodes[None]) / width) ** 2) / (width * math.sqrt(2 * math.pi))
    return (k * weights[None]).sum(axis=(1, 2)) / nodes.shape[0]


def slq_density_figure(ds: xr.Dataset, title: str | None = None) -> Figure:
    """Eigenvalue density (SLQ, Gaussian-smoothed, integrates to 1) with λ_min/λ_max marked."""
    nodes = np.asarray(ds["slq_nodes"].values, np.float64)
    weights = np.asarray(ds["slq_weights"].values, np.float64)
    lo, hi = float(nodes.min()), float(nodes.max())
    span = max(hi - lo, 1e-12)
    width = span / 100
    grid = np.linspace(lo - 0.1 * span, hi + 0.1 * span, 2000)
    dens = _density(nodes, weights, grid, width)
    fig, ax = subplots(figsize=(7, 4.5), dpi=150)
    ax.fill_between(grid, dens, color="C0", alpha=0.3, lw=0)
    ax.plot(grid, dens, color="C0", lw=1.2, label=f"SLQ density ({nodes.shape[0]} vectors × {nodes.shape[1]} steps, σ = {width:.2g})")
    ax.set_yscale("log")
    ax.set_ylim(max(dens.max() * 1e-6, 1e-12), dens.max() * 2)
    for var, colour, name in (("lambda_max", "C3", "λ_max"), ("lambda_min", "C2", "λ_min")):
        v = float(ds[var].values)
        ax.axvline(v, color=colour, ls="--", lw=1, label=f"{name} = {v:.4g} (Lanczos)")
    ax.set_xlabel("eigenvalue of the policy Hessian ∇²J")
    ax.set_ylabel("density (log scale)")
    ax.legend(fontsize=8)
    ax.set_title(title or f"Policy-Hessian spectrum: {ds.attrs.get('env_id', '')} {str(ds.attrs.get('algo', '')).upper()}, "
                 f"{ds.attrs.get('episodes')} episodes", fontsize=10)
    fig.tight_layout()
    return fig


def curvature_over_training_figure(ds: xr.Dataset) -> Figure:
    """λ_max, λ_min (symlog) and −λ_max/λ_min per checkpoint, next to the training curve."""
    steps = ds["step"].values
    fig, axes = subplots(3, 1, figsize=(7, 8), dpi=150, sharex=True)
    ax = axes[0]
    if "train_return" in ds and np.isfinite(ds["train_return"].values).any():
        ax.plot(steps, ds["train_return"].values, "o-", color="C0", label="training (recent episodes)")
    ax.plot(steps, ds["return_mean"].values, "s--", color="C1", label="batch of the Hessian estimate")
    ax.set_ylabel("mean return")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(steps, ds["lambda_max"].values, "o-", color="C3", label="λ_max")
    ax.plot(steps, ds["lambda_min"].values, "o-", color="C2", label="λ_min")
    ax.axhline(0, color="0.5", lw=0.8)
    mags = np.abs(np.r_[ds["lambda_max"].values, ds["lambda_min"].values])
    mags = mags[np.isfinite(mags) & (mags > 0)]
    ax.set_yscale("symlog", linthresh=float(mags.min()) if mags.size else 1.0)  # linear only below the smallest |λ|
    ax.set_ylabel("eigenvalue (symlog)")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(steps, ds["curvature_ratio"].values, "o-", color="C4")
    ax.set_yscale("log") if np.all(ds["curvature_ratio"].values > 0) else None
    ax.set_ylabel("−λ_max / λ_min")
    ax.set_xlabel("training step")
    fig.suptitle(f"Curvature over training: {ds.attrs.get('env_id', '')} {str(ds.attrs.get('algo', '')).upper()}", fontsize=10)
    fig.tight_layout()
    return fig


def gradient_over_training_figure(ds: xr.Dataset) -> Figure:
    """‖g‖ ± standard error per checkpoint (dim ``step``) below the training curve."""
    steps = ds["step"].values
    fig, axes = subplots(2, 1, figsize=(7, 6), dpi=150, sharex=True)
    ax = axes[0]
    if "train_return" in ds and np.isfinite(ds["train_return"].values).any():
        ax.plot(steps, ds["train_return"].values, "o-", color="C0", label="training (recent episodes)")
    ax.plot(steps, ds["return_mean"].values, "s--", color="C1", label="batch of the estimate")
    ax.set_ylabel("mean return")
    ax.legend(fontsize=8)
    ax = axes[1]
    g, se = ds["grad_norm"].values, ds["grad_stderr"].values
    ax.errorbar(steps, g, yerr=se, fmt="o-", color="C3", capsize=3, label="‖g‖ ± standard error")
    ax.set_ylabel("‖g‖")
    ax.set_xlabel("training step")
    ax.legend(fontsize=8)
    fig.suptitle(f"Policy gradient over training ({ds.attrs.get('estimator', '')})", fontsize=10)
    fig.tight_layout()
    return fig


def eigenvalues_figure(ds: xr.Dataset) -> Figure:
    """The Lanczos eigenvalues at both ends of the spectrum, with their residuals ‖Hv − λv‖.

    ``ds``: one checkpoint's ``hessian`` results: ``eigenvalues_top``/``eigenvalues_bottom``,
    ``residuals_top``/``residuals_bottom`` over dim ``rank`` (k,).
    """
    fig, ax = subplots(figsize=(7, 4.2), dpi=150, layout="constrained")
    for end, colour, name in (("top", "C3", "largest (LA)"), ("bottom", "C2", "smallest (SA)")):
        lam = np.asarray(ds[f"eigenvalues_{end}"].values, float)
        res = np.asarray(ds[f"residuals_{end}"].values, float) if f"residuals_{end}" in ds else np.zeros_like(lam)
        rank = np.arange(1, lam.size + 1)
        ax.errorbar(rank, lam, yerr=np.nan_to_num(res), fmt="o", color=colour, capsize=4, label=f"{name} ± residual ‖Hv − λv‖")
    ax.axhline(0, color="0.5", lw=0.8)
    mags = np.abs(np.r_[ds["eigenvalues_top"].values, ds["eigenvalues_bottom"].values])
    mags = mags[np.isfinite(mags) & (mags > 0)]
    if mags.size and mags.max() / mags.min() > 100:
        ax.set_yscale("symlog", linthresh=float(mags.min()))
    ax.set_xticks(np.arange(1, ds.sizes.get("rank", 1) + 1))
    ax.set_xlabel("rank from each end of the spectrum")
    ax.set_ylabel("eigenvalue of the policy Hessian ∇²J")
    ax.legend(fontsize=8)
    ax.set_title(f"λ_max = {float(ds['lambda_max']):.4g}, λ_min = {float(ds['lambda_min']):.4g}, "
                 f"−λ_max/λ_min = {float(ds['curvature_ratio']):.4g} ({int(ds['n_hvp'])} Hessian-vector products)", fontsize=9)
    fig.suptitle(f"{ds.attrs.get('env_id', '')} {str(ds.attrs.get('algo', '')).upper()}, {ds.attrs.get('episodes')} episodes",
                 fontsize=8, color="0.3")
    return fig


def gradient_figure(ds: xr.Dataset, g: dict[str, np.ndarray], se: dict[str, np.ndarray]) -> Figure:
    """‖g‖ of each parameter tensor with its standard error √(Σ se²) (one checkpoint).

    ``g``, ``se``: the stored gradient and its per-element standard error, keyed by parameter name
    (``directions/gradient.npz``, ``directions/gradient_se.npz``), each an array of the tensor's shape.
    """
    names = list(g)
    norms = np.array([np.linalg.norm(g[n]) for n in names])
    errs = np.array([np.sqrt(np.sum(np.square(se[n], dtype=np.float64))) if n in se else np.nan for n in names])
    fig, ax = subplots(figsize=(7, 1.2 + 0.32 * len(names)), dpi=150, layout="constrained")
    y = np.arange(len(names))
    err = np.nan_to_num(errs)
    ax.barh(y, norms, xerr=np.vstack([np.minimum(err, norms), err]), color="C3", alpha=0.7, capsize=3)  # a norm is ≥ 0
    ax.set_yticks(y, [f"{n} {tuple(g[n].shape)}" for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("‖g‖ of the tensor ± standard error")
    ax.set_title(f"Policy gradient ({ds.attrs.get('estimator', '')}): ‖g‖ = {float(ds['grad_norm']):.4g} ± "
                 f"{float(ds['grad_stderr']):.3g} over {int(ds['episodes'])} episodes", fontsize=9)
    return fig


def plot_curvature(ds: xr.Dataset, out_dir: str | Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write the curvature figures of a ``hessian`` run into ``out_dir``.

    One checkpoint: ``eigenvalues.<fmt>`` (+ ``slq_density.<fmt>`` when SLQ ran on a non-zero
    estimate); over training: ``curvature_over_training.<fmt>`` (+ the last checkpoint's density).
    """
    files = []
    if "step" in ds.dims:
        files += save_figure(curvature_over_training_figure(ds), out_dir, "curvature_over_training", formats)
        nonzero = np.flatnonzero(ds["n_hvp"].values > 0)
        if ds.sizes.get("slq_node", 0) and nonzero.size:
            last = ds.isel(step=int(nonzero[-1]))
            files += save_figure(slq_density_figure(last, f"Policy-Hessian spectrum at step {int(last.step)}"), out_dir,
                                 "slq_density", formats)
        return files
    files += save_figure(eigenvalues_figure(ds), out_dir, "eigenvalues", formats)
    if ds.sizes.get("slq_node", 0) and int(ds["n_hvp"]) > 0:  # n_hvp = 0: the estimate was exactly zero
        files += save_figure(slq_density_figure(ds), out_dir, "slq_density", formats)
    return files


def plot_gradient(ds: xr.Dataset, out_dir: str | Path, formats: Sequence[str] = ("png",), *,
                  run_dir: str | Path | None = None) -> list[Path]:
    """``gradient_over_training.<fmt>`` (over training) or ``gradient.<fmt>`` (one checkpoint; reads
    the gradient's direction files in ``run_dir/directions``)."""
    if "step" in ds.dims:
        return save_figure(gradient_over_training_figure(ds), out_dir, "gradient_over_training", formats)
    folder = Path(run_dir) / "directions" if run_dir is not None else None
    if folder is None or not (folder / "gradient.npz").is_file():
        raise RlscapeError("the gradient figure reads directions/gradient.npz of the run; give the run directory")
    return save_figure(gradient_figure(ds, read_arrays(folder / "gradient.npz"), read_arrays(folder / "gradient_se.npz")),
                       out_dir, "gradient", formats)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The numeric arrays of an ``.npz`` keyed by name (metadata entries skipped; {} if missing)."""
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as f:
        return {k: np.asarray(f[k]) for k in f.files if not k.startswith("__") and f[k].dtype.kind in "fiu"}
