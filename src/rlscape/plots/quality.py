"""Figures of gradient-estimate quality and value error (read only; nothing is recomputed).

Data contract: ``kind == "grad-quality"`` holds ``pairwise_cosine_mean/_low/_high`` and
``true_cosine_mean/_low/_high`` over dim ``samples`` (and a leading ``step`` over training), and
attrs ``algorithm_batch`` (the algorithm's own samples per update; 0 when unknown).
``kind == "value-error"`` holds ``mre`` and ``ratio_error`` (dim ``step`` over training).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from .figure import save_figure, subplots

__all__ = ["grad_quality_figure", "value_error_figure", "surrogate_figure", "plot_grad_quality", "plot_value_error", "plot_surrogate"]


def grad_quality_figure(ds: xr.Dataset) -> Figure:
    """Two panels as the paper's Figs. 1–2: mean pairwise cosine and cosine to the 'true' gradient vs
    N (log axis), 95 % bootstrap CIs shaded, one curve per checkpoint, the algorithm's batch marked."""
    fig, axes = subplots(1, 2, figsize=(10, 4), dpi=150)
    rows = [(f"step {int(s)}", ds.sel(step=s)) for s in ds["step"].values] if "step" in ds.dims else [("", ds)]
    n = ds["samples"].values
    for i, (label, d) in enumerate(rows):
        for ax, var in zip(axes, ("pairwise_cosine", "true_cosine"), strict=True):
            ax.plot(n, d[f"{var}_mean"].values, "o-", color=f"C{i % 10}", lw=1.3, ms=3, label=label or None)
            ax.fill_between(n, d[f"{var}_low"].values, d[f"{var}_high"].values, color=f"C{i % 10}", alpha=0.2, lw=0)
    batch = int(ds.attrs.get("algorithm_batch", 0) or 0)
    for ax, ylabel in zip(axes, ("avg. pairwise cosine similarity", "avg. cosine similarity with 'true' gradient"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("# state-action pairs N")
        ax.set_ylabel(ylabel)
        ax.axhline(0, color="0.6", lw=0.6)
        if batch:
            ax.axvline(batch, color="k", ls=":", lw=1, label=f"algorithm's batch ({batch})")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    tp = ds["true_pairs"].values
    fig.suptitle(f"Gradient-estimate quality ({ds.attrs.get('estimator')}, baseline {ds.attrs.get('baseline')}, "
                 f"{ds.attrs.get('repeats')} repeats, truth from ~{int(np.max(tp)):,} pairs; 95 % bootstrap CI)", fontsize=9)
    fig.tight_layout()
    return fig


def value_error_figure(ds: xr.Dataset) -> Figure:
    """The critic's MRE (and Σ|V−G|/Σ|G|) against discounted MC returns, over training or as one point."""
    fig, ax = subplots(figsize=(6, 4), dpi=150)
    x = ds["step"].values if "step" in ds.dims else np.array([0])
    ax.plot(x, np.atleast_1d(ds["mre"].values), "o-", label="MRE: mean |V − G| / |G|")
    ax.plot(x, np.atleast_1d(ds["ratio_error"].values), "s--", label="Σ|V − G| / Σ|G|")
    ax.set_xlabel("training step" if "step" in ds.dims else "checkpoint")
    ax.set_ylabel("relative error of the critic")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Value prediction on held-out states\n(γ = {ds.attrs.get('gamma')}, {ds.attrs.get('reward_units')} rewards)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_grad_quality(ds: xr.Dataset, out: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``grad_quality.<fmt>``."""
    return save_figure(grad_quality_figure(ds), out, "grad_quality", formats)


def plot_value_error(ds: xr.Dataset, out: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``value_error.<fmt>``."""
    return save_figure(value_error_figure(ds), out, "value_error", formats)


def surrogate_figure(ds: xr.Dataset) -> Figure:
    """The paper's landscape layout: per sample size N, the surrogate and the true return side by side,
    on the plane (α along the update step, 1 = one full step; β along a unit random direction)."""
    n = ds["samples"].values
    fig, axes = subplots(1, 2 * len(n), figsize=(4.2 * 2 * len(n), 3.8), dpi=130, squeeze=False)
    a, b = ds["alpha"].values, ds["beta"].values
    for i, N in enumerate(n):
        for j, (var, name) in enumerate((("surrogate", "surrogate"), ("return_mean", "true return"))):
            ax = axes[0, 2 * i + j]
            z = ds[var].isel(samples=i).values
            im = ax.contourf(b, a, z, levels=20, cmap="viridis")
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_xlabel("random direction β")
            ax.set_ylabel("step direction α (1 = full step)")
            ax.set_title(f"{name}, N = {int(N):,} (~{int(ds['pairs'].values[i]):,} pairs)" if var == "surrogate"
                         else f"{name}, N = {int(N):,} steps per point", fontsize=8)
            ax.plot([0], [1], "r+", ms=8)
    fig.suptitle(f"{str(ds.attrs.get('algo', '')).upper()} surrogate vs true return (‖Δθ‖ = {float(ds.attrs.get('step_norm', 0)):.3g}; "
                 "+ marks the update)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_surrogate(ds: xr.Dataset, out: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``surrogate.<fmt>``."""
    return save_figure(surrogate_figure(ds), out, "surrogate", formats)
