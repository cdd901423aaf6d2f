"""Figures that never touch pyplot's global state or the user's matplotlib backend.

``matplotlib.figure.Figure`` with an Agg canvas attached: drawing and ``savefig`` work the same in
a script, a test and a notebook, and importing :mod:`rlscape.plots` leaves ``matplotlib.use`` to
the user. Nothing needs ``plt.close``: a figure is freed with its last reference.
"""

from __future__ import annotations

from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["new_figure", "subplots"]


def new_figure(**kwargs: Any) -> Figure:
    """A ``Figure(**kwargs)`` (figsize, dpi, layout, …) drawn by Agg, unknown to pyplot."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None, dpi: float | None = None,
             layout: str | None = None, **kwargs: Any) -> tuple[Figure, Any]:
    """Like ``plt.subplots`` (``sharex``, ``sharey``, ``squeeze``, ``subplot_kw`` go to ``Figure.subplots``)."""
    fig_kw: dict[str, Any] = {"figsize": figsize, "layout": layout}
    if dpi is not None:
        fig_kw["dpi"] = dpi
    fig = new_figure(**fig_kw)
    return fig, fig.subplots(nrows, ncols, **kwargs)
