"""Recording training trajectories: the :class:`Recorder`, device copies and the writer sinks."""

from trajkit.record.background import RecordError
from trajkit.record.recorder import Recorder

__all__ = ["RecordError", "Recorder"]
