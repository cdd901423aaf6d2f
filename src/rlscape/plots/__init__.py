"""Plotting layer of rlscape: static (matplotlib) and interactive (plotly) figures.

One renderer per result kind (:data:`RENDERERS`, keyed like :data:`rlscape.core.kinds.KINDS`).

Reads stored results only (``DIR/results.zarr``); never recomputes anything.
"""

from .interactive import plot_line_html, plot_plane_html
from .render import RENDERERS, PlotOptions, open_results, render_run
from .static import plot_line, plot_plane

__all__ = [
    "render_run",
    "RENDERERS",
    "PlotOptions",
    "open_results",
    "plot_plane",
    "plot_line",
    "plot_plane_html",
    "plot_line_html",
]
