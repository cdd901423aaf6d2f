"""Figures of step-size searches and cliff labels (read stored results; never recompute them)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from .figure import save_figure, subplots

_DPI = 130


def _subtitle(ds: xr.Dataset) -> str:
    a = ds.attrs
    budget = f"{a['episodes']} episodes" if a.get("episodes") else f"≥{a.get('steps')} steps"
    return f"{a.get('env_id')} · {str(a.get('algo', '')).upper()} · {a.get('direction_label', '')} · {budget}/point, seed {a.get('seed')}"


def stepsize_figure(ds: xr.Dataset) -> Figure:
    """One search: J(θ + α·d) at every evaluated α (log axis), the threshold, and α*.

    ``ds``: dims ``alpha`` (sorted, 0 first when J(θ) was evaluated) × ``episode``; attrs from
    :func:`rlscape.analyses.stepsize.stepsize`.
    """
    a = ds.attrs
    alpha = np.asarray(ds["alpha"].values, float)
    mean = np.asarray(ds["return_mean"].values, float)
    sem = np.asarray(ds["return_sem"].values, float)
    pos = alpha > 0
    fig, ax = subplots(figsize=(7.5, 4.6), layout="constrained")
    kept = mean >= a["threshold"]
    ax.errorbar(alpha[pos], mean[pos], yerr=np.nan_to_num(sem[pos]), fmt="none", ecolor="0.6", lw=0.8, zorder=1)
    ax.scatter(alpha[pos & kept], mean[pos & kept], s=16, color="C0", label="kept (J ≥ threshold)", zorder=2)
    ax.scatter(alpha[pos & ~kept], mean[pos & ~kept], s=16, color="C3", label="lost", zorder=2)
    ax.axhline(a["j0"], color="0.3", lw=1, ls="-", label=f"J(θ) = {a['j0']:.4g}")
    ax.axhline(a["threshold"], color="C3", lw=1, ls="--", label=f"J(θ) − {a['tolerance']:g}·|J(θ)|")
    if a["status"] == "found":
        ax.axvline(a["alpha_star"], color="k", lw=1.2, ls=":", label=f"α* = {a['alpha_star']:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel(f"step α along d (‖d‖ = {a.get('direction_norm', float('nan')):.3g}), log scale")
    ax.set_ylabel("mean return")
    status = {"found": f"α* = {a['alpha_star']:.3g}", "never_falls": f"never falls below the threshold up to α = {a['hi']:g}",
              "falls_immediately": f"falls already at α = {a['lo']:g}"}[str(a["status"])]
    ax.set_title(f"Step-size search: {status} ({a['n_evaluations']} evaluations, {a['n_rounds']} rounds)", fontsize=10)
    fig.suptitle(_subtitle(ds), fontsize=8, color="0.3")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    return fig


def stepsize_training_figure(ds: xr.Dataset) -> Figure:
    """Training curve (J(θ) ± SEM at each checkpoint) beside α* over training on a log scale.

    ``ds``: dim ``step``; ``never_falls`` drawn as ▲ at hi, ``falls_immediately`` as ▼ at lo.
    """
    a = ds.attrs
    step = np.asarray(ds["step"].values, float)
    j0 = np.asarray(ds["j0"].values, float)
    sem = np.nan_to_num(np.asarray(ds["j0_sem"].values, float))
    alpha = np.asarray(ds["alpha_star"].values, float)
    status = np.asarray(ds["status"].values).astype(str)
    fig, (ax1, ax2) = subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    ax1.fill_between(step, j0 - sem, j0 + sem, color="C0", alpha=0.25, lw=0)
    ax1.plot(step, j0, "o-", color="C0", ms=4)
    ax1.set_xlabel("training step")
    ax1.set_ylabel("mean return J(θ) ± SEM")
    ax1.set_title("Training curve (return at each checkpoint)", fontsize=10)
    ax1.grid(True, alpha=0.3)
    found = status == "found"
    ax2.plot(step[found], alpha[found], "o-", color="C2", ms=4, label="α*")
    never, immediate = status == "never_falls", status == "falls_immediately"
    if never.any():
        ax2.scatter(step[never], np.full(never.sum(), a["hi"]), marker="^", color="C1", label=f"never falls (≥ {a['hi']:g})", zorder=3)
    if immediate.any():
        ax2.scatter(step[immediate], np.full(immediate.sum(), a["lo"]), marker="v", color="C3",
                    label=f"falls at once (< {a['lo']:g})", zorder=3)
    ax2.set_yscale("log")
    ax2.set_xlabel("training step")
    ax2.set_ylabel(f"α*: largest step keeping J within {a['tolerance']:g}·|J|")
    ax2.set_title("\n".join(textwrap.wrap(f"Step size along {a.get('direction_label', 'd')}", 60)), fontsize=10)
    ax2.grid(True, which="both", alpha=0.25)
    ax2.legend(fontsize=8)
    fig.suptitle(_subtitle(ds), fontsize=8, color="0.3")
    return fig


def cliffs_figure(line: xr.Dataset, labels: xr.Dataset) -> Figure:
    """The line over training coloured by label: J(α) per checkpoint (cliffs red) and the training curve.

    ``line``: ``return_mean`` (or ``returns``) over ``(step, alpha[, episode])``; ``labels``: the
    output of :func:`rlscape.analyses.cliffs.label_cliffs` (``cliff`` over ``step``).
    """
    mean = line["return_mean"] if "return_mean" in line else line["returns"].mean("episode")
    mean = mean.transpose("step", "alpha")
    alpha = np.asarray(line["alpha"].values, float)
    steps = np.asarray(line["step"].values)
    cliff = np.asarray(labels["cliff"].sel(step=steps).values, bool)
    fig, (ax1, ax2) = subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    cmap = matplotlib.colormaps.get_cmap("Blues")
    first_non_cliff = True
    for i, s in enumerate(steps):
        y = np.asarray(mean.sel(step=s).values, float)
        color = "C3" if cliff[i] else cmap(0.35 + 0.6 * i / max(1, len(steps) - 1))
        label = f"step {s} (cliff)" if cliff[i] else ("non-cliff (darker = later)" if first_non_cliff else None)
        first_non_cliff = first_non_cliff and bool(cliff[i])
        ax1.plot(alpha, y, "-", color=color, lw=1.8 if cliff[i] else 1.0, zorder=3 if cliff[i] else 2, label=label)
    ax1.axvline(0, color="0.5", lw=0.8, ls=":")
    width = float(labels.attrs["first_step"])
    side = labels.attrs.get("side", "positive")
    edges = {"positive": [width], "negative": [-width], "both": [-width, width]}[side]
    for k, edge in enumerate(edges):
        ax1.axvline(edge, color="C3", lw=0.8, ls=":", label="end of the first step" if k == 0 else None)
    ax1.set_xlabel("offset α along the direction")
    ax1.set_ylabel("mean return")
    ax1.set_title("Return along the line at each checkpoint (cliffs in red)", fontsize=10)
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=7, loc="best")
    j0 = np.asarray(labels["j0"].sel(step=steps).values, float)
    ax2.plot(steps, j0, "-", color="0.5", lw=1)
    ax2.scatter(steps[~cliff], j0[~cliff], color="C0", s=22, label="non-cliff", zorder=3)
    if cliff.any():
        ax2.scatter(steps[cliff], j0[cliff], color="C3", s=40, marker="X", label="cliff", zorder=4)
    ax2.set_xlabel("training step")
    ax2.set_ylabel("J at the checkpoint (α = 0)")
    ax2.set_title(f"{int(cliff.sum())} of {len(steps)} checkpoints are cliffs", fontsize=10)
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    la = labels.attrs
    fig.suptitle(f"cliff: J falls ≥ {la['min_relative_fall']:g}·|J(θ)| within the first step and by > "
                 f"{la['min_range_fraction']:g} of the global range ({la['global_range']:.4g})", fontsize=8, color="0.3")
    return fig


def plot_stepsize(ds: xr.Dataset, out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """``stepsize.<fmt>`` (one checkpoint) or ``stepsize_training.<fmt>`` (over training)."""
    if ds.attrs.get("kind") == "stepsize-over-training":
        return save_figure(stepsize_training_figure(ds), out_dir, "stepsize_training", formats, dpi=_DPI)
    return save_figure(stepsize_figure(ds), out_dir, "stepsize", formats, dpi=_DPI)


def plot_cliffs(line: xr.Dataset, labels: xr.Dataset, out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """``cliffs.<fmt>``: the line over training coloured by cliff label."""
    return save_figure(cliffs_figure(line, labels), out_dir, "cliffs", formats, dpi=_DPI)


def cliff_dive_figure(ds: xr.Dataset) -> Figure:
    """Change of the return after one update, per checkpoint, one panel per algorithm.

    ``ds``: the output of :func:`rlscape.analyses.cliffs.cliff_dive`: ``change (step, algo, trial)``,
    ``cliff (step,)``, the Welch test over ``algo``. Small dots = trials; large = the checkpoint's
    mean (the unit of the test); dashed lines = the group means.
    """
    steps = np.asarray(ds["step"].values)
    cliff = np.asarray(ds["cliff"].values, bool)
    algos = [str(a) for a in ds["algo"].values]
    fig, axes = subplots(1, len(algos), figsize=(5.5 * len(algos), 4.2), layout="constrained", sharey=True, squeeze=False)
    x = np.arange(len(steps))
    for ax, algo in zip(axes[0], algos, strict=True):
        ch = np.asarray(ds["change"].sel(algo=algo).transpose("step", "trial").values, float)
        per_ckpt = np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in ch])
        for group, colour, name in ((cliff, "C3", "cliff"), (~cliff, "C0", "non-cliff")):
            if not group.any():
                continue
            jitter = np.linspace(-0.15, 0.15, ch.shape[1]) if ch.shape[1] > 1 else np.zeros(1)
            xs = (x[group, None] + jitter[None, :]).ravel()
            ax.scatter(xs, ch[group].ravel(), s=10, color=colour, alpha=0.35, lw=0)
            ax.scatter(x[group], per_ckpt[group], s=55, color=colour, edgecolor="k", lw=0.6, zorder=3,
                       label=f"{name}: checkpoint mean")
            m = float(ds[f"mean_change_{'cliff' if name == 'cliff' else 'noncliff'}"].sel(algo=algo))
            if np.isfinite(m):
                ax.axhline(m, color=colour, ls="--", lw=1, label=f"{name} mean {m:+.3g}")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xticks(x, [str(int(s)) for s in steps], rotation=45 if len(steps) > 6 else 0, fontsize=8)
        ax.set_xlabel("checkpoint (training step)")
        row = ds.sel(algo=algo)
        ax.set_title(f"{algo.upper()}: Welch t = {float(row.welch_t):.3g}, p = {float(row.welch_p):.3g} "
                     f"({int(row.n_cliff)} vs {int(row.n_noncliff)} checkpoints)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[0, 0].set_ylabel("change sign(R0)·(R/R0 − 1) after one update")
    fig.suptitle(f"Cliff dive: one update from each checkpoint, {ds.attrs.get('trials')} trials, "
                 f"{ds.attrs.get('episodes')} episodes before/after", fontsize=9, color="0.3")
    return fig


def plot_cliff_dive(ds: xr.Dataset, out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """``cliff_dive.<fmt>``: the changes per checkpoint and algorithm, cliffs in red."""
    return save_figure(cliff_dive_figure(ds), out_dir, "cliff_dive", formats, dpi=_DPI)
