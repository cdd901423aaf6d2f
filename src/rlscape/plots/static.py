"""Static (matplotlib) figures for stored landscape results.

Everything here only *reads* a results :class:`xarray.Dataset` (as written by
the core to ``DIR/results.zarr``); nothing is recomputed.

Data contract (summary)
-----------------------
Plane runs (``ds.attrs["kind"] == "plane"``) hold per-point summaries such as
``return_mean`` with dims ``(alpha, beta)`` = ``(g1, g2)``; line runs
(``ds.attrs["kind"] == "line"``) hold the same variables with dims
``(alpha,)`` = ``(g,)``. Points that were not computed are NaN and are drawn as
blank cells / gaps.

The module also hosts the small, backend-free labelling helpers shared with
:mod:`rlscape.plots.interactive`.
"""

from __future__ import annotations

import logging
import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import xarray as xr
from matplotlib import colors as mcolors
from matplotlib import transforms as mtransforms
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .figure import check_formats, new_figure, save_figure, subplots

logger = logging.getLogger(__name__)

__all__ = [
    "plot_plane",
    "plot_line",
    "surface_figure",
    "heatmap_figure",
    "contour_figure",
    "line_figure",
]

FIGSIZE: tuple[float, float] = (7.0, 5.5)
DPI: int = 150
CMAP: str = "viridis"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(re.match(r"\d+", part).group()) for part in version.split(".")[:2]
                 if re.match(r"\d+", part))


#: Whether 3-D axes support non-linear (e.g. symlog) scales (matplotlib ≥ 3.11).
HAS_3D_SCALES: bool = _version_tuple(matplotlib.__version__) >= (3, 11)

#: Human-readable descriptions of the per-point summary variables.
VARIABLE_DESCRIPTIONS: dict[str, str] = {
    "return_mean": "mean return",
    "return_std": "return std",
    "return_sem": "return SEM",
    "length_mean": "mean episode length",
    "discounted_return_mean": "mean discounted return",
    "n_episodes": "episodes completed",
    "value_mean": "mean value estimate",
    "td_error_mean": "mean TD error",
}

#: Variables whose SEM band is stored under a different name.
_SEM_VARIABLES: dict[str, str] = {"return_mean": "return_sem"}


# ---------------------------------------------------------------------------
# Shared helpers (no plotting backend needed)
# ---------------------------------------------------------------------------


def describe_variable(variable: str) -> str:
    """Return a human-readable name for a stored summary variable.

    Parameters
    ----------
    variable : str
        Name of a data variable, e.g. ``"return_mean"``.

    Returns
    -------
    str
        e.g. ``"mean return"``; unknown names are returned with ``_`` → space.
    """
    return VARIABLE_DESCRIPTIONS.get(variable, variable.replace("_", " "))


def sem_variable_for(ds: xr.Dataset, variable: str) -> str | None:
    """Name of the standard-error variable matching ``variable``, if stored.

    Parameters
    ----------
    ds : xarray.Dataset
        Results dataset.
    variable : str
        Plotted variable, e.g. ``"return_mean"`` (→ ``"return_sem"``) or
        ``"length_mean"`` (→ ``"length_sem"`` if present).

    Returns
    -------
    str or None
        Name of the SEM variable present in ``ds``, else ``None``.
    """
    candidates = []
    if variable in _SEM_VARIABLES:
        candidates.append(_SEM_VARIABLES[variable])
    if variable.endswith("_mean"):
        candidates.append(variable[: -len("_mean")] + "_sem")
    for name in candidates:
        if name in ds.data_vars:
            return name
    return None


def format_number(x: Any) -> str:
    """Compact, readable formatting of a float (``12.3``, ``0.0042``, ``1234``)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e3:
        return f"{v:.3g}"
    if 1e3 <= abs(v) < 1e6:
        return f"{v:.0f}"
    return f"{v:.3g}"


def _attr(ds: xr.Dataset, key: str, default: Any = None) -> Any:
    """Read an attribute, treating empty strings and NaN as missing."""
    value = ds.attrs.get(key, default)
    if value is None:
        return default
    if isinstance(value, str) and not value.strip():
        return default
    if isinstance(value, float) and math.isnan(value):
        return default
    return value


def _norm_text(ds: xr.Dataset, key: str, symbol: str) -> str | None:
    value = _attr(ds, key)
    if value is None:
        return None
    return f"‖{symbol}‖ = {format_number(value)}"


def plane_axis_labels(ds: xr.Dataset) -> tuple[str, str]:
    """Axis labels for a plane run.

    Parameters
    ----------
    ds : xarray.Dataset
        Plane results; reads attrs ``dir1_label``, ``dir2_label``,
        ``dir1_norm``, ``dir2_norm`` when present.

    Returns
    -------
    (str, str)
        ``("α · <dir1_label> (‖d1‖ = …)", "β · <dir2_label> (‖d2‖ = …)")``.
    """
    labels = []
    for symbol, idx in (("α", 1), ("β", 2)):
        text = f"{symbol} · {_attr(ds, f'dir{idx}_label', f'dir{idx}')}"
        norm = _norm_text(ds, f"dir{idx}_norm", f"d{idx}")
        if norm:
            text += f" ({norm})"
        labels.append(text)
    return labels[0], labels[1]


def line_axis_label(ds: xr.Dataset) -> str:
    """x-axis label for a line run: ``"α · <direction_label> (‖d‖ = …)"``."""
    text = f"α · {_attr(ds, 'direction_label', 'direction')}"
    norm = _norm_text(ds, "direction_norm", "d")
    if norm:
        text += f" ({norm})"
    return text


def _n_episodes(ds: xr.Dataset) -> Any:
    episodes = _attr(ds, "episodes")
    if episodes is None and "episode" in ds.sizes:
        episodes = int(ds.sizes["episode"])
    return episodes


def run_title(ds: xr.Dataset, variable: str = "return_mean") -> str:
    """Main title: ``"<env_id> · <algo> · mean return over <episodes> episodes"``.

    Missing attrs are left out rather than printed as ``None``.
    """
    parts = [str(v) for v in (_attr(ds, "env_id"), _attr(ds, "algo")) if v is not None]
    what = describe_variable(variable)
    episodes = _n_episodes(ds)
    if _attr(ds, "episodes_rule") == "auto" and variable != "n_episodes":
        what += (f" over {_attr(ds, 'min_episodes')}–{_attr(ds, 'max_episodes')} episodes per point"
                 f" (adaptive, target SEM {format_number(_attr(ds, 'target_sem'))})")
    elif _attr(ds, "steps") and variable != "n_episodes":
        what += f" over ≥ {_attr(ds, 'steps')} steps per point"
    elif episodes is not None and variable != "n_episodes":
        noun = "episode" if str(episodes) == "1" else "episodes"
        what += f" over {episodes} {noun}"
    parts.append(what)
    return " · ".join(parts)


def run_subtitle(ds: xr.Dataset) -> str | None:
    """Secondary title line (checkpoint file name, policy mode, seed)."""
    parts: list[str] = []
    checkpoint = _attr(ds, "checkpoint")
    if checkpoint is not None:
        parts.append(f"checkpoint {Path(str(checkpoint)).name}")
    deterministic = _attr(ds, "deterministic")
    if deterministic is not None:
        try:
            parts.append("deterministic policy" if int(deterministic) else "stochastic policy")
        except (TypeError, ValueError):
            pass
    seed = _attr(ds, "seed")
    if seed is not None:
        parts.append(f"seed {seed}")
    return " · ".join(parts) if parts else None


_NBSP = "\u00a0"


def wrap_label(text: str, width: int = 48, sep: str = "\n") -> str:
    """Wrap a long axis label onto several lines joined by ``sep``.

    ``"α · "`` prefixes and ``"‖d‖ = x"`` norms are never split across lines.
    """
    if len(text) <= width:
        return text
    protected = text.replace(" = ", f"{_NBSP}={_NBSP}")
    protected = re.sub(r"^(\S) · ", rf"\1{_NBSP}·{_NBSP}", protected)
    lines = textwrap.wrap(protected, width=width, break_on_hyphens=False)
    return sep.join(line.replace(_NBSP, " ") for line in lines) or text


def check_run(ds: xr.Dataset, kind: str, variable: str) -> None:
    """Validate a results dataset before plotting.

    Parameters
    ----------
    ds : xarray.Dataset
        Results dataset.
    kind : {"plane", "line"}
        Expected ``ds.attrs["kind"]``.
    variable : str
        Variable that will be plotted.

    Raises
    ------
    ValueError
        With a one-line message saying what to change.
    """
    actual = ds.attrs.get("kind")
    if actual != kind:
        raise ValueError(
            f"expected a {kind!r} run but ds.attrs['kind'] is {actual!r}; "
            f"use the {actual}-plotting function or fix attrs['kind']"
        )
    if variable not in ds.data_vars:
        raise ValueError(
            f"variable {variable!r} not in the results; pass variable= one of "
            f"{sorted(map(str, ds.data_vars))}"
        )
    dims = ("alpha", "beta") if kind == "plane" else ("alpha",)
    if set(ds[variable].dims) != set(dims):
        raise ValueError(
            f"variable {variable!r} has dims {ds[variable].dims}, expected {dims} for a "
            f"{kind} run; pick a per-point summary variable"
        )
    values = np.asarray(ds[variable].values, dtype=float)
    if values.size == 0 or not np.isfinite(values).any():
        raise ValueError(
            f"{variable!r} has no computed points (empty or all NaN); run or resume the "
            "evaluation before plotting"
        )


def plane_values(ds: xr.Dataset, variable: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid coordinates and values of a plane run, oriented for plotting.

    Parameters
    ----------
    ds : xarray.Dataset
        Plane results.
    variable : str
        Variable with dims ``(alpha, beta)`` (in any storage order).

    Returns
    -------
    alpha : numpy.ndarray, shape (g1,)
    beta : numpy.ndarray, shape (g2,)
    z : numpy.ndarray, shape (g2, g1)
        ``ds[variable]`` transposed so that rows follow ``beta`` (y) and columns
        follow ``alpha`` (x), as expected by ``imshow``/``pcolormesh``/``contour``.
        NaN marks points that were not computed.
    """
    alpha = np.asarray(ds["alpha"].values, dtype=float)
    beta = np.asarray(ds["beta"].values, dtype=float)
    z = np.asarray(ds[variable].transpose("beta", "alpha").values, dtype=float)
    return alpha, beta, z


def _value_at_origin_plane(ds: xr.Dataset, variable: str) -> float | None:
    alpha = ds["alpha"].values
    beta = ds["beta"].values
    ia = np.flatnonzero(np.isclose(alpha, 0.0, atol=1e-12))
    ib = np.flatnonzero(np.isclose(beta, 0.0, atol=1e-12))
    if ia.size == 0 or ib.size == 0:
        return None
    v = float(ds[variable].isel(alpha=int(ia[0]), beta=int(ib[0])).values)
    return v if math.isfinite(v) else None


def finite_range(values: np.ndarray) -> tuple[float, float]:
    """(min, max) of the finite values (raises when there are none)."""
    finite = values[np.isfinite(values)]
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        pad = 0.5 if lo == 0 else abs(lo) * 0.05
        lo, hi = lo - pad, hi + pad
    return lo, hi


def symlog_linthresh(values: np.ndarray) -> float:
    """Linear threshold for a symlog scale: two decades below the data magnitude."""
    finite = np.abs(values[np.isfinite(values)])
    max_abs = float(finite.max()) if finite.size else 0.0
    if max_abs == 0.0:
        return 1.0
    return float(10.0 ** (math.floor(math.log10(max_abs)) - 2))


def norm_limits(norm: mcolors.Normalize) -> tuple[float, float]:
    """``(vmin, vmax)`` of a colour norm whose limits are set (every norm made here sets them)."""
    if norm.vmin is None or norm.vmax is None:
        raise ValueError("the colour norm has no vmin/vmax; give both when making it")
    return float(norm.vmin), float(norm.vmax)


def _make_norm(values: np.ndarray, log_scale: bool) -> mcolors.Normalize:
    lo, hi = finite_range(values)
    if log_scale:
        return mcolors.SymLogNorm(linthresh=symlog_linthresh(values), vmin=lo, vmax=hi, base=10)
    return mcolors.Normalize(vmin=lo, vmax=hi)


def _symlog_ticks(norm: mcolors.SymLogNorm, subs: Sequence[float] = (1.0,)) -> np.ndarray:
    """Values ``0, ±m·10^k`` (m in ``subs``, ``10^k ≥ linthresh``) inside the norm's range."""
    (lo, hi), lt = norm_limits(norm), float(norm.linthresh)
    top = max(abs(lo), abs(hi))
    decades = 10.0 ** np.arange(math.floor(math.log10(lt)), math.ceil(math.log10(top)) + 1)
    mags = np.array([m * d for d in decades for m in subs])
    vals = np.concatenate([-mags, [0.0], mags])
    return np.unique(vals[(vals >= lo) & (vals <= hi)])


def contour_levels(norm: mcolors.Normalize, n: int = 14) -> np.ndarray:
    vmin, vmax = norm_limits(norm)
    if isinstance(norm, mcolors.SymLogNorm):
        levels = _symlog_ticks(norm, subs=(1.0, 2.0, 5.0))
        levels = np.unique(np.r_[vmin, levels, vmax])
    else:
        levels = np.asarray(MaxNLocator(nbins=n).tick_values(vmin, vmax))
        levels = levels[(levels >= vmin - 1e-12) & (levels <= vmax + 1e-12)]
        if levels.size < 2:
            levels = np.linspace(vmin, vmax, n + 1)
        else:
            # make sure the extremes are covered by a filled band
            if levels[0] > vmin:
                levels = np.r_[vmin, levels]
            if levels[-1] < vmax:
                levels = np.r_[levels, vmax]
    return np.unique(levels)


def _set_titles(fig: Figure, ax: Any, ds: xr.Dataset, variable: str) -> None:
    subtitle = run_subtitle(ds)
    ax.set_title(run_title(ds, variable), fontsize=11, pad=14 if subtitle else 6)
    if subtitle:
        ax.text(
            0.5, 1.005, subtitle, transform=ax.transAxes, ha="center", va="bottom",
            fontsize=8, color="0.35",
        )


def _origin_in_range(alpha: np.ndarray, beta: np.ndarray) -> bool:
    return bool(alpha.min() <= 0.0 <= alpha.max() and beta.min() <= 0.0 <= beta.max())


def _mark_origin_2d(ax: Any, alpha: np.ndarray, beta: np.ndarray) -> None:
    if not _origin_in_range(alpha, beta):
        return
    ax.plot(
        [0.0], [0.0], marker="*", markersize=14, color="red", markeredgecolor="white",
        markeredgewidth=1.0, linestyle="none", zorder=5,
    )
    ax.annotate(
        r"$\theta_0$", (0.0, 0.0), xytext=(7, 7), textcoords="offset points", fontsize=11,
        color="white", fontweight="bold", zorder=6,
        bbox={"boxstyle": "round,pad=0.15", "fc": "black", "alpha": 0.45, "lw": 0},
    )


def save_static(fig: Figure, out_dir: Path, stem: str, formats: Iterable[str]) -> list[Path]:
    """Write the figure in each format at the static figures' resolution."""
    return save_figure(fig, out_dir, stem, tuple(formats), dpi=DPI, bbox_inches="tight")


# ---------------------------------------------------------------------------
# Plane figures
# ---------------------------------------------------------------------------


def surface_figure(ds: xr.Dataset, variable: str = "return_mean", *, log_scale: bool = False) -> Figure:
    """3-D surface of a plane run with θ0 marked and a filled-contour shadow on the floor.

    Parameters
    ----------
    ds : xarray.Dataset
        Plane results; ``ds[variable]`` has dims ``(alpha, beta)`` = ``(g1, g2)``.
    variable : str
        Per-point variable to draw as height and colour.
    log_scale : bool
        If True use a symmetric-log colour scale, and a symlog z axis where
        matplotlib supports it (≥ 3.11; older versions keep a linear z axis).

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_run(ds, "plane", variable)
    alpha, beta, z = plane_values(ds, variable)
    xx, yy = np.meshgrid(alpha, beta, indexing="xy")  # (g2, g1), like z
    norm = _make_norm(z, log_scale)
    fig = new_figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.add_subplot(projection="3d", computed_zorder=False)
    surf = ax.plot_surface(
        xx, yy, np.ma.masked_invalid(z), cmap=CMAP, norm=norm, rstride=1, cstride=1,
        linewidth=0.2, edgecolor=(0, 0, 0, 0.25), antialiased=True, zorder=1,
    )
    if log_scale:
        if HAS_3D_SCALES:
            ax.set_zscale("symlog", linthresh=norm.linthresh)
        else:
            logger.info("matplotlib %s has no non-linear 3-D axes (needs ≥ 3.11); "
                        "surface_3d uses symlog colours on a linear z axis", matplotlib.__version__)
    if np.isfinite(z).sum() >= 4:
        # faint filled-contour "shadow" on the floor so hidden parts stay readable
        floor, top = norm_limits(norm)
        ax.contourf(xx, yy, np.ma.masked_invalid(z), levels=contour_levels(norm), zdir="z", offset=floor,
                    cmap=CMAP, norm=norm, alpha=0.55, zorder=0)
        ax.set_zlim(floor, top)
    z0 = _value_at_origin_plane(ds, variable)
    if z0 is not None:
        ax.scatter(
            [0.0], [0.0], [z0], marker="*", s=160, color="red", edgecolor="white",
            depthshade=False, zorder=10,
        )
        ax.text(0.0, 0.0, z0, r"  $\theta_0$", color="black", fontsize=11, zorder=11)
    xlabel, ylabel = plane_axis_labels(ds)
    ax.set_xlabel(wrap_label(xlabel, 36), fontsize=8, labelpad=12)
    ax.set_ylabel(wrap_label(ylabel, 36), fontsize=8, labelpad=12)
    ax.set_zlabel(describe_variable(variable), fontsize=9, labelpad=10)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    ax.tick_params(labelsize=7)
    fig.colorbar(surf, ax=ax, shrink=0.55, pad=0.1, aspect=18)
    fig.subplots_adjust(left=0.0, right=0.95, bottom=0.02, top=0.98)
    subtitle = run_subtitle(ds)
    ax.set_title(run_title(ds, variable) + (f"\n{subtitle}" if subtitle else ""), fontsize=10, y=0.98)
    return fig


def heatmap_figure(ds: xr.Dataset, variable: str = "return_mean", *, log_scale: bool = False) -> Figure:
    """Heat map of a plane run (x = α, y = β) with a colour bar and θ0 marked.

    Parameters
    ----------
    ds : xarray.Dataset
        Plane results; ``ds[variable]`` has dims ``(alpha, beta)`` = ``(g1, g2)``.
        It is transposed to ``(g2, g1)`` so that rows follow β.
    variable : str
        Per-point variable to colour by.
    log_scale : bool
        If True use a symmetric-log colour scale.

    Returns
    -------
    matplotlib.figure.Figure
        The single :class:`~matplotlib.collections.QuadMesh` in ``fig.axes[0]``
        holds the ``(g2, g1)`` array; NaN cells are masked (blank).
    """
    check_run(ds, "plane", variable)
    alpha, beta, z = plane_values(ds, variable)
    norm = _make_norm(z, log_scale)
    fig, ax = subplots(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax.set_facecolor("0.85")  # not-yet-computed cells show as light grey
    mesh = ax.pcolormesh(
        alpha, beta, np.ma.masked_invalid(z), shading="nearest", cmap=CMAP, norm=norm,
    )
    _mark_origin_2d(ax, alpha, beta)
    xlabel, ylabel = plane_axis_labels(ds)
    ax.set_xlabel(wrap_label(xlabel, 80), fontsize=9)
    ax.set_ylabel(wrap_label(ylabel, 60), fontsize=9)
    fig.colorbar(mesh, ax=ax, label=describe_variable(variable))
    _set_titles(fig, ax, ds, variable)
    return fig


def contour_figure(ds: xr.Dataset, variable: str = "return_mean", *, log_scale: bool = False) -> Figure:
    """Filled contour plot with labelled contour lines (x = α, y = β).

    Parameters
    ----------
    ds : xarray.Dataset
        Plane results; ``ds[variable]`` has dims ``(alpha, beta)`` = ``(g1, g2)``.
    variable : str
        Per-point variable to contour.
    log_scale : bool
        If True, levels and colours follow a symmetric-log scale.

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_run(ds, "plane", variable)
    alpha, beta, z = plane_values(ds, variable)
    if alpha.size < 2 or beta.size < 2:
        raise ValueError("a contour plot needs at least a 2×2 grid; use the heatmap instead")
    norm = _make_norm(z, log_scale)
    levels = contour_levels(norm)
    zm = np.ma.masked_invalid(z)
    fig, ax = subplots(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax.set_facecolor("0.85")
    filled = ax.contourf(alpha, beta, zm, levels=levels, cmap=CMAP, norm=norm, extend="neither")
    if np.isfinite(z).sum() >= 4 and len(levels) >= 3:
        if isinstance(norm, mcolors.SymLogNorm):
            line_levels = _symlog_ticks(norm)
            line_levels = line_levels[np.abs(line_levels) >= 10 * norm.linthresh]
        else:
            line_levels = levels[1:-1][::2] if len(levels) > 8 else levels[1:-1]
        lines = ax.contour(alpha, beta, zm, levels=line_levels, colors="k", linewidths=0.6)
        if len(lines.levels):
            ax.clabel(lines, fmt=format_number, fontsize=7, inline=True)
    _mark_origin_2d(ax, alpha, beta)
    xlabel, ylabel = plane_axis_labels(ds)
    ax.set_xlabel(wrap_label(xlabel, 80), fontsize=9)
    ax.set_ylabel(wrap_label(ylabel, 60), fontsize=9)
    cbar = fig.colorbar(filled, ax=ax, label=describe_variable(variable))
    if isinstance(norm, mcolors.SymLogNorm):
        cbar.set_ticks(_symlog_ticks(norm).tolist())
    else:
        cbar.ax.yaxis.set_major_locator(MaxNLocator(nbins=8))
    _set_titles(fig, ax, ds, variable)
    return fig


def plot_plane(
    ds: xr.Dataset,
    out_dir: str | Path,
    *,
    variable: str = "return_mean",
    log_scale: bool = False,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """Write the static figures of a plane run.

    Parameters
    ----------
    ds : xarray.Dataset
        Plane results (``attrs["kind"] == "plane"``); ``ds[variable]`` has dims
        ``(alpha, beta)`` = ``(g1, g2)``. NaN points are drawn blank.
    out_dir : str or Path
        Output directory (created if missing).
    variable : str
        Per-point variable to plot, default ``"return_mean"``.
    log_scale : bool
        Use a symmetric-log ("symlog") colour / z scale. Off by default.
    formats : sequence of str
        File formats, a subset of ``("png", "pdf", "svg")``.

    Returns
    -------
    list of Path
        ``surface_3d.<fmt>``, ``heatmap.<fmt>`` and ``contour.<fmt>`` for each
        format (surface and contour are skipped for grids narrower than 2).

    Raises
    ------
    ValueError
        If ``ds`` is not a plane run, lacks ``variable`` or has no finite points.
    """
    check_run(ds, "plane", variable)
    fmts = check_formats(formats)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    wide_enough = ds.sizes["alpha"] >= 2 and ds.sizes["beta"] >= 2
    if wide_enough:
        paths += save_static(surface_figure(ds, variable, log_scale=log_scale), out, "surface_3d", fmts)
    paths += save_static(heatmap_figure(ds, variable, log_scale=log_scale), out, "heatmap", fmts)
    if wide_enough:
        paths += save_static(contour_figure(ds, variable, log_scale=log_scale), out, "contour", fmts)
    else:
        logger.warning("plane grid %s is degenerate; wrote the heatmap only", dict(ds.sizes))
    if _attr(ds, "episodes_rule") == "auto":  # where the episodes went, and the uncertainty they bought
        for var, stem in (("return_sem", "heatmap_sem"), ("n_episodes", "heatmap_episodes")):
            if var in ds and np.isfinite(np.asarray(ds[var].values, float)).any():
                paths += save_static(heatmap_figure(ds, var), out, stem, fmts)
    return paths


# ---------------------------------------------------------------------------
# Line figure
# ---------------------------------------------------------------------------


def line_markers(ds: xr.Dataset) -> list[tuple[float, str]]:
    """Special α positions of a line run and their (mathtext) labels.

    Returns
    -------
    list of (float, str)
        ``[(0, "θ0")]`` for random/file directions; ``[(0, "θ1"), (1, "θ2")]``
        for interpolation runs. Positions outside the α range are dropped.
    """
    alpha = np.asarray(ds["alpha"].values, dtype=float)
    lo, hi = float(np.min(alpha)), float(np.max(alpha))
    if _attr(ds, "direction_kind") == "interpolation":
        marks = [(0.0, r"$\theta_1$"), (1.0, r"$\theta_2$")]
    else:
        marks = [(0.0, r"$\theta_0$")]
    return [(a, lab) for a, lab in marks if lo - 1e-12 <= a <= hi + 1e-12]


def line_figure(ds: xr.Dataset, variable: str = "return_mean", *, log_scale: bool = False) -> Figure:
    """Mean ± SEM along a 1-D direction, with θ0 (or θ1/θ2) marked.

    Parameters
    ----------
    ds : xarray.Dataset
        Line results; ``ds[variable]`` has dims ``(alpha,)`` = ``(g,)``;
        per-episode ``returns`` ``(alpha, episode)`` are drawn as faint dots
        when plotting ``return_mean``.
    variable : str
        Per-point variable to plot.
    log_scale : bool
        If True use a symmetric-log y axis.

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_run(ds, "line", variable)
    alpha = np.asarray(ds["alpha"].values, dtype=float)
    mean = np.asarray(ds[variable].values, dtype=float)
    fig, ax = subplots(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    all_y = [mean]
    if variable == "return_mean" and "returns" in ds.data_vars and "episode" in ds["returns"].dims:
        per_ep = np.asarray(ds["returns"].transpose("alpha", "episode").values, dtype=float)
        xs = np.repeat(alpha, per_ep.shape[1])
        ys = per_ep.ravel()
        ok = np.isfinite(ys)
        if ok.any():
            ax.scatter(xs[ok], ys[ok], s=6, color="0.55", alpha=0.35, lw=0, label="episodes", zorder=1)
            all_y.append(ys[ok])
    sem_name = sem_variable_for(ds, variable)
    if sem_name is not None:
        sem = np.asarray(ds[sem_name].values, dtype=float)
        ax.fill_between(
            alpha, mean - sem, mean + sem, color="C0", alpha=0.25, lw=0, label="± SEM", zorder=2,
        )
        all_y += [mean - sem, mean + sem]
    ax.plot(alpha, mean, color="C0", lw=1.8, marker="o", ms=3, label=describe_variable(variable), zorder=3)
    y_all = np.concatenate([np.ravel(y) for y in all_y])
    if log_scale:
        ax.set_yscale("symlog", linthresh=symlog_linthresh(y_all))
    ax.margins(x=0.02, y=0.12)  # head-room for the θ labels at the top
    blended = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    for a0, label in line_markers(ds):
        ax.axvline(a0, color="red", ls=":", lw=1.0, zorder=2)
        idx = int(np.argmin(np.abs(alpha - a0)))
        if np.isclose(alpha[idx], a0) and np.isfinite(mean[idx]):
            ax.plot([a0], [mean[idx]], marker="*", ms=13, color="red", mec="white", mew=1.0,
                    ls="none", zorder=4)
        ax.text(a0, 0.98, label, transform=blended, ha="center", va="top", fontsize=12,
                color="red", zorder=5,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.8, "lw": 0})
    ax.set_xlabel(wrap_label(line_axis_label(ds), 90), fontsize=9)
    ax.set_ylabel(describe_variable(variable), fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    _set_titles(fig, ax, ds, variable)
    return fig


def plot_line(
    ds: xr.Dataset,
    out_dir: str | Path,
    *,
    variable: str = "return_mean",
    log_scale: bool = False,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[Path]:
    """Write the static figure of a line run (``line.<fmt>``).

    Parameters
    ----------
    ds : xarray.Dataset
        Line results (``attrs["kind"] == "line"``); ``ds[variable]`` has dims
        ``(alpha,)`` = ``(g,)``. NaN points appear as gaps.
    out_dir : str or Path
        Output directory (created if missing).
    variable : str
        Per-point variable to plot, default ``"return_mean"``; the band uses the
        matching SEM variable (``return_sem``) when stored.
    log_scale : bool
        Use a symmetric-log ("symlog") y axis. Off by default.
    formats : sequence of str
        File formats, a subset of ``("png", "pdf", "svg")``.

    Returns
    -------
    list of Path
        ``line.<fmt>`` for each format.

    Raises
    ------
    ValueError
        If ``ds`` is not a line run, lacks ``variable`` or has no finite points.
    """
    check_run(ds, "line", variable)
    fmts = check_formats(formats)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return save_static(line_figure(ds, variable, log_scale=log_scale), out, "line", fmts)
