"""Figures of linear-region counts (reads stored results; never recomputes them).

Drawn on ``matplotlib.figure.Figure`` directly: no pyplot state, no backend choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rlscape.plots.figure import new_figure, save_figure

_FAMILIES = (("current", "current trajectories", "C0"), ("fixed", "fixed trajectories (final policy)", "C1"),
             ("line", "random lines (mean → visited state)", "C2"), ("user", "user segments", "C3"))


def plot_regions(ds: Any, out_dir: str | Path, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Over training: density of transitions vs training step (the paper's main plot), per unit
    length and per neuron, ±SEM bands, with the training return on a twin axis; and transitions
    per trajectory (a count, free of the input space's scale). One checkpoint:
    the distribution of per-trajectory / per-line densities."""
    from matplotlib.ticker import MaxNLocator

    out = Path(out_dir)
    title = f"{ds.attrs.get('env_id', '')} {ds.attrs.get('algo', '').upper()} {ds.attrs.get('network', 'policy')} network " \
            f"{ds.attrs.get('hidden_sizes', '')}"
    files: list[Path] = []
    if "step" in ds.dims:
        fig = new_figure(figsize=(17, 4.4), layout="constrained")
        axes = fig.subplots(1, 3)
        step = ds.step.values
        for ax, suffix, ylabel in ((axes[0], "density", "transitions per unit length"),
                                   (axes[1], "density_per_neuron", "transitions per unit length per neuron")):
            for fam, label, colour in _FAMILIES:
                mean = f"{fam}_{suffix}_pooled"
                if mean not in ds:
                    continue
                m = ds[mean].values
                s = np.nan_to_num(ds[f"{fam}_{suffix}_sem"].values)
                ax.plot(step, m, "o-", color=colour, label=label, ms=3)
                ax.fill_between(step, m - s, m + s, color=colour, alpha=0.2)
            ax.set_xlabel("training step")
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        if "train_return" in ds and np.isfinite(ds.train_return.values).any():
            tw = axes[1].twinx()
            tw.plot(step, ds.train_return.values, "k--", lw=1, label="training return")
            tw.set_ylabel("training return (recent episodes)")
            tw.legend(fontsize=8, loc="lower right")
        # counts need no metric: the input space's scale moves with the normalisation statistics
        ax = axes[2]
        for fam, label, colour in _FAMILIES[:2]:
            key = f"{fam}_transitions"
            if key in ds:
                m = ds[key].mean(ds[key].dims[1]).values
                s = ds[key].std(ds[key].dims[1], ddof=1).values / np.sqrt(ds.sizes[ds[key].dims[1]])
                ax.plot(step, m, "o-", color=colour, label=label, ms=3)
                ax.fill_between(step, m - np.nan_to_num(s), m + np.nan_to_num(s), color=colour, alpha=0.2)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_ylabel("transitions per trajectory")
        ax.set_yscale("log")  # an untrained checkpoint (identity normalisation) can count 100× more
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.suptitle(f"Region density along trajectories over training — {title}", fontsize=10)
        files += save_figure(fig, out, "regions_density", formats, dpi=130, bbox_inches="tight")
        return files
    fig = new_figure(figsize=(6, 4))
    ax = fig.subplots()
    for fam, label, colour in _FAMILIES:
        key = f"{fam}_density" if fam in ("current", "fixed") else ""
        if key in ds:
            vals = ds[key].values
        elif "segment_family" in ds and (ds.segment_family.values == fam).any():
            vals = ds.density.values[ds.segment_family.values == fam]
        else:
            continue
        vals = vals[np.isfinite(vals)]
        if len(vals):
            ax.hist(vals, bins=min(30, max(5, len(vals) // 3)), alpha=0.5, color=colour, label=f"{label} (n={len(vals)})")
    ax.set_xlabel("transitions per unit length")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    files += save_figure(fig, out, "regions_density", formats, dpi=130, bbox_inches="tight")
    return files


def plot_regions_plane(ds: Any, out_dir: str | Path, formats: tuple[str, ...] = ("png",), name: str = "regions_plane") -> list[Path]:
    """The partition: polygons coloured by activation pattern (random colours, fixed seed), the
    projected trajectory on top, the three anchor states; and the distribution of region areas."""
    from matplotlib.collections import PolyCollection

    start, size = ds.vertex_start.values, ds.n_vertices.values
    u, v = ds.vertex_u.values, ds.vertex_v.values
    polys = [np.stack([u[s:s + n], v[s:s + n]], axis=1) for s, n in zip(start, size, strict=True)]
    rng = np.random.default_rng(0)
    colours = rng.uniform(0.25, 0.95, size=(len(polys), 3))
    fig = new_figure(figsize=(12, 5.2))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.35, 1]})
    ax.add_collection(PolyCollection(polys, facecolors=colours, edgecolors="k", linewidths=0.15))
    box = ds.attrs["box"]
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[2], box[3])
    ax.plot(ds.traj_u.values, ds.traj_v.values, "-", color="k", lw=1.0, label="trajectory (projected)")
    ax.plot(ds.traj_u.values[:1], ds.traj_v.values[:1], "o", color="k", ms=4)
    if ds.sizes.get("anchor", 0):
        ax.plot(ds.anchor_u.values, ds.anchor_v.values, "*", color="red", ms=11, mec="k", label="the three states")
    ax.set_aspect("equal")
    mode = "state space" if ds.attrs.get("mode") == "state_space" else "plane through three visited states"
    ax.set_title(f"{ds.attrs.get('env_id', '')} step {ds.attrs.get('step', '')}: {ds.attrs['n_regions']} regions on the {mode}",
                 fontsize=9)
    ax.set_xlabel("u (input-space units)")
    ax.set_ylabel("v (input-space units)")
    ax.legend(fontsize=8, loc="upper right")
    area = ds.area.values
    area = area[area > 0]
    if len(area):
        bins = np.logspace(np.log10(area.min()), np.log10(area.max()) + 1e-9, 30)
        ax2.hist(area, bins=bins, color="C0")
        ax2.set_xscale("log")
    ax2.set_xlabel("region area (input-space units²)")
    ax2.set_ylabel("regions")
    ax2.set_title(f"area distribution (sum {float(ds.attrs['area_sum']):.4g} = box {float(ds.attrs['box_area']):.4g})", fontsize=9)
    return save_figure(fig, Path(out_dir), name, formats, dpi=130, bbox_inches="tight")
