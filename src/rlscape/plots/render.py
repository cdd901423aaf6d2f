"""Render every figure of a stored run: one renderer per result kind.

:mod:`rlscape.core.kinds` says what kinds exist (and refuses unknown ones or newer schema
versions); :data:`RENDERERS` maps each of those names to the function that draws it. The analysis
commands and ``rlscape plot DIR`` both go through :func:`render_run`, so a figure drawn when a run
finishes is the figure ``rlscape plot`` redraws later. Renderers read stored results only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from rlscape.core.errors import RlscapeError
from rlscape.core.kinds import kind_of

from .cliffs import plot_cliff_dive, plot_cliffs, plot_stepsize
from .curvature import plot_curvature, plot_gradient
from .figure import check_formats
from .interactive import plot_line_html, plot_plane_html
from .overtrain import render_over_training
from .population import plot_population
from .purd import plot_cvar_train, plot_interpolation, plot_purd
from .quality import plot_grad_quality, plot_surrogate, plot_value_error
from .regions import plot_regions, plot_regions_plane
from .static import check_run, plot_line, plot_plane
from .subspace import plot_subspace

logger = logging.getLogger(__name__)

__all__ = ["render_run", "open_results", "PlotOptions", "RENDERERS"]


@dataclass(frozen=True)
class PlotOptions:
    """What every renderer may use: formats, symlog scale, plotted variable, HTML, GIF, the run folder."""

    formats: tuple[str, ...] = ("png", "pdf")
    log_scale: bool = False
    variable: str = "return_mean"
    html: bool = True
    gif: bool = False
    run_dir: Path | None = None


Renderer = Callable[[xr.Dataset, Path, PlotOptions], list[Path]]


def _plane(ds: xr.Dataset, out: Path, o: PlotOptions) -> list[Path]:
    check_run(ds, "plane", o.variable)  # before any file is written
    paths = plot_plane(ds, out, variable=o.variable, log_scale=o.log_scale, formats=o.formats)
    return paths + ([plot_plane_html(ds, out, variable=o.variable)] if o.html else [])


def _line(ds: xr.Dataset, out: Path, o: PlotOptions) -> list[Path]:
    check_run(ds, "line", o.variable)
    paths = plot_line(ds, out, variable=o.variable, log_scale=o.log_scale, formats=o.formats)
    return paths + ([plot_line_html(ds, out, variable=o.variable)] if o.html else [])


def _over_training(ds: xr.Dataset, out: Path, o: PlotOptions) -> list[Path]:
    return render_over_training(ds, out, gif=o.gif, log_scale=o.log_scale, formats=o.formats, variable=o.variable)


def _cliffs(ds: xr.Dataset, out: Path, o: PlotOptions) -> list[Path]:
    from rlscape.core.results import load

    line_run = ds.attrs.get("line_run")
    if not line_run or not (Path(line_run) / "results.zarr").exists():
        raise RlscapeError(f"the cliff labels' line run {line_run!r} is not there any more; the figure draws that line, "
                           "so put it back or relabel with `rlscape cliffs LINE_RUN`")
    return plot_cliffs(load(line_run), ds, out, formats=o.formats)


#: kind name (see :data:`rlscape.core.kinds.KINDS`) → renderer.
RENDERERS: dict[str, Renderer] = {
    "plane": _plane,
    "line": _line,
    "curve": _over_training,
    "plane-over-training": _over_training,
    "line-over-training": _over_training,
    "gradient": lambda ds, out, o: plot_gradient(ds, out, o.formats, run_dir=o.run_dir),
    "gradient-over-training": lambda ds, out, o: plot_gradient(ds, out, o.formats),
    "hessian": lambda ds, out, o: plot_curvature(ds, out, o.formats),
    "hessian-over-training": lambda ds, out, o: plot_curvature(ds, out, o.formats),
    "stepsize": lambda ds, out, o: plot_stepsize(ds, out, o.formats),
    "stepsize-over-training": lambda ds, out, o: plot_stepsize(ds, out, o.formats),
    "cliffs": _cliffs,
    "cliff-dive": lambda ds, out, o: plot_cliff_dive(ds, out, o.formats),
    "population": lambda ds, out, o: plot_population(ds, out, o.formats),
    "purd": lambda ds, out, o: plot_purd(ds, out, o.formats),
    "purd-over-training": lambda ds, out, o: plot_purd(ds, out, o.formats),
    "interpolation": lambda ds, out, o: plot_interpolation(ds, out, o.formats),
    "cvar-train": lambda ds, out, o: plot_cvar_train([ds], out, o.formats),
    "regions": lambda ds, out, o: plot_regions(ds, out, o.formats),
    "regions-over-training": lambda ds, out, o: plot_regions(ds, out, o.formats),
    "regions-plane": lambda ds, out, o: plot_regions_plane(ds, out, o.formats),
    "grad-quality": lambda ds, out, o: plot_grad_quality(ds, out, o.formats),
    "grad-quality-over-training": lambda ds, out, o: plot_grad_quality(ds, out, o.formats),
    "value-error": lambda ds, out, o: plot_value_error(ds, out, o.formats),
    "value-error-over-training": lambda ds, out, o: plot_value_error(ds, out, o.formats),
    "surrogate": lambda ds, out, o: plot_surrogate(ds, out, o.formats),
    "subspace": lambda ds, out, o: plot_subspace(ds, out, o.formats),
    "subspace-over-training": lambda ds, out, o: plot_subspace(ds, out, o.formats),
}


def open_results(path: str | Path) -> xr.Dataset:
    """Open stored results from a run directory or a ``results.zarr`` store.

    Parameters
    ----------
    path : str or Path
        ``DIR`` (containing ``results.zarr``) or ``DIR/results.zarr`` itself.

    Returns
    -------
    xarray.Dataset
        Lazily opened dataset.
    """
    p = Path(path)
    if (p / "results.zarr").exists():
        p = p / "results.zarr"
    if not p.exists():
        raise RlscapeError(f"no results at {p}; pass a run directory containing results.zarr")
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
    run_dir: str | Path | None = None,
) -> list[Path]:
    """Write all figures of a run, whatever its kind.

    Parameters
    ----------
    ds : xarray.Dataset or str or Path
        Results dataset, or a run directory / ``results.zarr`` path to open (then also ``run_dir``).
    out_dir : str or Path
        Output directory (created if missing).
    log_scale : bool
        Symmetric-log ("symlog") colour / y scale for landscapes.
    formats : sequence of str
        Static figure formats, a subset of ``("png", "pdf", "svg")``.
    html : bool
        Planes and lines: also the interactive ``surface.html`` / ``line.html``.
    variable : str
        Landscapes: the per-point variable to plot, default ``"return_mean"``.
    gif : bool
        Planes over training only: also ``surface.gif`` (see :mod:`rlscape.plots.overtrain`).
    run_dir : str or Path, optional
        The run directory, for kinds whose figure reads more than ``results.zarr`` (one
        checkpoint's gradient reads its direction files).

    Returns
    -------
    list of Path
        The files written (see each renderer).

    Raises
    ------
    RlscapeError
        Unknown kind, a newer schema version, missing ``variable`` or no finite points.
    """
    if not isinstance(ds, xr.Dataset):
        if run_dir is None:
            run_dir = Path(ds).parent if Path(ds).suffix == ".zarr" else Path(ds)
        ds = open_results(ds)
    kind = kind_of(ds)
    opts = PlotOptions(formats=check_formats(formats), log_scale=log_scale, variable=variable, html=html, gif=gif,
                       run_dir=Path(run_dir) if run_dir is not None else None)
    paths = RENDERERS[kind.name](ds, Path(out_dir), opts)
    logger.debug("rendered %d file(s) for a %s run into %s", len(paths), kind.name, out_dir)
    return paths
