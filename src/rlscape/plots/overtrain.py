"""Figures of landscapes over training: the training curve, plane GIFs, lines over training.

Reads stored results only. Data contract:

* curve (``attrs["kind"] == "curve"``): ``return_mean``, ``return_sem`` with dims ``(step,)``;
  ``returns`` ``(step, episode)``.
* planes over training (``kind == "plane"`` with a ``step`` dim): ``return_mean`` ``(step, alpha, beta)``.
* lines over training (``kind == "line"`` with a ``step`` dim): ``return_mean`` ``(step, alpha)``.

Every frame of a GIF and every panel of a small-multiples figure uses **one** colour scale and
z range, taken over all steps, so colours mean the same return in every frame.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import xarray as xr
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .figure import check_formats, new_figure, subplots
from .static import (
    CMAP,
    DPI,
    FIGSIZE,
    contour_levels,
    describe_variable,
    finite_range,
    format_number,
    norm_limits,
    run_subtitle,
    run_title,
    save_static,
    sem_variable_for,
    symlog_linthresh,
    wrap_label,
)

logger = logging.getLogger(__name__)

__all__ = [
    "is_over_training",
    "shared_norm",
    "curve_figure",
    "plane_frames",
    "planes_figure",
    "write_gif",
    "line_heatmap_figure",
    "lines_3d_figure",
    "render_over_training",
]

GIF_DPI = 90
GIF_MS_PER_FRAME = 700


def is_over_training(ds: xr.Dataset) -> bool:
    """Whether ``ds`` is a curve or a plane/line over training (it has a ``step`` dim)."""
    return ds.attrs.get("kind") == "curve" or "step" in ds.dims


def _check(ds: xr.Dataset, kind: str, variable: str, dims: tuple[str, ...]) -> np.ndarray:
    if ds.attrs.get("kind") not in (kind, f"{kind}-over-training") or "step" not in ds.dims:
        raise ValueError(f"expected a {kind} over training (attrs kind={kind!r} and a 'step' dim); got kind={ds.attrs.get('kind')!r}, dims {dict(ds.sizes)}")
    if variable not in ds.data_vars:
        raise ValueError(f"variable {variable!r} not in the results; pass variable= one of {sorted(map(str, ds.data_vars))}")
    if set(ds[variable].dims) != set(dims):
        raise ValueError(f"variable {variable!r} has dims {ds[variable].dims}, expected {dims}; pick a per-point summary variable")
    values = np.asarray(ds[variable].transpose(*dims).values, dtype=float)
    if not np.isfinite(values).any():
        raise ValueError(f"{variable!r} has no computed points; run or resume the evaluation before plotting")
    return values


def shared_norm(values: np.ndarray, log_scale: bool = False) -> mcolors.Normalize:
    """One colour scale over every step: vmin/vmax = the finite min/max of ``values`` (all steps)."""
    lo, hi = finite_range(np.asarray(values, float))
    if log_scale:
        return mcolors.SymLogNorm(linthresh=symlog_linthresh(values), vmin=lo, vmax=hi, base=10)
    return mcolors.Normalize(vmin=lo, vmax=hi)


def _step_label(step: Any) -> str:
    return f"step {int(step):,}"


def _titles(ax: Any, ds: xr.Dataset, variable: str, extra: str = "") -> None:
    sub = run_subtitle(ds)
    text = run_title(ds, variable) + extra + (f"\n{sub}" if sub else "")
    ax.set_title(text, fontsize=9)


def _dir_label(ds: xr.Dataset, key: str, symbol: str, fallback: str) -> str:
    """Axis label for a direction: its label when it is the same at every step, else a generic one."""
    label = ds.attrs.get(key)
    if label is None:
        label = f"{fallback} (one per checkpoint)"
    return f"{symbol} · {label}"


# -- curve -----------------------------------------------------------------------------------------

def curve_figure(ds: xr.Dataset, variable: str = "return_mean", *, log_scale: bool = False) -> Figure:
    """Mean return of θ at each checkpoint vs training step, ±SEM band, episodes as faint dots."""
    mean = _check(ds, "curve", variable, ("step",))
    steps = np.asarray(ds["step"].values, float)
    fig, ax = subplots(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    if variable == "return_mean" and "returns" in ds:
        per_ep = np.asarray(ds["returns"].transpose("step", "episode").values, float)
        xs, ys = np.repeat(steps, per_ep.shape[1]), per_ep.ravel()
        ok = np.isfinite(ys)
        ax.scatter(xs[ok], ys[ok], s=6, color="0.55", alpha=0.35, lw=0, label="episodes", zorder=1)
    sem_name = sem_variable_for(ds, variable)
    if sem_name is not None:
        sem = np.asarray(ds[sem_name].values, float)
        ax.fill_between(steps, mean - sem, mean + sem, color="C0", alpha=0.25, lw=0, label="± SEM", zorder=2)
    ax.plot(steps, mean, color="C0", lw=1.8, marker="o", ms=4, label=describe_variable(variable), zorder=3)
    if log_scale:
        ax.set_yscale("symlog", linthresh=symlog_linthresh(mean))
    ax.set_xlabel("training step")
    ax.set_ylabel(describe_variable(variable))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    _titles(ax, ds, variable)
    return fig


# -- planes over training --------------------------------------------------------------------------

def _plane_grid(ds: xr.Dataset, variable: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """alpha (g1,), beta (g2,), z (step, g2, g1) — rows follow β, columns α."""
    z = _check(ds, "plane", variable, ("step", "beta", "alpha"))
    return np.asarray(ds["alpha"].values, float), np.asarray(ds["beta"].values, float), z


def plane_frames(ds: xr.Dataset, variable: str = "return_mean", *, log_scale: bool = False,
                 figsize: tuple[float, float] = (6.4, 5.2), dpi: int = GIF_DPI) -> Iterator[tuple[int, Figure]]:
    """One 3-D surface figure per step, all with the same colour norm and z range.

    Yields ``(step, figure)``; the caller closes each figure. ``fig.axes[0].collections[0]`` is
    the surface, whose ``get_clim()`` is the shared ``(vmin, vmax)``.
    """
    alpha, beta, z = _plane_grid(ds, variable)
    norm = shared_norm(z, log_scale)
    lo, hi = norm_limits(norm)
    xx, yy = np.meshgrid(alpha, beta, indexing="xy")
    ia = np.flatnonzero(np.isclose(alpha, 0.0))
    ib = np.flatnonzero(np.isclose(beta, 0.0))
    xlabel = wrap_label(_dir_label(ds, "dir1_label", "α", "dir1"), 34)
    ylabel = wrap_label(_dir_label(ds, "dir2_label", "β", "dir2"), 34)
    for i, step in enumerate(np.asarray(ds["step"].values)):
        zi = z[i]
        fig = new_figure(figsize=figsize, dpi=dpi)
        ax = fig.add_subplot(projection="3d", computed_zorder=False)
        surf = ax.plot_surface(xx, yy, np.ma.masked_invalid(zi), cmap=CMAP, norm=norm, rstride=1, cstride=1,
                               linewidth=0.2, edgecolor=(0, 0, 0, 0.25), antialiased=True, zorder=1)
        if alpha.size >= 2 and beta.size >= 2 and np.isfinite(zi).sum() >= 4:
            ax.contourf(xx, yy, np.ma.masked_invalid(zi), levels=contour_levels(norm), zdir="z", offset=lo, cmap=CMAP,
                        norm=norm, alpha=0.55, zorder=0)
        ax.set_zlim(lo, hi)
        if ia.size and ib.size and np.isfinite(zi[ib[0], ia[0]]):
            ax.scatter([0.0], [0.0], [zi[ib[0], ia[0]]], marker="*", s=120, color="red", edgecolor="white",
                       depthshade=False, zorder=10)
        ax.set_xlabel(xlabel, fontsize=7, labelpad=8)
        ax.set_ylabel(ylabel, fontsize=7, labelpad=8)
        ax.set_zlabel(describe_variable(variable), fontsize=8, labelpad=6)
        ax.tick_params(labelsize=6)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
        fig.colorbar(surf, ax=ax, shrink=0.55, pad=0.08, aspect=18)
        fig.suptitle(run_title(ds, variable), fontsize=9, y=0.985)
        fig.text(0.5, 0.925, f"{_step_label(step)}   ({i + 1}/{ds.sizes['step']})", ha="center", fontsize=12, fontweight="bold")
        fig.subplots_adjust(left=0.0, right=0.95, bottom=0.03, top=0.9)
        yield int(step), fig


def _rgb(fig: Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def write_gif(ds: xr.Dataset, out_dir: str | Path, variable: str = "return_mean", *, log_scale: bool = False,
              ms_per_frame: int = GIF_MS_PER_FRAME, mp4: bool = True) -> list[Path]:
    """``surface.gif``: one frame per step (shared colour scale, step in the title).

    Also ``surface.mp4`` when ``mp4`` and an ``ffmpeg`` executable is on the PATH (skipped otherwise).
    """
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for _, fig in plane_frames(ds, variable, log_scale=log_scale):
        frames.append(_rgb(fig))
    # One palette for all frames (built from every frame, subsampled): a per-frame adaptive palette
    # would give the same return different colours in different frames and band the colour bar.
    sample = np.concatenate([f[::2, ::2] for f in frames], axis=0)
    palette = Image.fromarray(sample).quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    path = out / "surface.gif"
    tmp = out / "surface.tmp.gif"
    images[0].save(tmp, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0, disposal=1)
    tmp.replace(path)
    paths = [path]
    ffmpeg = shutil.which("ffmpeg") if mp4 else None
    if ffmpeg:
        h, w = frames[0].shape[:2]
        cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", f"{1000 / ms_per_frame:.3f}", "-i", "-", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
               "-pix_fmt", "yuv420p", str(out / "surface.mp4")]
        proc = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), capture_output=True)
        if proc.returncode == 0:
            paths.append(out / "surface.mp4")
        else:
            logger.warning("ffmpeg could not write surface.mp4: %s", proc.stderr.decode(errors="replace").strip()[:200])
    elif mp4:
        logger.info("no ffmpeg on the PATH: wrote surface.gif only (no surface.mp4)")
    return paths


def planes_figure(ds: xr.Dataset, variable: str = "return_mean", *, log_scale: bool = False, max_panels: int = 12) -> Figure:
    """Small multiples: a heat map per step (at most ``max_panels``, evenly chosen), one colour bar."""
    alpha, beta, z = _plane_grid(ds, variable)
    norm = shared_norm(z, log_scale)
    steps = np.asarray(ds["step"].values)
    idx = np.unique(np.linspace(0, len(steps) - 1, min(max_panels, len(steps))).round().astype(int))
    ncol = min(4, len(idx))
    nrow = int(np.ceil(len(idx) / ncol))
    fig, axs = subplots(nrow, ncol, figsize=(2.6 * ncol + 1.0, 2.5 * nrow + 0.9), dpi=DPI, squeeze=False,
                            sharex=True, sharey=True, layout="constrained")
    mesh = None
    for k, ax in enumerate(axs.flat):
        if k >= len(idx):
            ax.set_visible(False)
            continue
        i = idx[k]
        ax.set_facecolor("0.85")
        mesh = ax.pcolormesh(alpha, beta, np.ma.masked_invalid(z[i]), shading="nearest", cmap=CMAP, norm=norm)
        ax.plot([0], [0], marker="*", color="red", ms=8, mec="white", ls="none")
        ax.set_title(_step_label(steps[i]), fontsize=9)
        ax.tick_params(labelsize=7)
    for c in range(ncol):  # the lowest visible panel of each column carries the α ticks and label
        ax = axs[-1, c] if axs[-1, c].get_visible() else axs[-2, c]
        ax.tick_params(labelbottom=True)
        ax.set_xlabel("α (dir1)", fontsize=8)
    for ax in axs[:, 0]:
        ax.set_ylabel("β (dir2)", fontsize=8)
    if mesh is None:  # unreachable: idx is never empty (ncol ≥ 1 above)
        raise ValueError("planes_figure: no step to draw")
    fig.colorbar(mesh, ax=axs, label=describe_variable(variable), shrink=0.9)
    fig.suptitle(run_title(ds, variable) + " — one plane per checkpoint, shared colour scale", fontsize=10)
    return fig


# -- lines over training ---------------------------------------------------------------------------

def _line_grid(ds: xr.Dataset, variable: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = _check(ds, "line", variable, ("step", "alpha"))
    return np.asarray(ds["step"].values, float), np.asarray(ds["alpha"].values, float), z


def line_heatmap_figure(ds: xr.Dataset, variable: str = "return_mean", *, log_scale: bool = False) -> Figure:
    """Heat map of the return along the line (x = α) at each training step (y)."""
    steps, alpha, z = _line_grid(ds, variable)
    norm = shared_norm(z, log_scale)
    fig, ax = subplots(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax.set_facecolor("0.85")
    mesh = ax.pcolormesh(alpha, steps, np.ma.masked_invalid(z), shading="nearest", cmap=CMAP, norm=norm)
    marks = (0.0, 1.0) if ds.attrs.get("direction_kind") == "interpolation" else (0.0,)
    for a0 in marks:
        if alpha.min() <= a0 <= alpha.max():
            ax.axvline(a0, color="red", ls=":", lw=1.0)
    ax.set_xlabel(wrap_label(_dir_label(ds, "direction_label", "α", "direction"), 80), fontsize=9)
    ax.set_ylabel("training step", fontsize=9)
    if len(steps) <= 12:
        ax.set_yticks(steps, [format_number(s) for s in steps])
    fig.colorbar(mesh, ax=ax, label=describe_variable(variable))
    _titles(ax, ds, variable, " along a line, per checkpoint")
    return fig


def lines_3d_figure(ds: xr.Dataset, variable: str = "return_mean", *, log_scale: bool = False) -> Figure:
    """One line per checkpoint in 3-D: x = α, y = training step, z = return (colour = step)."""
    steps, alpha, z = _line_grid(ds, variable)
    fig = new_figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.add_subplot(projection="3d")
    cmap = matplotlib.colormaps.get_cmap("plasma")
    snorm = mcolors.Normalize(steps.min(), steps.max() if steps.max() > steps.min() else steps.min() + 1)
    for i, s in enumerate(steps):
        ax.plot(alpha, np.full_like(alpha, s), z[i], color=cmap(snorm(s)), lw=1.5)
        j = np.flatnonzero(np.isclose(alpha, 0.0))
        if j.size and np.isfinite(z[i, j[0]]):
            ax.scatter([0.0], [s], [z[i, j[0]]], color="red", s=10, depthshade=False)
    lo, hi = finite_range(z)
    ax.set_zlim(lo, hi)
    ax.set_xlabel(wrap_label(_dir_label(ds, "direction_label", "α", "direction"), 34), fontsize=7, labelpad=8)
    ax.set_ylabel("training step", fontsize=8, labelpad=8)
    ax.set_zlabel(describe_variable(variable), fontsize=8, labelpad=6)
    ax.tick_params(labelsize=6)
    if log_scale:
        logger.info("lines_3d keeps a linear z axis; the heat map uses the symlog colour scale")
    sub = run_subtitle(ds)
    ax.set_title(run_title(ds, variable) + (f"\n{sub}" if sub else ""), fontsize=9)
    fig.subplots_adjust(left=0.0, right=0.97, bottom=0.03, top=0.92)
    return fig


# -- everything ------------------------------------------------------------------------------------

def render_over_training(ds: xr.Dataset, out_dir: str | Path, *, gif: bool = True, log_scale: bool = False,
                         formats: Sequence[str] = ("png", "pdf"), variable: str = "return_mean") -> list[Path]:
    """All figures of a curve, planes over training (small multiples, + ``surface.gif`` when ``gif``)
    or lines over training (heat map step × α and 3-D lines)."""
    fmts = check_formats(formats)
    kind = str(ds.attrs.get("kind")).removesuffix("-over-training")
    out = Path(out_dir)
    if kind == "curve":
        _check(ds, "curve", variable, ("step",))  # validate before writing anything
        out.mkdir(parents=True, exist_ok=True)
        return save_static(curve_figure(ds, variable, log_scale=log_scale), out, "curve", fmts)
    if kind == "plane":
        _plane_grid(ds, variable)
        out.mkdir(parents=True, exist_ok=True)
        paths = save_static(planes_figure(ds, variable, log_scale=log_scale), out, "planes", fmts)
        if gif:
            paths += write_gif(ds, out, variable, log_scale=log_scale)
        return paths
    if kind == "line":
        _line_grid(ds, variable)
        out.mkdir(parents=True, exist_ok=True)
        return (save_static(line_heatmap_figure(ds, variable, log_scale=log_scale), out, "line_heatmap", fmts)
                + save_static(lines_3d_figure(ds, variable, log_scale=log_scale), out, "lines_3d", fmts))
    raise ValueError(f"unknown run kind {kind!r}; expected curve, plane or line over training")
