"""Figures of stored curvature and gradient results (read only; nothing is recomputed).

Data contract: ``ds.attrs["kind"] == "hessian"`` holds ``lambda_max``, ``lambda_min``,
``curvature_ratio``, ``slq_nodes``/``slq_weights`` (dims ``slq_vector, slq_node``) and, for a
training run, a leading dim ``step`` plus ``train_return``. ``kind == "gradient"`` over training
holds ``grad_norm``, ``grad_stderr``, ``return_mean``, ``train_return`` with dim ``step``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from .figure import subplots

log = logging.getLogger(__name__)

__all__ = ["slq_density_figure", "curvature_over_training_figure", "plot_curvature", "plot_over_training"]


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


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_curvature(ds: xr.Dataset, out_dir: str | Path) -> list[Path]:
    """Write the curvature figures of a ``hessian`` run into ``out_dir``."""
    out = Path(out_dir)
    files = []
    if "step" in ds.dims:
        files.append(_save(curvature_over_training_figure(ds), out / "curvature_over_training.png"))
        nonzero = np.flatnonzero(ds["n_hvp"].values > 0)
        if ds.sizes.get("slq_node", 0) and nonzero.size:
            last = ds.isel(step=int(nonzero[-1]))
            files.append(_save(slq_density_figure(last, f"Policy-Hessian spectrum at step {int(last.step)}"), out / "slq_density.png"))
    elif ds.sizes.get("slq_node", 0) and int(ds["n_hvp"]) > 0:  # n_hvp = 0: the estimate was exactly zero
        files.append(_save(slq_density_figure(ds), out / "slq_density.png"))
    return files


def plot_over_training(ds: xr.Dataset, out_dir: str | Path) -> list[Path]:
    """Write the gradient-over-training figure of a ``gradient`` run over a training run."""
    return [_save(gradient_over_training_figure(ds), Path(out_dir) / "gradient_over_training.png")]
