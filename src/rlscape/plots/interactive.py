"""Interactive (plotly) HTML figures for stored landscape results.

The HTML files embed plotly.js (``include_plotlyjs=True``) so they open
offline. Only stored results are read; nothing is recomputed.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from .static import (
    check_run,
    describe_variable,
    format_number,
    line_axis_label,
    line_markers,
    plane_axis_labels,
    plane_values,
    run_subtitle,
    run_title,
    sem_variable_for,
    wrap_label,
)

logger = logging.getLogger(__name__)

__all__ = ["plot_plane_html", "plot_line_html", "plane_html_figure", "line_html_figure"]

_GREEK = {r"$\theta_0$": "θ0", r"$\theta_1$": "θ1", r"$\theta_2$": "θ2"}


def _nan_to_none(a: np.ndarray) -> list:
    """Nested lists with NaN → None, so plotly draws gaps (JSON ``null``)."""
    arr = np.asarray(a, dtype=object)
    arr[~np.isfinite(np.asarray(a, dtype=float))] = None
    return arr.tolist()


def _fmt(v: float) -> str:
    return format_number(v) if math.isfinite(v) else "n/a"


def _title_html(ds: xr.Dataset, variable: str) -> str:
    title = run_title(ds, variable)
    subtitle = run_subtitle(ds)
    if subtitle:
        title += f"<br><sup>{subtitle}</sup>"
    return title


def plane_html_figure(ds: xr.Dataset, variable: str = "return_mean") -> go.Figure:
    """Plotly 3-D surface of a plane run.

    Parameters
    ----------
    ds : xarray.Dataset
        Plane results; ``ds[variable]`` has dims ``(alpha, beta)`` = ``(g1, g2)``.
        The surface's ``z`` is the ``(g2, g1)`` transpose (rows follow β).
    variable : str
        Per-point variable to plot.

    Returns
    -------
    plotly.graph_objects.Figure
        Trace 0 is the :class:`~plotly.graph_objects.Surface`; a
        :class:`~plotly.graph_objects.Scatter3d` marks θ0 when it was computed.
    """
    check_run(ds, "plane", variable)
    alpha, beta, z = plane_values(ds, variable)
    sem_name = sem_variable_for(ds, variable)
    sem = plane_values(ds, sem_name)[2] if sem_name else np.full_like(z, np.nan)
    n = plane_values(ds, "n_episodes")[2] if "n_episodes" in ds.data_vars else None
    desc = describe_variable(variable)

    text = []
    for j, b in enumerate(beta):
        row = []
        for i, a in enumerate(alpha):
            s = f"α = {_fmt(a)}<br>β = {_fmt(b)}<br>"
            if math.isfinite(z[j, i]):
                s += f"{desc} = {_fmt(z[j, i])}"
                if math.isfinite(sem[j, i]):
                    s += f" ± {_fmt(sem[j, i])} (SEM)"
            else:
                s += "not computed"
            if n is not None and math.isfinite(n[j, i]):
                s += f"<br>episodes: {int(n[j, i])}"
            row.append(s)
        text.append(row)

    fig = go.Figure()
    fig.add_trace(
        go.Surface(
            x=alpha.tolist(), y=beta.tolist(), z=_nan_to_none(z), text=np.array(text, dtype=object),
            hovertemplate="%{text}<extra></extra>", colorscale="Viridis",
            colorbar={"title": {"text": desc}}, name=desc,
        )
    )
    ia = np.flatnonzero(np.isclose(alpha, 0.0))
    ib = np.flatnonzero(np.isclose(beta, 0.0))
    if ia.size and ib.size and math.isfinite(z[ib[0], ia[0]]):
        z0 = float(z[ib[0], ia[0]])
        fig.add_trace(
            go.Scatter3d(
                x=[0.0], y=[0.0], z=[z0], mode="markers+text", text=["θ0"],
                textposition="top center", marker={"size": 6, "color": "red", "symbol": "diamond"},
                name="θ0 (centre)", hovertemplate=f"θ0<br>{desc} = {_fmt(z0)}<extra></extra>",
            )
        )
    xlabel, ylabel = plane_axis_labels(ds)
    fig.update_layout(
        title={"text": _title_html(ds, variable)},
        scene={
            "xaxis": {"title": {"text": wrap_label(xlabel, 45, "<br>")}},
            "yaxis": {"title": {"text": wrap_label(ylabel, 45, "<br>")}},
            "zaxis": {"title": {"text": desc}},
        },
        showlegend=False,
        width=900,
        height=750,
    )
    return fig


def plot_plane_html(ds: xr.Dataset, out_dir: str | Path, variable: str = "return_mean") -> Path:
    """Write ``surface.html``: an interactive 3-D surface of a plane run.

    Parameters
    ----------
    ds : xarray.Dataset
        Plane results; ``ds[variable]`` has dims ``(alpha, beta)`` = ``(g1, g2)``.
    out_dir : str or Path
        Output directory (created if missing).
    variable : str
        Per-point variable to plot; hover shows α, β, mean ± SEM.

    Returns
    -------
    Path
        ``out_dir / "surface.html"`` (self-contained, works offline).
    """
    return _write_html(plane_html_figure(ds, variable), out_dir, "surface.html")


def line_html_figure(ds: xr.Dataset, variable: str = "return_mean") -> go.Figure:
    """Plotly mean ± SEM line of a line run.

    Parameters
    ----------
    ds : xarray.Dataset
        Line results; ``ds[variable]`` has dims ``(alpha,)`` = ``(g,)``.
    variable : str
        Per-point variable to plot.

    Returns
    -------
    plotly.graph_objects.Figure
        Traces: SEM upper bound, SEM lower bound (filled to the upper one) when
        the SEM is stored, then the mean line, then θ markers.
    """
    check_run(ds, "line", variable)
    alpha = np.asarray(ds["alpha"].values, dtype=float)
    mean = np.asarray(ds[variable].values, dtype=float)
    desc = describe_variable(variable)
    fig = go.Figure()
    sem_name = sem_variable_for(ds, variable)
    if sem_name:
        sem = np.asarray(ds[sem_name].values, dtype=float)
        fig.add_trace(
            go.Scatter(x=alpha.tolist(), y=_nan_to_none(mean + sem), mode="lines",
                       line={"width": 0}, name="mean + SEM", showlegend=False,
                       hoverinfo="skip")
        )
        fig.add_trace(
            go.Scatter(x=alpha.tolist(), y=_nan_to_none(mean - sem), mode="lines",
                       line={"width": 0}, fill="tonexty", fillcolor="rgba(31,119,180,0.25)",
                       name="± SEM", hoverinfo="skip")
        )
        custom = _nan_to_none(sem)
        hover = f"α = %{{x:.4g}}<br>{desc} = %{{y:.4g}} ± %{{customdata:.3g}} (SEM)<extra></extra>"
    else:
        custom = None
        hover = f"α = %{{x:.4g}}<br>{desc} = %{{y:.4g}}<extra></extra>"
    fig.add_trace(
        go.Scatter(x=alpha.tolist(), y=_nan_to_none(mean), customdata=custom, mode="lines+markers",
                   line={"color": "rgb(31,119,180)", "width": 2}, marker={"size": 5},
                   name=desc, hovertemplate=hover)
    )
    for a0, label in line_markers(ds):
        name = _GREEK.get(label, label)
        fig.add_vline(x=a0, line={"color": "red", "dash": "dot", "width": 1},
                      annotation_text=name, annotation_position="top")
        idx = int(np.argmin(np.abs(alpha - a0)))
        if np.isclose(alpha[idx], a0) and np.isfinite(mean[idx]):
            fig.add_trace(
                go.Scatter(x=[a0], y=[float(mean[idx])], mode="markers", name=name,
                           marker={"color": "red", "size": 12, "symbol": "star"},
                           hovertemplate=f"{name}<br>{desc} = {_fmt(float(mean[idx]))}<extra></extra>")
            )
    fig.update_layout(
        title={"text": _title_html(ds, variable)},
        xaxis={"title": {"text": line_axis_label(ds)}},
        yaxis={"title": {"text": desc}},
        width=900,
        height=600,
        template="plotly_white",
    )
    return fig


def plot_line_html(ds: xr.Dataset, out_dir: str | Path, variable: str = "return_mean") -> Path:
    """Write ``line.html``: an interactive mean ± SEM plot of a line run.

    Parameters
    ----------
    ds : xarray.Dataset
        Line results; ``ds[variable]`` has dims ``(alpha,)`` = ``(g,)``.
    out_dir : str or Path
        Output directory (created if missing).
    variable : str
        Per-point variable to plot.

    Returns
    -------
    Path
        ``out_dir / "line.html"`` (self-contained, works offline).
    """
    return _write_html(line_html_figure(ds, variable), out_dir, "line.html")


def _write_html(fig: go.Figure, out_dir: str | Path, name: str) -> Path:
    """Write ``fig`` as a self-contained page (plotly.js embedded: works offline)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    logger.debug("wrote %s", path)
    return path
