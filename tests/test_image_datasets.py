"""MNIST / Fashion-MNIST / CIFAR-10 from files written here in the real formats (IDX, CIFAR binary)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from trajkit.errors import ConfigError
from trajkit.experiments import build_dataset, load_config, run_experiment
from trajkit.experiments.image_datasets import read_cifar10_batch, read_idx

N_TRAIN, N_TEST = 300, 100


def _idx_bytes(a: np.ndarray) -> bytes:
    """IDX per the format's definition: 0x00 0x00, type byte 0x08 (ubyte), ndim, big-endian uint32 dims."""
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def _mnist_arrays(seed=0):
    rng = np.random.default_rng(seed)
    Xtr = rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8)
    Xtr[:, :2, :] = 0                              # constant border pixels, as in MNIST
    ytr = rng.integers(0, 10, N_TRAIN).astype(np.uint8)
    Xte = rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8)
    yte = rng.integers(0, 10, N_TEST).astype(np.uint8)
    return Xtr, ytr, Xte, yte


def _write_mnist(folder, arrays, gz):
    folder.mkdir(parents=True, exist_ok=True)
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
    for name, a in zip(names, arrays, strict=True):
        data = _idx_bytes(a)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


def _spec(name, root, **kw):
    return {"name": name, "root": str(root), "seed": 0, "n_train": None, "n_test": None, "preprocess": "none",
            "n_components": 10, **kw}


def test_idx_header_and_values_decoded(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 2, 3, 4) + a.tobytes())
    np.testing.assert_array_equal(read_idx(p), a)
    f = np.array([1.5, -2.25], dtype=">f4")                       # type 0x0D: big-endian float32
    q = tmp_path / "f.idx"
    q.write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 2) + f.tobytes())
    np.testing.assert_array_equal(read_idx(q), [1.5, -2.25])


@pytest.mark.parametrize("layout", ["flat-raw", "torchvision-gz"])
def test_mnist_files_decoded_in_both_layouts(tmp_path, layout):
    arrays = _mnist_arrays()
    folder = tmp_path if layout == "flat-raw" else tmp_path / "MNIST" / "raw"
    _write_mnist(folder, arrays, gz=layout != "flat-raw")
    ds = build_dataset(_spec("mnist", tmp_path))
    Xtr, ytr, Xte, yte = arrays
    assert ds.input_shape == (28, 28) and ds.n_classes == 10 and (ds.n_train, ds.n_test) == (N_TRAIN, N_TEST)
    np.testing.assert_array_equal(ds.X_train, (Xtr.reshape(N_TRAIN, -1) / 255.0).astype(np.float32))
    np.testing.assert_array_equal(ds.X_test, (Xte.reshape(N_TEST, -1) / 255.0).astype(np.float32))
    np.testing.assert_array_equal(ds.y_train, ytr.astype(np.int64))
    np.testing.assert_array_equal(ds.y_test, yte.astype(np.int64))


def test_fashion_mnist_torchvision_folder(tmp_path):
    arrays = _mnist_arrays(1)
    _write_mnist(tmp_path / "FashionMNIST" / "raw", arrays, gz=True)
    ds = build_dataset(_spec("fashion_mnist", tmp_path, n_train=50))
    assert ds.n_train == 50
    rows = {r.tobytes() for r in (arrays[0].reshape(N_TRAIN, -1) / 255.0).astype(np.float32)}
    assert all(r.tobytes() in rows for r in ds.X_train)        # a subsample of the training images


def test_cifar10_binary_records(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    images, labels = {}, {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        n = 40
        img = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        lab = rng.integers(0, 10, n, dtype=np.uint8)
        record = np.concatenate([lab[:, None], img.reshape(n, -1)], axis=1)   # label byte, R, G, B planes
        (folder / name).write_bytes(record.tobytes())
        images[name], labels[name] = img, lab
    X, _ = read_cifar10_batch(folder / "data_batch_3.bin")
    np.testing.assert_array_equal(X, images["data_batch_3.bin"])
    np.testing.assert_array_equal(X[5, 1], images["data_batch_3.bin"][5, 1])    # green plane of image 5
    ds = build_dataset(_spec("cifar10", tmp_path))
    assert ds.input_shape == (3, 32, 32) and ds.n_train == 200 and ds.n_test == 40
    train = np.concatenate([images[f"data_batch_{i}.bin"] for i in range(1, 6)])
    np.testing.assert_array_equal(ds.X_train, (train.reshape(200, -1) / 255.0).astype(np.float32))
    np.testing.assert_array_equal(ds.y_test, labels["test_batch.bin"].astype(np.int64))


def test_standardize_and_binary_pca_against_sklearn(tmp_path):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    arrays = _mnist_arrays(3)
    _write_mnist(tmp_path, arrays, gz=False)
    Xtr, ytr, Xte, _ = (a.astype(np.float64) for a in arrays)
    Ftr, Fte = Xtr.reshape(N_TRAIN, -1) / 255, Xte.reshape(N_TEST, -1) / 255
    scaler = StandardScaler().fit(Ftr)       # population std; constant pixels are only centred (scale 1)
    std = build_dataset(_spec("mnist", tmp_path, preprocess="standardize"))
    np.testing.assert_allclose(std.X_train, scaler.transform(Ftr), atol=2e-6)
    np.testing.assert_allclose(std.X_test, scaler.transform(Fte), atol=2e-6)
    k = 7
    ds = build_dataset(_spec("mnist", tmp_path, preprocess="binary_pca", n_components=k))
    pca = PCA(n_components=k, svd_solver="full").fit(scaler.transform(Ftr))
    ref_tr, ref_te = pca.transform(scaler.transform(Ftr)), pca.transform(scaler.transform(Fte))
    sign = np.sign((ds.X_train * ref_tr).sum(axis=0))          # principal axes are defined up to a sign
    np.testing.assert_allclose(ds.X_train, ref_tr * sign, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(ds.X_test, ref_te * sign, rtol=1e-4, atol=1e-3)
    assert ds.input_shape == (k,) and ds.n_classes == 2
    np.testing.assert_array_equal(ds.y_train, ytr.astype(np.int64) % 2)     # class 1 = odd digit


def test_spec_rebuilds_and_a_run_records_it(tmp_path):
    _write_mnist(tmp_path / "data", _mnist_arrays(4), gz=True)
    cfg = tmp_path / "exp.toml"
    cfg.write_text('[data]\nname = "mnist"\nroot = "data"\nn_train = 64\nn_test = 32\npreprocess = "binary_pca"\n'
                   'n_components = 5\n[model]\nhidden = [4]\n[loss]\nname = "mse"\n[dynamics]\nkind = "gd"\n'
                   'lr = 0.05\n[run]\nsteps = 5\n[snapshots]\nschedule = "linear"\nevery = 5\n')
    assert load_config(cfg)["data"]["root"] == str((tmp_path / "data").resolve())
    s = run_experiment(cfg, tmp_path / "out", quiet=True)
    import trajkit
    arch = trajkit.open_archive(s["runs"][0]["path"])
    spec = arch.metadata["dataset"]["spec"]
    again, direct = build_dataset(spec), build_dataset(_spec("mnist", tmp_path / "data", n_train=64, n_test=32,
                                                            preprocess="binary_pca", n_components=5))
    np.testing.assert_array_equal(again.X_train, direct.X_train)
    np.testing.assert_array_equal(again.y_test, direct.y_test)
    assert arch.metadata["dataset"]["input_shape"] == [5]


def test_bad_inputs_are_one_line_and_write_nothing(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(ConfigError, match=r"no train-images-idx3-ubyte\(\.gz\) in .*MNIST/raw") as e:
        run_experiment(None, tmp_path / "out", ['data.name="mnist"', f'data.root="{root}"'], quiet=True)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"no test_batch\.bin"):
        (root / "cifar-10-batches-bin").mkdir()
        for i in range(1, 6):
            (root / "cifar-10-batches-bin" / f"data_batch_{i}.bin").write_bytes(bytes(3073))
        build_dataset(_spec("cifar10", root))
    with pytest.raises(ConfigError, match=r"data\.root is required"):
        load_config(None, ['data.name="cifar10"'])
    bad = tmp_path / "bad"
    _write_mnist(bad, _mnist_arrays(), gz=False)
    (bad / "train-labels-idx1-ubyte").write_bytes(b"\x08\x03\x00\x00" + bytes(300))   # bytes swapped
    with pytest.raises(ConfigError, match="train-labels-idx1-ubyte: not an IDX file"):
        build_dataset(_spec("mnist", bad))
    (bad / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 999) + bytes(300))
    with pytest.raises(ConfigError, match=r"corrupt IDX file: its header says shape \[999\]"):
        build_dataset(_spec("mnist", bad))
    _write_mnist(bad, _mnist_arrays(), gz=False)
    with pytest.raises(ConfigError, match=r"data\.n_components = 785 exceeds the 784 features of mnist") as e:
        run_experiment(None, tmp_path / "out2", ['data.name="mnist"', f'data.root="{bad}"',
                                                 'data.preprocess="binary_pca"', "data.n_components=785"],
                       quiet=True)
    assert not (tmp_path / "out2").exists()
