"""Importing rlscape's plotting never changes the user's matplotlib backend (no ``matplotlib.use``)."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys

import rlscape.plots

MODULES = sorted(f"rlscape.plots.{m.name}" for m in pkgutil.iter_modules(rlscape.plots.__path__))


def test_importing_every_plots_module_keeps_the_backend() -> None:
    assert {"rlscape.plots.static", "rlscape.plots.cliffs", "rlscape.plots.curvature", "rlscape.plots.overtrain"} <= set(MODULES)
    code = ("import matplotlib, importlib, sys\n"
            "before = matplotlib.get_backend()\n"
            f"for m in {MODULES!r}: importlib.import_module(m)\n"
            "import rlscape.cli\n"
            "print(before, matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n")
    env = {**os.environ, "MPLBACKEND": "svg"}  # a notebook user's choice, stand-in: any non-Agg backend
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["svg", "svg", "False"], out.stdout + out.stderr
