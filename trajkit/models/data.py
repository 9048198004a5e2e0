"""The train and test arrays of a run: :class:`Dataset`, the container every dataset builder returns.

The built-in datasets and their declarative specs are :mod:`trajkit.experiments.datasets`; this class
lives under both ``trajkit.experiments`` and ``trajkit.models`` (a rebuilt run holds one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Dataset:
    """Train and test arrays of one dataset.

    ``X_train`` float32 ``[P, D]``, ``y_train`` int64 ``[P]`` (class indices) or float32 ``[P, K]``
    (regression targets), the same for the test split; ``input_shape`` is one sample's shape before
    flattening (``prod(input_shape) == D``); ``n_classes`` is None for regression.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, ...]
    n_classes: int | None
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.X_test.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_targets(self) -> int:
        """Classes for classification, target columns for regression."""
        return int(self.n_classes) if self.n_classes is not None else int(self.y_train.shape[1])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
                f"input_shape={self.input_shape}, n_classes={self.n_classes})")
