"""rlscape: map and measure the optimisation landscape of deep reinforcement-learning policies.

Quick use from Python::

    import rlscape
    agent = rlscape.load_checkpoint("runs/quickstart/agent")
    ds = rlscape.plane(agent, grid=11, magnitude=1.0, episodes=10)
    ds.return_mean.plot()
    ds = rlscape.load("runs/quickstart/plane")   # any stored run

Heavy modules are imported lazily so ``import rlscape`` and ``rlscape --help`` stay fast.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Agent", "RlscapeError", "evaluate_population", "load", "load_checkpoint", "plane", "line", "random_direction",
           "__version__"]

logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:  # pragma: no cover
    from rlscape.analyses.surface import line, plane
    from rlscape.core.directions import random_direction
    from rlscape.core.errors import RlscapeError
    from rlscape.core.policy import Agent, load_checkpoint
    from rlscape.core.population import evaluate_population
    from rlscape.core.results import load

_LAZY = {
    "Agent": "rlscape.core.policy",
    "load_checkpoint": "rlscape.core.policy",
    "RlscapeError": "rlscape.core.errors",
    "plane": "rlscape.analyses.surface",
    "line": "rlscape.analyses.surface",
    "random_direction": "rlscape.core.directions",
    "load": "rlscape.core.results",
    "evaluate_population": "rlscape.core.population",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlscape' has no attribute {name!r}")
