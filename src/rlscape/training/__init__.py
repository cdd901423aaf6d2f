"""Training SB3 agents with whole checkpoints (``rlscape train``, the quickstart agent).

Training is not an analysis: it produces the training runs that analyses read
(layout in :mod:`rlscape.core.runs`).
"""
