"""Datasets that need no download, built deterministically from a declarative spec.

- ``digits``: scikit-learn's 1,797 handwritten digits, 8×8 images scaled to [0, 1], 10 classes; a
  stratified train/test split from ``seed`` (``test_fraction``), optionally subsampled to ``n_train``.
- ``pca_parity``: the digits projected on the first ``components`` principal components of the training
  split, each component scaled to unit variance on the training split; two classes, even (0, label −1)
  and odd (1, label +1) digits.
- ``teacher``: ``x ~ N(0, I_dim)``, class ``[f*(x) > 0]`` of a random teacher
  ``f*(x) = a·tanh(W x / sqrt(dim)) / sqrt(h)`` (``W`` ``[h, dim]``, ``a`` ``[h]`` standard normal,
  ``h = teacher_hidden``); each label flipped with probability ``label_noise``.
- ``gaussian_mixture``: ``classes`` balanced classes, ``x = μ_c + N(0, I_dim)`` with class centres
  ``μ_c`` at distance ``separation`` from the origin in random directions.
- ``mnist``, ``fashion_mnist``, ``cifar10``: the standard files under ``root`` (IDX, CIFAR-10 binary; see
  :mod:`trajkit.experiments.image_datasets`), the usual split, ``preprocess`` none, standardize or
  binary_pca (``n_components``).
- ``npz``: a user file with arrays ``X_train, y_train, X_test, y_test``; integer labels are classes
  (``{-1, +1}`` is read as classes 0 and 1), float labels are regression targets (``mse`` only).

Inputs are float32 ``[P, D]`` (each sample flattened; ``input_shape`` keeps its shape, e.g. ``(8, 8)``).
:func:`build_dataset` rebuilds exactly the same arrays from :func:`dataset_spec` (stored in archive
metadata as ``dataset.spec``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from trajkit.errors import ConfigError
from trajkit.experiments.image_datasets import IMAGE_DATASETS, build_image_dataset
from trajkit.models.data import Dataset

SYNTHETIC_DEFAULT_SIZE = 1000

#: the data keys each dataset reads (its spec), besides ``name``
SPEC_KEYS: dict[str, tuple[str, ...]] = {
    "digits": ("seed", "test_fraction", "n_train", "n_test"),
    "pca_parity": ("seed", "test_fraction", "n_train", "n_test", "components"),
    "teacher": ("seed", "n_train", "n_test", "dim", "teacher_hidden", "label_noise"),
    "gaussian_mixture": ("seed", "n_train", "n_test", "dim", "classes", "separation"),
    "npz": ("path", "sha256"),
    **{name: ("root", "seed", "n_train", "n_test", "preprocess", "n_components") for name in IMAGE_DATASETS},
    "bach_chorales": ("seed", "test_fraction", "n_train", "n_test", "chorales", "quantisation", "seq_len",
                      "transpositions", "strict", "encoding"),
}


def dataset_spec(data: dict[str, Any]) -> dict[str, Any]:
    """The declarative spec of the ``[data]`` section: ``name`` plus the keys that dataset reads.

    For ``npz`` the file's sha256 is added, so a rebuild notices a changed file.
    """
    from trajkit.experiments.config import SCHEMA

    name = data.get("name")
    if name not in SPEC_KEYS:
        raise ConfigError(f"dataset {name!r} is unknown; use one of {', '.join(SPEC_KEYS)}")
    spec: dict[str, Any] = {"name": name}
    for k in SPEC_KEYS[name]:
        if k in ("sha256", "encoding"):  # derived from the data: checked on rebuild
            if k in data:
                spec[k] = data[k]
            continue
        spec[k] = data[k] if k in data else SCHEMA["data"][k].default
    if name == "npz":
        spec["sha256"] = data.get("sha256") or _sha256(_npz_path(spec.get("path")))
    return spec


def build_dataset(spec: dict[str, Any]) -> Dataset:
    """Build the dataset described by ``spec`` (a :func:`dataset_spec` or a whole ``[data]`` section)."""
    spec = dataset_spec(spec)
    builder = {"digits": _digits, "pca_parity": _pca_parity, "teacher": _teacher,
               "gaussian_mixture": _gaussian_mixture, "npz": _npz, "bach_chorales": _bach_chorales,
               **dict.fromkeys(IMAGE_DATASETS, build_image_dataset)}[spec["name"]]
    ds = builder(spec)
    ds.spec = {**spec, **ds.spec}  # a builder may add what it derived from the data (checked on rebuild)
    return ds


def _bach_chorales(spec: dict[str, Any]) -> Dataset:
    from trajkit.experiments.chorales import build_chorales

    return build_chorales(spec)


# -- digits and its PCA parity task -------------------------------------------------------------------------


def _digits_split(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=spec["test_fraction"], random_state=spec["seed"],
                                          stratify=y)
    rng = np.random.default_rng([spec["seed"], 1])
    for key, X_, y_ in (("n_train", Xtr, ytr), ("n_test", Xte, yte)):
        n = spec.get(key)
        if n is not None:
            if n > len(X_):
                raise ConfigError(f"data.{key} = {n} exceeds the {len(X_)} {spec['name']} samples of that split "
                                  "(1,797 digits in all); lower it or change data.test_fraction")
            keep = np.sort(rng.permutation(len(X_))[:n])
            if key == "n_train":
                Xtr, ytr = X_[keep], y_[keep]
            else:
                Xte, yte = X_[keep], y_[keep]
    return Xtr, Xte, ytr, yte


def _digits(spec: dict[str, Any]) -> Dataset:
    Xtr, Xte, ytr, yte = _digits_split(spec)
    return Dataset("digits", Xtr, ytr, Xte, yte, (8, 8), 10)


def _pca_parity(spec: dict[str, Any]) -> Dataset:
    Xtr, Xte, ytr, yte = _digits_split(spec)
    k = spec["components"]
    mean = Xtr.mean(axis=0, dtype=np.float64)
    _, _, vt = np.linalg.svd(Xtr.astype(np.float64) - mean, full_matrices=False)
    vt *= np.where(vt[:, :1] < 0, -1.0, 1.0)  # a fixed sign per component
    proj = vt[:k].T
    ztr, zte = (Xtr - mean) @ proj, (Xte - mean) @ proj
    scale = ztr.std(axis=0)
    scale[scale == 0] = 1.0
    return Dataset("pca_parity", (ztr / scale).astype(np.float32), ytr % 2, (zte / scale).astype(np.float32),
                   yte % 2, (k,), 2)


# -- synthetic ----------------------------------------------------------------------------------------------


def _sizes(spec: dict[str, Any]) -> tuple[int, int]:
    n_train = spec.get("n_train") or SYNTHETIC_DEFAULT_SIZE
    n_test = spec.get("n_test") or SYNTHETIC_DEFAULT_SIZE
    return int(n_train), int(n_test)


def _teacher(spec: dict[str, Any]) -> Dataset:
    n_train, n_test = _sizes(spec)
    d, h = spec["dim"], spec["teacher_hidden"]
    rng = np.random.default_rng([spec["seed"], 2])
    W, a = rng.standard_normal((h, d)), rng.standard_normal(h)
    X = rng.standard_normal((n_train + n_test, d))
    f = np.tanh(X @ W.T / np.sqrt(d)) @ a / np.sqrt(h)
    y = (f > 0).astype(np.int64)
    flip = rng.random(y.size) < spec["label_noise"]
    y[flip] = 1 - y[flip]
    X = X.astype(np.float32)
    return Dataset("teacher", X[:n_train], y[:n_train], X[n_train:], y[n_train:], (d,), 2)


def _gaussian_mixture(spec: dict[str, Any]) -> Dataset:
    n_train, n_test = _sizes(spec)
    d, c = spec["dim"], spec["classes"]
    rng = np.random.default_rng([spec["seed"], 3])
    centres = rng.standard_normal((c, d))
    centres *= spec["separation"] / np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.permutation(np.arange(n_train + n_test) % c).astype(np.int64)
    X = (centres[y] + rng.standard_normal((y.size, d))).astype(np.float32)
    return Dataset("gaussian_mixture", X[:n_train], y[:n_train], X[n_train:], y[n_train:], (d,), c)


# -- user npz -----------------------------------------------------------------------------------------------


def _npz_path(path: Any) -> Path:
    if not path:
        raise ConfigError("data.path is required for data.name = \"npz\"")
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"data.path {str(p)!r}: no such file; give an .npz with X_train, y_train, X_test, "
                          "y_test")
    return p


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _npz(spec: dict[str, Any]) -> Dataset:
    p = _npz_path(spec["path"])
    digest = _sha256(p)
    if spec.get("sha256") and spec["sha256"] != digest:
        raise ConfigError(f"data.path {str(p)!r}: the file changed since the run was recorded (sha256 "
                          f"{digest[:12]}… != {spec['sha256'][:12]}…); restore the original file")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("X_train", "y_train", "X_test", "y_test") if k not in z.files]
            if missing:
                raise ConfigError(f"data.path {str(p)!r}: missing array {missing[0]} (has {', '.join(z.files)}); "
                                  "the file needs X_train, y_train, X_test, y_test")
            arrays = {k: np.asarray(z[k]) for k in ("X_train", "y_train", "X_test", "y_test")}
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"data.path {str(p)!r}: cannot read as .npz ({type(e).__name__}: {e})") from None
    Xtr, ytr, Xte, yte = arrays["X_train"], arrays["y_train"], arrays["X_test"], arrays["y_test"]
    for split, X, y in (("train", Xtr, ytr), ("test", Xte, yte)):
        if X.ndim < 2 or X.shape[0] == 0:
            raise ConfigError(f"data.path {str(p)!r}: X_{split} must have shape [samples, features...], got "
                              f"{X.shape}")
        if y.shape[:1] != X.shape[:1]:
            raise ConfigError(f"data.path {str(p)!r}: X_{split} has {X.shape[0]} samples but y_{split} has "
                              f"{y.shape[0] if y.ndim else 0}; they must match")
        if X.dtype.kind not in "fiu" or y.dtype.kind not in "fiub":
            raise ConfigError(f"data.path {str(p)!r}: X_{split}/y_{split} must be numeric arrays")
        if not np.isfinite(X).all():
            raise ConfigError(f"data.path {str(p)!r}: X_{split} holds NaN or inf values")
    if Xtr.shape[1:] != Xte.shape[1:]:
        raise ConfigError(f"data.path {str(p)!r}: X_train samples have shape {Xtr.shape[1:]} but X_test samples "
                          f"{Xte.shape[1:]}; they must match")
    shape = tuple(int(s) for s in Xtr.shape[1:])
    Xtr = Xtr.reshape(len(Xtr), -1).astype(np.float32)
    Xte = Xte.reshape(len(Xte), -1).astype(np.float32)
    if ytr.dtype.kind in "iub" and yte.dtype.kind in "iub":
        ytr, yte = ytr.astype(np.int64).ravel(), yte.astype(np.int64).ravel()
        labels = np.union1d(ytr, yte)
        if set(labels.tolist()) <= {-1, 1}:
            ytr, yte = (ytr > 0).astype(np.int64), (yte > 0).astype(np.int64)
            n_classes = 2
        elif labels.min() < 0:
            raise ConfigError(f"data.path {str(p)!r}: integer labels must be classes 0..C-1 (or -1/+1), found "
                              f"{int(labels.min())}")
        else:
            n_classes = max(int(labels.max()) + 1, 2)
        return Dataset("npz", Xtr, ytr, Xte, yte, shape, n_classes)
    ytr = ytr.reshape(len(ytr), -1).astype(np.float32)
    yte = yte.reshape(len(yte), -1).astype(np.float32)
    if ytr.shape[1] != yte.shape[1]:
        raise ConfigError(f"data.path {str(p)!r}: y_train has {ytr.shape[1]} target columns but y_test "
                          f"{yte.shape[1]}")
    return Dataset("npz", Xtr, ytr, Xte, yte, shape, None)
