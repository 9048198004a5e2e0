"""Direct (O_DIRECT) chunk writes: alignment rules, the buffered fallback, and byte-identical archives."""

import os

import numpy as np
import pytest
import zarr

import trajkit
from trajkit.archive import directio
from trajkit.archive import format as fmt
from trajkit.record.copier import host_buffer
from trajkit.testing import params_chunk

DIRECT_OK = directio.HAVE_O_DIRECT


def test_buffers_start_on_a_page():
    for n in (1, 1000, 300_001):
        assert directio.aligned_empty(n).ctypes.data % directio.ALIGN == 0
        assert np.isnan(directio.aligned_empty(n)).all()
        t = host_buffer(n)
        assert t.data_ptr() % directio.ALIGN == 0 and t.numel() == n and t.isnan().all()


def test_large_rows_get_page_multiple_chunks_small_rows_unchanged():
    page = directio.ALIGN // 4
    for n in (262_144, 669_706, 3_000_001):
        cols = fmt.params_chunk_cols(n)
        assert cols % page == 0 and cols * 4 <= fmt.PARAMS_CHUNK_BYTES + directio.ALIGN
        assert -(-n // cols) * cols >= n
    assert fmt.params_chunk_cols(3) == 3
    assert fmt.params_chunk_cols(1000) == 1000


@pytest.mark.skipif(not DIRECT_OK, reason="this platform has no O_DIRECT")
def test_write_chunk_file_direct_only_when_aligned(tmp_path):
    if not directio.probe(tmp_path):
        pytest.skip(f"the file system of {tmp_path} refuses O_DIRECT")
    data = directio.aligned_empty(2048, 1.5)
    assert fmt.write_chunk_file(tmp_path / "a", memoryview(data), direct=True) is True
    assert (tmp_path / "a").read_bytes() == data.tobytes()
    # an unaligned start address, and a length that is not a page multiple: written buffered
    assert fmt.write_chunk_file(tmp_path / "b", memoryview(data[1:1025]), direct=True) is False
    assert (tmp_path / "b").read_bytes() == data[1:1025].tobytes()
    assert fmt.write_chunk_file(tmp_path / "c", memoryview(data[:1000]), direct=True) is False
    assert os.path.getsize(tmp_path / "c") == 4000


def test_direct_and_buffered_archives_hold_identical_bytes(tmp_path):
    n = 300_000  # 1.1 MiB rows: page-multiple chunks
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((4, n)).astype(np.float32)
    archives = {}
    for direct in (False, True):
        path = tmp_path / f"direct{direct}.trajkit"
        with trajkit.archive.create(path, n_params=n, direct=direct) as w:
            assert w.direct is direct
            for k, r in enumerate(rows):
                w.append(10 * k, r)
        archives[direct] = path
    for r in range(4):
        a = params_chunk(archives[False], r).read_bytes()
        b = params_chunk(archives[True], r).read_bytes()
        assert a == b
    arch = trajkit.open_archive(archives[True])
    np.testing.assert_array_equal(arch.params[:, :], rows)
    z = zarr.open_array(archives[True] / "snapshots" / "params", mode="r")   # a plain zarr v3 reader
    np.testing.assert_array_equal(z[:], rows)


def test_auto_direct_follows_size_compression_and_file_system(tmp_path):
    with trajkit.archive.create(tmp_path / "default.trajkit", n_params=300_000) as w:
        assert w.direct is False   # the default: buffered (right for writes on the training thread)
    with trajkit.archive.create(tmp_path / "small.trajkit", n_params=1000, direct=None) as w:
        assert w.direct is False   # small rows stay buffered (and inline in the Recorder)
    with trajkit.archive.create(tmp_path / "zstd.trajkit", n_params=300_000, compressor="zstd", direct=None) as w:
        assert w.direct is False   # compressed chunks are not page multiples
    with trajkit.archive.create(tmp_path / "big.trajkit", n_params=300_000, direct=None) as w:
        assert w.direct is directio.probe(tmp_path)


def test_recorder_auto_writer_uses_the_thread_for_direct_and_compressed_writes(tmp_path):
    import torch

    big = torch.nn.Linear(600, 500)          # 300,500 parameters: 1.1 MiB rows
    with trajkit.Recorder(tmp_path / "big.trajkit", big, schedule=trajkit.schedules.linear(1)) as rec:
        assert rec.writer_mode == ("thread" if directio.probe(tmp_path) else "inline")
        for k in range(5):
            with torch.no_grad():
                big.weight.fill_(k)
            rec.step(k)
    arch = trajkit.open_archive(tmp_path / "big.trajkit")
    assert arch.n_snapshots == 5 and all((arch.params[k, :300_000] == k).all() for k in range(5))
    with trajkit.Recorder(tmp_path / "small.trajkit", torch.nn.Linear(4, 2)) as rec:
        assert rec.writer_mode == "inline"
    # compressed chunks are never direct, but their compression is worth moving off the training thread
    with trajkit.Recorder(tmp_path / "zstd.trajkit", big, schedule=trajkit.schedules.linear(2),
                          compressor="zstd") as rec:
        assert rec.writer_mode == "thread" and not rec.direct
        for k in range(5):
            with torch.no_grad():
                big.weight.fill_(k)
            rec.step(k)
    arch = trajkit.open_archive(tmp_path / "zstd.trajkit")
    assert arch.steps.tolist() == [0, 2, 4] and all((arch.params[i, :300_000] == k).all()
                                                     for i, k in enumerate([0, 2, 4]))


@pytest.mark.skipif(not DIRECT_OK, reason="O_DIRECT is not available on this platform")
def test_recorder_direct_option_forces_or_refuses_direct_writes(tmp_path):
    import torch

    if not directio.probe(tmp_path):
        pytest.skip(f"the file system of {tmp_path} refuses O_DIRECT, so direct=True cannot be observed")
    big = torch.nn.Linear(600, 500)          # 1.1 MiB rows: auto would write them direct
    rows = {}
    for direct in (False, True):
        path = tmp_path / f"d{direct}.trajkit"
        with trajkit.Recorder(path, big, schedule=trajkit.schedules.linear(1), writer="thread",
                              direct=direct) as rec:
            assert rec.direct is direct and rec.writer_mode == "thread"
            for k in range(3):
                with torch.no_grad():
                    big.weight.fill_(k + 0.5)
                rec.step(k)
        rows[direct] = [params_chunk(path, k, 0).read_bytes() for k in range(3)]
        arch = trajkit.open_archive(path)
        assert all((arch.params[k, :300_000] == k + 0.5).all() for k in range(3))
    assert rows[False] == rows[True]        # same bytes whichever way they were written
    with pytest.raises(trajkit.TrajkitError, match="direct='yes' must be None"):
        trajkit.Recorder(tmp_path / "bad.trajkit", big, direct="yes")
    assert not (tmp_path / "bad.trajkit").exists()
