"""Figures that never touch pyplot's global state or the user's matplotlib backend.

``matplotlib.figure.Figure`` with an Agg canvas attached: drawing and ``savefig`` work the same in
a script, a test and a notebook, and importing :mod:`rlscape.plots` leaves ``matplotlib.use`` to
the user. Nothing needs ``plt.close``: a figure is freed with its last reference.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = ["new_figure", "subplots", "check_formats", "save_figure", "SUPPORTED_FORMATS"]

SUPPORTED_FORMATS: tuple[str, ...] = ("png", "pdf", "svg")


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


def check_formats(formats: Sequence[str] | str) -> tuple[str, ...]:
    """Lower-cased formats without dots; refuses any outside :data:`SUPPORTED_FORMATS`."""
    if isinstance(formats, str):
        formats = (formats,)
    out = tuple(f.lower().lstrip(".") for f in formats)
    bad = [f for f in out if f not in SUPPORTED_FORMATS]
    if bad or not out:
        raise ValueError(f"unsupported figure format(s) {bad or list(out)}; use formats= a subset of {SUPPORTED_FORMATS}")
    return out


def save_figure(fig: Figure, out_dir: str | Path, stem: str, formats: Sequence[str], **savefig_kw: Any) -> list[Path]:
    """Write ``out_dir/<stem>.<fmt>`` for each format (folder created); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in check_formats(formats):
        path = out / f"{stem}.{fmt}"
        fig.savefig(path, **savefig_kw)
        logger.debug("wrote %s", path)
        paths.append(path)
    return paths
