"""Render every figure of a stored run (dispatch on ``ds.attrs["kind"]``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from .interactive import plot_line_html, plot_plane_html
from .overtrain import is_over_training, render_over_training
from .static import check_run, plot_line, plot_plane

logger = logging.getLogger(__name__)

__all__ = ["render_run", "open_results"]

_KINDS = ("plane", "line")


def open_results(path: str | Path) -> xr.Dataset:
    """Open stored results from a run directory or a ``results.zarr`` store.

    Parameters
    ----------
    path : str or Path
        ``DIR`` (containing ``results.zarr``) or ``DIR/results.zarr`` itself.

    Returns
    -------
    xarray.Dataset
        Lazily opened dataset (see the data contract in :mod:`rlscape.plots.static`).
    """
    p = Path(path)
    if (p / "results.zarr").exists():
        p = p / "results.zarr"
    if not p.exists():
        raise ValueError(f"no results at {p}; pass a run directory containing results.zarr")
    return xr.open_zarr(p)


def render_run(
    ds: xr.Dataset | str | Path,
    out_dir: str | Path,
    *,
    log_scale: bool = False,
    formats: Sequence[str] = ("png", "pdf"),
    html: bool = True,
    variable: str = "return_mean",
    gif: bool = True,
) -> list[Path]:
    """Write all figures of a run.

    Parameters
    ----------
    ds : xarray.Dataset or str or Path
        Results dataset, or a run directory / ``results.zarr`` path to open.
        Plane runs: ``ds[variable]`` dims ``(alpha, beta)`` = ``(g1, g2)``;
        line runs: ``(alpha,)`` = ``(g,)``.
    out_dir : str or Path
        Output directory (created if missing).
    log_scale : bool
        Symmetric-log ("symlog") colour / y scale for the static figures.
    formats : sequence of str
        Static figure formats, a subset of ``("png", "pdf", "svg")``.
    html : bool
        Also write the interactive ``surface.html`` / ``line.html``.
    variable : str
        Per-point variable to plot, default ``"return_mean"``.
    gif : bool
        Planes over training only: also write ``surface.gif`` (see :mod:`rlscape.plots.overtrain`).

    Returns
    -------
    list of Path
        Plane: ``surface_3d.*``, ``heatmap.*``, ``contour.*`` (+ ``surface.html``);
        line: ``line.*`` (+ ``line.html``).

    Raises
    ------
    ValueError
        Unknown ``attrs["kind"]``, missing ``variable``, or no finite points.
    """
    if not isinstance(ds, xr.Dataset):
        ds = open_results(ds)
    if is_over_training(ds):  # a curve, or planes/lines with a leading ``step`` dim
        return render_over_training(ds, out_dir, gif=gif, log_scale=log_scale, formats=formats, variable=variable)
    kind = ds.attrs.get("kind")
    if kind not in _KINDS:
        raise ValueError(
            f"unknown run kind {kind!r} in ds.attrs['kind']; the results must set it to "
            f"one of {_KINDS}"
        )
    check_run(ds, kind, variable)  # before any file is written
    out = Path(out_dir)
    if kind == "plane":
        paths = plot_plane(ds, out, variable=variable, log_scale=log_scale, formats=formats)
        if html:
            paths.append(plot_plane_html(ds, out, variable=variable))
    else:
        paths = plot_line(ds, out, variable=variable, log_scale=log_scale, formats=formats)
        if html:
            paths.append(plot_line_html(ds, out, variable=variable))
    logger.debug("rendered %d file(s) for %s run into %s", len(paths), kind, out)
    return paths
