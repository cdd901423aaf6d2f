"""Figures of a subspace run: the gradient fraction in the top-k Hessian eigenspace (and its overlap over training)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from rlscape.plots.figure import save_figure, subplots


def plot_subspace(ds: xr.Dataset, out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """``subspace.<fmt>``: ‖P_k g‖²/‖g‖² against k (one curve per checkpoint, a random subspace dashed) and,
    over training, the overlap of consecutive top-k eigenspaces against the step."""
    over = "step" in ds.dims
    fig, axes = subplots(1, 2 if over else 1, figsize=(11 if over else 6, 4), layout="constrained", squeeze=False)
    ax = axes[0, 0]
    k = ds["k"].values
    rows = [(f"step {int(s)}", ds["fraction"].sel(step=s).values) for s in ds["step"].values] if over else [("", ds["fraction"].values)]
    for label, f in rows:
        ax.plot(k, f, "o-", label=label or None)
    ax.plot(k, np.asarray(ds["random_fraction"].values).reshape(-1, k.size)[0], "k--", lw=1, label="random subspace (k/P)")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("k (top eigenvectors of the policy Hessian)")
    ax.set_ylabel("‖P_k g‖² / ‖g‖²")
    ax.legend(fontsize=8)
    if over:
        bx = axes[0, 1]
        for j, kk in enumerate(k):
            bx.plot(ds["step"].values, ds["overlap"].values[:, j], "o-", label=f"k = {int(kk)}")
        bx.set_xlabel("training step")
        bx.set_ylabel("overlap with the previous eigenspace")
        bx.set_ylim(0, 1.02)
        bx.legend(fontsize=8)
    fig.suptitle(f"{ds.attrs.get('env_id', '')} {str(ds.attrs.get('algo', '')).upper()}: gradient in the top Hessian eigenspace "
                 f"({ds.attrs.get('end', '')}, {ds.attrs.get('episodes', '')} episodes)")
    return save_figure(fig, out_dir, "subspace", formats)
