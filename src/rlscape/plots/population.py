"""Figures of a population run (``rlscape.evaluate_population``): the mean return of each member."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from rlscape.plots.figure import save_figure, subplots


def plot_population(ds: xr.Dataset, out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """``population.<fmt>``: mean return ± SEM per member (left) and the histogram of the member means (right).

    ``ds`` has dims ``member`` (K) and ``episode``; reads ``return_mean`` and ``return_sem`` (K,).
    """
    mean = ds["return_mean"].values
    sem = ds["return_sem"].values if "return_sem" in ds else np.full_like(mean, np.nan)
    fig, (ax, hx) = subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    k = np.arange(mean.size)
    ax.errorbar(k, mean, yerr=np.where(np.isfinite(sem), sem, 0.0), fmt="o", ms=3, lw=0.8, capsize=2)
    ax.set_xlabel("member")
    ax.set_ylabel("mean return ± SEM")
    finite = mean[np.isfinite(mean)]
    if finite.size:
        hx.hist(finite, bins=min(50, max(5, finite.size // 2)), color="tab:blue", alpha=0.8)
    hx.set_xlabel("mean return of a member")
    hx.set_ylabel("members")
    fig.suptitle(f"{ds.attrs.get('env_id', '')} {str(ds.attrs.get('algo', '')).upper()}: {mean.size} members, "
                 f"{int(ds.sizes.get('episode', 0))} episodes each (seed {ds.attrs.get('seed', '')})")
    return save_figure(fig, out_dir, "population", formats)
