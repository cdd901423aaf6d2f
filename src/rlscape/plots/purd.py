"""Figures of post-update return distributions, interpolations and Algorithm 1 (read stored results only).

One renderer per result kind: :func:`purd_figure` (one checkpoint: the histogram with its mode,
LTP threshold and CVaR), :func:`purd_over_training_figure` (dim ``step``), :func:`interpolation_figure`
(α × return density with the mean / LTP / CVaR curves), :func:`cvar_train_figure` (with vs without
rejection). Figures are built with ``matplotlib.figure.Figure`` (no pyplot state, no backend change).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_DPI = 130


def _save(fig: Figure, out_dir: str | Path, stem: str, formats: Sequence[str]) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    files = []
    for fmt in formats:
        f = out / f"{stem}.{fmt}"
        fig.savefig(f, dpi=_DPI)
        files.append(f)
    return files


def _subtitle(ds: xr.Dataset) -> str:
    a = ds.attrs
    ev = "deterministic" if a.get("deterministic") else "stochastic"
    return (f"{a.get('env_id')} · {str(a.get('algo', '')).upper()} · {a.get('n_updates', ds.sizes.get('update'))} updates "
            f"({_rule(a)}) · {ev}, init {a.get('init')} · seed {a.get('seed')}")


def _rule(a: dict) -> str:
    """The update rule in words: the off-policy actor step and its batch, PPO's minibatch step or iteration."""
    if a.get("ppo_update"):
        return f"{'one minibatch step' if a['ppo_update'] == 'minibatch' else 'one iteration'}, minibatches of {a.get('batch_size')}"
    return f"{a.get('update_rule')}, batch {a.get('batch_size')}"


def _ci(ds: xr.Dataset, name: str) -> str:
    return f"{float(ds[name]):.4g} [{float(ds[name + '_ci_low']):.4g}, {float(ds[name + '_ci_high']):.4g}]"


def purd_figure(ds: xr.Dataset) -> Figure:
    """One PURD: histogram of the post-update returns (``ds['return']``, dim ``update``), with the
    pre-update return, the mode, the LTP threshold (fraction × mode or × pre-update return) and CVaR_α."""
    a = ds.attrs
    r = np.asarray(ds["return"].values, float)
    r = r[np.isfinite(r)]
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(r, bins=int(a.get("bins", 100)), color="C0", alpha=0.75, label=f"post-update returns (N = {r.size})")
    mode, cvar, pre = float(ds["mode"]), float(ds["cvar"]), float(ds["pre_return"])
    ref = pre if a.get("ltp_reference") == "pre" else mode
    thr = float(a.get("ltp_fraction", 0.5)) * ref
    ax.axvline(pre, color="k", lw=1.2, label=f"before the update: {pre:.4g}")
    ax.axvline(mode, color="C2", lw=1.5, ls="-", label=f"mode {_ci(ds, 'mode')}")
    if np.isfinite(float(ds["ltp"])):
        ax.axvline(thr, color="C3", lw=1.2, ls="--", label=f"LTP threshold {thr:.4g}: LTP {_ci(ds, 'ltp')}")
    ax.axvline(cvar, color="C1", lw=1.5, ls=":", label=f"CVaR$_{{{a.get('alpha', 0.1):g}}}$ {_ci(ds, 'cvar')}")
    ax.set_xlabel("return after one update")
    ax.set_ylabel("updates")
    ax.set_title(f"Post-update return distribution\n{_subtitle(ds)}", fontsize=9)
    ax.legend(fontsize=7.5, loc="upper left")
    return fig


def purd_over_training_figure(ds: xr.Dataset) -> Figure:
    """PURDs over training (dims ``step`` × ``update``): violins of the returns, mean and CVaR with
    their CIs, the pre-update return (top); LTP with CI and the update norm (bottom)."""
    a = ds.attrs
    steps = np.asarray(ds["step"].values)
    fig = Figure(figsize=(8.5, 6.5), layout="constrained")
    ax, bx = fig.subplots(2, 1, sharex=True, height_ratios=(2.2, 1))
    width = 0.8 * (np.min(np.diff(steps)) if steps.size > 1 else 1.0)
    data = [np.asarray(row, float)[np.isfinite(row)] for row in ds["return"].values]
    parts = ax.violinplot(data, positions=steps, widths=width, showextrema=False)
    for body in parts["bodies"]:
        body.set_alpha(0.35)
    for name, color, label in (("mean", "C0", "mean"), ("cvar", "C1", f"CVaR$_{{{a.get('alpha', 0.1):g}}}$"), ("mode", "C2", "mode")):
        v, lo, hi = (np.asarray(ds[k].values, float) for k in (name, f"{name}_ci_low", f"{name}_ci_high"))
        ax.plot(steps, v, "o-", color=color, lw=1.3, ms=3, label=f"{label} (95 % CI)")
        ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
    ax.plot(steps, ds["pre_return"].values, "k--", lw=1, label="before the update")
    ax.set_ylabel("return after one update")
    ax.legend(fontsize=7.5, ncol=2)
    ax.set_title(f"Post-update return distributions over training\n{_subtitle(ds)}", fontsize=9)
    ltp, lo, hi = (np.asarray(ds[k].values, float) for k in ("ltp", "ltp_ci_low", "ltp_ci_high"))
    bx.plot(steps, ltp, "o-", color="C3", ms=3, label="LTP (95 % CI)")
    bx.fill_between(steps, lo, hi, color="C3", alpha=0.2, lw=0)
    bx.set_ylabel("left-tail probability")
    bx.set_xlabel("training step")
    bx.set_ylim(bottom=0)
    bx.legend(fontsize=7.5, loc="upper left")
    nx = bx.twinx()
    nx.plot(steps, ds["update_norm"].mean("update").values, "s:", color="0.4", ms=3)
    nx.set_ylabel("mean ‖Δθ‖ (dotted)", color="0.4")
    return fig


def interpolation_figure(ds: xr.Dataset) -> Figure:
    """Interpolation (dims ``alpha`` × ``sample``): the density of returns at each α as a heatmap
    (each column normalised to its maximum), with the mean, the LTP threshold's tail share and
    CVaR curves; LTP on a second axis below."""
    a = ds.attrs
    alpha = np.asarray(ds["alpha"].values, float)
    ret = np.asarray(ds["return"].values, float)  # (points, samples)
    fig = Figure(figsize=(8.5, 6.5), layout="constrained")
    ax, bx = fig.subplots(2, 1, sharex=True, height_ratios=(2.2, 1))
    finite = ret[np.isfinite(ret)]
    if ret.shape[1] > 1 and finite.size:
        edges = np.linspace(finite.min(), finite.max() + 1e-9, 61)
        dens = np.stack([np.histogram(row[np.isfinite(row)], bins=edges)[0] for row in ret]).astype(float)
        dens /= np.maximum(dens.max(axis=1, keepdims=True), 1)
        da = alpha[1] - alpha[0] if alpha.size > 1 else 1.0
        mesh = ax.pcolormesh(np.append(alpha - da / 2, alpha[-1] + da / 2), edges, dens.T, cmap="Blues", shading="flat")
        fig.colorbar(mesh, ax=ax, label="density of returns (per α, max = 1)")
    ax.plot(alpha, ds["mean"].values, color="k", lw=1.5, label="mean")
    if np.isfinite(ds["cvar"].values).any():
        ax.plot(alpha, ds["cvar"].values, color="C1", lw=1.5, label=f"CVaR$_{{{a.get('cvar_alpha', 0.1):g}}}$")
        ax.plot(alpha, ds["mode"].values, color="C2", lw=1, ls="--", label="mode")
    ax.set_ylabel("return")
    ax.legend(fontsize=7.5, loc="lower left")
    ax.set_title(f"Return landscape between two policies (σ = {a.get('sigma'):g}, {a.get('samples')} perturbations per α)\n"
                 f"{a.get('env_id')} · {str(a.get('algo', '')).upper()} · ‖θ_B − θ_A‖ = {a.get('distance', float('nan')):.3g} · "
                 f"A = …/{Path(str(a.get('checkpoint_a'))).name}, B = …/{Path(str(a.get('checkpoint_b'))).name}", fontsize=9)
    if np.isfinite(ds["ltp"].values).any():
        bx.plot(alpha, ds["ltp"].values, color="C3", lw=1.3, label="LTP (95 % CI)")
        bx.fill_between(alpha, ds["ltp_ci_low"].values, ds["ltp_ci_high"].values, color="C3", alpha=0.2, lw=0)
        bx.legend(fontsize=7.5)
    bx.set_ylabel("left-tail probability")
    bx.set_xlabel("α   (θ = (1 − α)·θ_A + α·θ_B)")
    return fig


def cvar_train_figure(runs: Sequence[xr.Dataset]) -> Figure:
    """Algorithm 1: PURD mean, LTP and CVaR of the current policy after each proposal, one line per
    run (with rejection vs the ``--no-reject`` baseline); rejected proposals marked with x."""
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    for ds in runs:
        label = "CVaR rejection" if ds.attrs.get("reject") else "no rejection (baseline)"
        color = "C0" if ds.attrs.get("reject") else "0.4"
        acc = np.asarray(ds["accepted"].values, bool)
        k = np.asarray(ds["proposal"].values)
        for ax, name in zip(axes, ("purd_mean", "purd_ltp", "purd_cvar"), strict=True):
            v = np.asarray(ds[name].values, float)
            current = v.copy()  # the statistic of the policy kept after each decision
            for i in range(1, v.size):
                if not acc[i]:
                    current[i] = current[i - 1]
            ax.plot(k, current, "-", color=color, lw=1.5, label=label)
            if (~acc).any():
                ax.plot(k[~acc], v[~acc], "x", color="C3", ms=4, label="rejected proposal" if ds.attrs.get("reject") else None)
    titles = ("PURD mean", "PURD left-tail probability", f"PURD CVaR$_{{{runs[0].attrs.get('cvar_alpha', 0.1):g}}}$")
    for ax, t in zip(axes, titles, strict=True):
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("proposed update")
    axes[0].legend(fontsize=7.5)
    a = runs[0].attrs
    fig.suptitle(f"Post-update CVaR rejection (Algorithm 1) · {a.get('env_id')} · {str(a.get('algo', '')).upper()} · "
                 f"{a.get('updates')} updates per PURD", fontsize=9)
    return fig


def plot_purd(ds: xr.Dataset, out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """``purd.png`` for one checkpoint, or ``purd_over_training.png`` plus one histogram per step."""
    if "step" in ds.dims:
        files = _save(purd_over_training_figure(ds), out_dir, "purd_over_training", formats)
        for i, s in enumerate(ds["step"].values):
            one = ds.isel(step=i)
            one.attrs = dict(ds.attrs)
            files += _save(purd_figure(one), out_dir, f"purd_step{int(s):010d}", formats)
        return files
    return _save(purd_figure(ds), out_dir, "purd", formats)


def plot_interpolation(ds: xr.Dataset, out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    return _save(interpolation_figure(ds), out_dir, "interpolation", formats)


def plot_cvar_train(runs: Sequence[xr.Dataset], out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    return _save(cvar_train_figure(runs), out_dir, "cvar_train", formats)
