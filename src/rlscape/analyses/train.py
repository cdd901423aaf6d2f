"""Former home of :mod:`rlscape.training.train`, kept as an alias.

Checkpoints written by ``rlscape train`` before training moved to :mod:`rlscape.training` pickle their
``lin_X`` learning-rate schedules as ``rlscape.analyses.train.LinearSchedule``; this name keeps
them loadable. New code imports from :mod:`rlscape.training.train`.
"""

from rlscape.training.train import LinearSchedule

__all__ = ["LinearSchedule"]
