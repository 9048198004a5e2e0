"""Training losses of ``trajkit record``: the per-sample losses and accuracy live in
:mod:`trajkit.models.losses` (re-exported here); this module adds how many outputs a network needs.
"""

from __future__ import annotations

from trajkit.errors import ConfigError
from trajkit.experiments.datasets import Dataset
from trajkit.models.losses import LOSSES, correct, per_sample, targets

__all__ = ["LOSSES", "correct", "n_outputs", "per_sample", "targets"]


def n_outputs(loss: str, dataset: Dataset) -> int:
    """Number of network outputs K for ``loss`` on ``dataset``."""
    if dataset.n_classes is None:
        if loss != "mse":
            raise ConfigError(f"loss.name = {loss!r} needs class labels, but the data has float (regression) "
                              "targets; use loss.name = \"mse\" or integer labels")
        return dataset.n_targets
    if loss == "cross_entropy":
        return dataset.n_classes
    return 1 if dataset.n_classes == 2 else dataset.n_classes
