"""MNIST, Fashion-MNIST and CIFAR-10 read from the files users already have (nothing is downloaded).

Formats, as distributed:

- **IDX** (MNIST, Fashion-MNIST): a 4-byte magic ``0x00 0x00 TYPE NDIM`` (TYPE ``0x08`` unsigned byte,
  ``0x09`` signed byte, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), then NDIM
  big-endian uint32 dimensions, then the values, big-endian, row-major. Images are
  ``train-images-idx3-ubyte`` ``[60000, 28, 28]``, labels ``train-labels-idx1-ubyte`` ``[60000]``, and the
  ``t10k-*`` test files; each may be gzipped (``.gz``). They are looked for in ``root`` itself and in the
  folder torchvision uses (``root/MNIST/raw``, ``root/FashionMNIST/raw``).
- **CIFAR-10 binary version** (``cifar-10-binary.tar.gz`` unpacked): ``data_batch_1.bin`` …
  ``data_batch_5.bin`` (training) and ``test_batch.bin``, each a sequence of 3,073-byte records — one label
  byte (0–9), then the 32×32 red, green and blue planes (1,024 bytes each, row-major). Looked for in
  ``root/cifar-10-batches-bin`` and in ``root`` itself. The Python (pickle) version is not read.

The usual split is kept (60,000/10,000 and 50,000/10,000); ``n_train``/``n_test`` subsample it (seeded by
``data.seed``, order kept). ``preprocess``:

- ``"none"``: pixels ``/ 255`` in [0, 1]; 10 classes; samples keep their shape (``[28, 28]``, ``[3, 32, 32]``).
- ``"standardize"``: each pixel minus its training-set mean, divided by its training-set standard deviation
  (pixels constant on the training set are only centred); 10 classes, shapes kept.
- ``"binary_pca"``: standardised as above, projected on the first ``k = n_components`` principal components
  of the standardised training set (the leading eigenvectors of its covariance, each signed so that its
  largest-magnitude entry is positive); samples ``[k]``; two classes — even digit/class (class 0, label −1)
  and odd (class 1, label +1): the input of the Langevin studies.

>>> ds = build_image_dataset({"name": "mnist", "root": "~/data", "seed": 0, "n_train": 1000,
...                           "n_test": None, "preprocess": "binary_pca", "n_components": 10})  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from trajkit.errors import ConfigError
from trajkit.models.data import Dataset

IMAGE_DATASETS = ("mnist", "fashion_mnist", "cifar10")
PREPROCESSING = ("none", "standardize", "binary_pca")

#: IDX type byte → numpy dtype (big-endian)
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
#: the folder torchvision keeps the raw files in, under ``root``
TORCHVISION_FOLDER = {"mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw"}
CIFAR_FOLDER = "cifar-10-batches-bin"
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"
CIFAR_RECORD = 1 + 3 * 32 * 32


# -- readers --------------------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (gzipped or not: detected from its first bytes), native byte order.

    Raises :class:`~trajkit.errors.ConfigError` naming the file when the header is not IDX or the file
    holds fewer or more bytes than its dimensions say.
    """
    p = Path(path)
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ConfigError(f"{p}: corrupt gzip stream ({e}); replace the file with the original download") \
                from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise ConfigError(f"{p}: not an IDX file (the header must start 0x00 0x00 TYPE NDIM, got "
                          f"{raw[:4].hex(' ') or 'nothing'}); replace it with the original MNIST-format file")
    ndim = raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ConfigError(f"{p}: corrupt IDX header (it declares {ndim} dimensions but the file ends after "
                          f"{len(raw)} bytes); replace it with the original file")
    shape = tuple(int(d) for d in np.frombuffer(raw[4:head], dtype=">u4"))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = head + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ConfigError(f"{p}: corrupt IDX file: its header says shape {list(shape)} ({expected} bytes) but "
                          f"it holds {len(raw)} bytes; replace it with the original file")
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(shape).astype(dtype.newbyteorder("="))


def read_cifar10_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``[n, 3, 32, 32]`` and labels int64 ``[n]`` of one CIFAR-10 binary batch file."""
    p = Path(path)
    raw = np.fromfile(p, dtype=np.uint8)
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise ConfigError(f"{p}: not a CIFAR-10 binary batch ({raw.size} bytes is not a whole number of "
                          f"{CIFAR_RECORD}-byte records); replace it with the file from cifar-10-binary.tar.gz")
    records = raw.reshape(-1, CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ConfigError(f"{p}: label byte {int(labels.max())} is not a CIFAR-10 class (0-9); is this the "
                          "CIFAR-100 binary version?")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _find(root: Path, folders: list[Path], name: str, gz: bool, what: str) -> Path:
    for folder in folders:
        for candidate in ((name, name + ".gz") if gz else (name,)):
            if (folder / candidate).is_file():
                return folder / candidate
    where = " or ".join(str(f) for f in folders)
    suffix = "(.gz)" if gz else ""
    raise ConfigError(f"data.root {str(root)!r}: no {name}{suffix} in {where}; put the {what} files there as "
                      "distributed (nothing is downloaded)")


def _root(spec: dict[str, Any]) -> Path:
    root = spec.get("root")
    if not root:
        raise ConfigError(f"data.root is required for data.name = {spec['name']!r}: the folder holding the "
                          "dataset's files")
    p = Path(root).expanduser()
    if not p.is_dir():
        raise ConfigError(f"data.root {str(p)!r}: no such directory; give the folder holding the "
                          f"{spec['name']} files")
    return p


def load_image_files(name: str, root: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The standard split of ``name`` under ``root``: images uint8 ``[n, 28, 28]`` or ``[n, 3, 32, 32]``
    and labels int64 ``[n]``, as ``(X_train, y_train, X_test, y_test)``."""
    root = _root({"name": name, "root": str(root)})
    if name == "cifar10":
        folders = [root / CIFAR_FOLDER, root]
        parts = [read_cifar10_batch(_find(root, folders, f, False, "CIFAR-10 binary")) for f in CIFAR_TRAIN]
        Xte, yte = read_cifar10_batch(_find(root, folders, CIFAR_TEST, False, "CIFAR-10 binary"))
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), Xte, yte)
    folders = [root, root / TORCHVISION_FOLDER[name]]
    what = "four MNIST IDX" if name == "mnist" else "four Fashion-MNIST IDX"
    arrays = {k: read_idx(_find(root, folders, f, True, what)) for k, f in IDX_FILES.items()}
    for split in ("train", "test"):
        X, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if X.ndim != 3 or y.ndim != 1 or X.shape[0] != y.shape[0]:
            raise ConfigError(f"data.root {str(root)!r}: the {split} images have shape {list(X.shape)} and the "
                              f"labels {list(y.shape)}; expected [n, H, W] and [n] with the same n")
    return (arrays["train_images"], arrays["train_labels"].astype(np.int64), arrays["test_images"],
            arrays["test_labels"].astype(np.int64))


# -- the dataset ----------------------------------------------------------------------------------------


def _subsample(X: np.ndarray, y: np.ndarray, n: int | None, key: str, name: str,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if n is None:
        return X, y
    if n > len(X):
        raise ConfigError(f"data.{key} = {n} exceeds the {len(X)} samples of the {name} split; lower it")
    keep = np.sort(rng.permutation(len(X))[:n])
    return X[keep], y[keep]


def principal_axes(Z: np.ndarray) -> np.ndarray:
    """The principal axes ``[D, D]`` (columns, by decreasing variance) of the centred float64 ``Z`` ``[P, D]``,
    each signed so that its largest-magnitude entry is positive."""
    cov = Z.T @ Z / max(len(Z) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    vectors = vectors[:, np.argsort(values)[::-1]]
    pivot = vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])]
    return vectors * np.where(pivot < 0, -1.0, 1.0)


def build_image_dataset(spec: dict[str, Any]) -> Dataset:
    """The dataset of an image spec: keys ``name, root, seed, n_train, n_test, preprocess, n_components``."""
    name, how = spec["name"], spec["preprocess"]
    Xtr, ytr, Xte, yte = load_image_files(name, spec["root"])
    rng = np.random.default_rng([spec["seed"], 4])
    Xtr, ytr = _subsample(Xtr, ytr, spec.get("n_train"), "n_train", f"{name} training", rng)
    Xte, yte = _subsample(Xte, yte, spec.get("n_test"), "n_test", f"{name} test", rng)
    shape = tuple(int(s) for s in Xtr.shape[1:])
    Ftr = Xtr.reshape(len(Xtr), -1).astype(np.float64) / 255.0
    Fte = Xte.reshape(len(Xte), -1).astype(np.float64) / 255.0
    if how == "none":
        return Dataset(name, Ftr.astype(np.float32), ytr, Fte.astype(np.float32), yte, shape, 10)
    mean, std = Ftr.mean(axis=0), Ftr.std(axis=0)
    std[std == 0] = 1.0
    Ztr, Zte = (Ftr - mean) / std, (Fte - mean) / std
    if how == "standardize":
        return Dataset(name, Ztr.astype(np.float32), ytr, Zte.astype(np.float32), yte, shape, 10)
    k, D = spec["n_components"], Ztr.shape[1]
    if k > D:
        raise ConfigError(f"data.n_components = {k} exceeds the {D} features of {name}; use at most {D}")
    if k > len(Ztr):
        raise ConfigError(f"data.n_components = {k} exceeds the {len(Ztr)} training samples the PCA is fitted "
                          f"on; lower it or raise data.n_train")
    axes = principal_axes(Ztr)[:, :k]
    return Dataset(name, (Ztr @ axes).astype(np.float32), ytr % 2, (Zte @ axes).astype(np.float32), yte % 2,
                   (k,), 2)
