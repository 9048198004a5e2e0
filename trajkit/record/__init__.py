"""Recording training trajectories: the :class:`Recorder` (one model, any training loop), the
:class:`BatchRecorder` (R replicas trained as one batched computation, as ``trajkit record`` does), device
copies and the writer sinks they share."""

from trajkit.record.background import RecordError
from trajkit.record.batch import BatchRecorder
from trajkit.record.recorder import Recorder

__all__ = ["BatchRecorder", "RecordError", "Recorder"]
