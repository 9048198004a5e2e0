"""Snapshot copies that overlap training (``Recorder(..., optimizer=opt)``): same bytes as the copy on the
training thread, finished before the optimiser changes the parameters, and the old path without an
optimiser. On CPU ``zero_copy=None``/``True`` moves the parameters into the archive row and writes them
straight from their memory; the default (``False``) keeps the copy on the copy thread: both are tested."""

import numpy as np
import pytest
import torch

import trajkit
from trajkit.errors import TrajkitError
from trajkit.record import RecordError

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none")


def _assert_same_archive(a, b):
    """Steps, parameter bits, epochs, metrics and trace of two archives are identical (NaN equals NaN)."""
    a, b = trajkit.open_archive(a), trajkit.open_archive(b)
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.params[:, :].view(np.uint32), b.params[:, :].view(np.uint32))
    np.testing.assert_array_equal(a.epochs, b.epochs)
    assert set(a.metrics) == set(b.metrics) == {"full_loss"} and set(a.trace) == set(b.trace)
    for k in a.metrics:
        np.testing.assert_array_equal(a.metrics[k], b.metrics[k])
    for k in a.trace:
        np.testing.assert_array_equal(a.trace[k], b.trace[k])
    return a.n_snapshots


def _train(path, device="cpu", optimizer=True, writer="thread", steps=40, zero_copy=False, rebind_at=None):
    """A real loop (Adam, minibatches, a scheduled learning rate) recorded with or without ``optimizer=``;
    ``rebind_at``: at that step the loop gives the first weight new memory (``p.data = p.data.clone()``).
    Returns ``rec.overlap`` and whether it wrote without copying at first (``rec.zero_copy``)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(256, 20, generator=g).to(device), torch.randint(0, 4, (256,), generator=g).to(device)
    sched = trajkit.schedules.linear(1, stop=10) | trajkit.schedules.log(1, steps, 12)
    with trajkit.Recorder(path, model, schedule=sched, writer=writer, optimizer=opt if optimizer else None,
                          evaluate=lambda m: {"full_loss": torch.nn.functional.cross_entropy(m(X), y)},
                          zero_copy=zero_copy) as rec:
        overlap, zero = rec.overlap, rec.zero_copy
        for k in range(steps + 1):
            loss = None
            if k == rebind_at:
                model[0].weight.data = model[0].weight.data.clone()
            if k:
                i = (k * 32) % 256
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(X[i:i + 32]), y[i:i + 32])
                loss.backward()
                opt.step()
            rec.step(k, loss=loss, lr=opt.param_groups[0]["lr"], epoch=k / 8)
        if rebind_at is not None:
            assert not rec.zero_copy, "the rebound parameter was not noticed"
    return overlap, zero


def test_overlapped_copy_writes_the_same_bytes_as_the_copy_on_the_training_thread(tmp_path):
    assert _train(tmp_path / "overlap.trajkit", zero_copy=False) == (True, False)
    assert _train(tmp_path / "sync.trajkit", optimizer=False) == (False, False)
    assert _assert_same_archive(tmp_path / "overlap.trajkit", tmp_path / "sync.trajkit") == 15


def test_zero_copy_writes_the_same_bytes_and_trains_the_same_model(tmp_path):
    """Parameters moved into the archive row: the archive is bit for bit the copying one's, and the training
    itself is unchanged (the same run without a Recorder ends at the same bits)."""
    assert _train(tmp_path / "zero.trajkit", zero_copy=None) == (True, True)
    assert _train(tmp_path / "sync.trajkit", optimizer=False) == (False, False)
    assert _assert_same_archive(tmp_path / "zero.trajkit", tmp_path / "sync.trajkit") == 15
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(256, 20, generator=g), torch.randint(0, 4, (256,), generator=g)
    for k in range(1, 41):
        i = (k * 32) % 256
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X[i:i + 32]), y[i:i + 32]).backward()
        opt.step()
    last = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    arch = trajkit.open_archive(tmp_path / "zero.trajkit")
    np.testing.assert_array_equal(arch.params[arch.n_snapshots - 1, :].view(np.uint32), last.view(np.uint32))


def test_zero_copy_places_the_parameters_in_one_aligned_row_in_layout_order(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.ReLU(), torch.nn.Linear(200, 7))
    before = [p.detach().clone() for p in model.parameters()]
    ids = [id(p) for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with trajkit.Recorder(tmp_path / "r.trajkit", model, optimizer=opt, writer="thread", zero_copy=True) as rec:
        assert rec.zero_copy
        ptrs = [p.data_ptr() for p in model.parameters()]
        assert ptrs[0] % 4096 == 0
        sizes = [p.numel() * 4 for p in model.parameters()]
        assert all(ptrs[i + 1] - ptrs[i] == sizes[i] for i in range(len(ptrs) - 1))
        assert [id(p) for p in model.parameters()] == ids   # the optimiser's Parameter objects stay
        for a, b in zip(before, model.parameters(), strict=True):
            assert torch.equal(a, b)
        rec.step(0)
    assert trajkit.open_archive(tmp_path / "r.trajkit").n_snapshots == 1


def test_a_rebound_parameter_is_noticed_and_copied_from_then_on(tmp_path):
    """``p.data = ...`` mid-run moves one weight out of the row: the next snapshot copies, the bytes stay right."""
    assert _train(tmp_path / "zero.trajkit", rebind_at=20, zero_copy=None) == (True, True)
    _train(tmp_path / "sync.trajkit", optimizer=False)
    assert _assert_same_archive(tmp_path / "zero.trajkit", tmp_path / "sync.trajkit") == 15


@pytest.mark.parametrize("case", ["no optimizer", "inline", "dtype", "tied"])
def test_zero_copy_true_where_impossible_is_a_one_line_error_and_nothing_is_written(tmp_path, case):
    model = torch.nn.Linear(8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kw = {"optimizer": opt, "zero_copy": True}
    if case == "no optimizer":
        kw.pop("optimizer")
    elif case == "inline":
        kw["writer"] = "inline"
    elif case == "dtype":
        kw["dtype"] = "float16"
    else:   # two parameters that are views of one storage
        base = torch.zeros(16)
        model = torch.nn.Module()
        model.a, model.b = torch.nn.Parameter(base[:8]), torch.nn.Parameter(base[8:])
        kw["optimizer"] = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrajkitError, match=r"zero_copy=True is not possible here: .*; use zero_copy=None") as e:
        trajkit.Recorder(tmp_path / "r.trajkit", model, **kw)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "r.trajkit").exists()


def test_zero_copy_is_opt_in_and_none_picks_it_only_where_it_is_safe(tmp_path):
    """The default copies; float16 storage of a float32 model needs a cast, i.e. a copy: zero_copy=None then
    copies, silently."""
    model = torch.nn.Linear(8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with trajkit.Recorder(tmp_path / "a.trajkit", model, optimizer=opt, writer="thread", dtype="float16",
                          zero_copy=None) as rec:
        assert rec.overlap and not rec.zero_copy
    with trajkit.Recorder(tmp_path / "b.trajkit", model, optimizer=opt, writer="thread", zero_copy=None) as rec:
        assert rec.zero_copy
    with trajkit.Recorder(tmp_path / "c.trajkit", model, writer="thread", zero_copy=None) as rec:
        assert not rec.zero_copy
    with trajkit.Recorder(tmp_path / "e.trajkit", torch.nn.Linear(8, 8), optimizer=opt, writer="thread") as rec:
        assert rec.overlap and not rec.zero_copy
    with pytest.raises(TrajkitError, match=r"zero_copy='yes' must be None \(auto\), True or False"):
        trajkit.Recorder(tmp_path / "d.trajkit", model, optimizer=opt, zero_copy="yes")


def test_inline_writer_keeps_the_copy_on_the_training_thread(tmp_path):
    """The inline writer needs the row at once, so ``optimizer=`` changes nothing there (``overlap`` False)."""
    assert _train(tmp_path / "inline.trajkit", writer="inline") == (False, False)
    assert _train(tmp_path / "sync.trajkit", writer="inline", optimizer=False) == (False, False)
    _assert_same_archive(tmp_path / "inline.trajkit", tmp_path / "sync.trajkit")


def _race(path, optimizer: bool, zero_copy=False):
    """A 4 Mi-parameter tensor snapshotted at every step, the next update (SGD, lr 1, gradient 1: every entry
    drops by exactly 1) issued the moment ``rec.step`` returns. A copy still reading when the update runs
    would mix w(k) and w(k+1): without the pre-hook's wait this fails on every run (checked)."""
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.zeros(2**22))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.w.grad = torch.ones_like(model.w)
    with trajkit.Recorder(path, model, schedule=trajkit.schedules.linear(1), writer="thread",
                          optimizer=opt if optimizer else None, zero_copy=zero_copy) as rec:
        assert rec.zero_copy == (optimizer and zero_copy is not False)
        for k in range(6):
            if k:
                if optimizer:
                    opt.step()
                else:   # outside any optimiser: the fallback copies before rec.step returns
                    with torch.no_grad():
                        model.w.sub_(1.0)
            rec.step(k)
        overlap = rec.overlap
    params = trajkit.open_archive(path).params[:, :]
    return overlap, params


@pytest.mark.parametrize("zero_copy", [None, False])
def test_the_optimiser_step_waits_for_the_copy_in_flight(tmp_path, zero_copy):
    """Zero copy: the update waits until the writer has written the row from the parameters' memory."""
    overlap, params = _race(tmp_path / "r.trajkit", optimizer=True, zero_copy=zero_copy)
    assert overlap
    for k in range(6):
        assert np.count_nonzero(params[k] != -k) == 0, f"snapshot {k} holds parameters of another step"


def test_a_zero_copy_row_that_holds_up_the_optimiser_makes_the_next_snapshots_copy(tmp_path):
    """Snapshots at every step of a loop whose update follows at once: the first row's write (8 MiB) keeps
    the next optimiser step waiting, so the next ZERO_COPY_BACKOFF snapshots copy; once the writer has caught
    up, zero copy is tried again (and stalls again). The bytes stay right throughout."""
    from trajkit.record.recorder import ZERO_COPY_BACKOFF

    n = ZERO_COPY_BACKOFF + 3
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.zeros(2**21))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.w.grad = torch.ones_like(model.w)
    with trajkit.Recorder(tmp_path / "r.trajkit", model, schedule=trajkit.schedules.linear(1), writer="thread",
                          optimizer=opt, zero_copy=None) as rec:
        for k in range(n):
            if k:
                opt.step()
            if k == ZERO_COPY_BACKOFF + 1:
                rec.flush()   # the writer catches up: idle again, and the back-off is over
            rec.step(k)
        assert rec.zero_copy   # the parameters stay in the row; only the snapshots were copied
        assert rec.zero_copy_rows == 2, "rows 0 and ZERO_COPY_BACKOFF + 1 are the ones written without a copy"
    params = trajkit.open_archive(tmp_path / "r.trajkit").params[:, :]
    for k in range(n):
        assert np.count_nonzero(params[k] != -k) == 0, f"snapshot {k} holds parameters of another step"


def test_zero_copy_rows_that_never_hold_up_the_optimiser_are_never_copied(tmp_path):
    """A loop whose forward and backward pass (here 20 ms) outlasts the write of a small row: every snapshot
    is written straight from the parameters' memory."""
    import time

    model = torch.nn.Sequential(torch.nn.Linear(300, 200))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with trajkit.Recorder(tmp_path / "r.trajkit", model, schedule=trajkit.schedules.linear(1), writer="thread",
                          optimizer=opt, zero_copy=None) as rec:
        for k in range(6):
            if k:
                model(torch.ones(4, 300)).sum().backward()
                time.sleep(0.02)
                opt.step()
            rec.step(k)
        assert rec.zero_copy_rows == 6
    assert trajkit.open_archive(tmp_path / "r.trajkit").n_snapshots == 6


def test_without_an_optimizer_the_copy_is_done_before_step_returns(tmp_path):
    """Loops that change parameters themselves keep today's synchronous copy."""
    overlap, params = _race(tmp_path / "r.trajkit", optimizer=False)
    assert not overlap
    for k in range(6):
        assert np.count_nonzero(params[k] != -k) == 0, f"snapshot {k} holds parameters of another step"


def test_the_hook_is_removed_at_close_and_the_optimiser_steps_on(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = trajkit.Recorder(tmp_path / "r.trajkit", model, schedule=trajkit.schedules.linear(1), writer="thread",
                           optimizer=[opt])
    assert len(opt._optimizer_step_pre_hooks) == 1
    rec.step(0)
    rec.close()
    assert len(opt._optimizer_step_pre_hooks) == 0
    model(torch.ones(1, 3)).sum().backward()
    opt.step()


@pytest.mark.parametrize("bad", [object(), [torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1), "adam"]])
def test_a_bad_optimizer_is_a_one_line_error_and_nothing_is_written(tmp_path, bad):
    with pytest.raises(TrajkitError, match=r"optimizer must be a torch\.optim\.Optimizer") as e:
        trajkit.Recorder(tmp_path / "r.trajkit", torch.nn.Linear(2, 2), optimizer=bad)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "r.trajkit").exists()


def test_cpu_recording_with_an_optimizer_never_touches_cuda(tmp_path):
    """The overlapped copy of a CPU model runs on the copy thread: no CUDA stream, event or context."""
    assert _train(tmp_path / "r.trajkit") == (True, False)
    assert _train(tmp_path / "z.trajkit", zero_copy=True) == (True, True)
    assert not torch.cuda.is_initialized()


@CUDA
def test_cuda_side_stream_copy_writes_the_same_bytes(tmp_path):
    assert _train(tmp_path / "overlap.trajkit", device="cuda") == (True, False)
    assert _train(tmp_path / "sync.trajkit", device="cuda", optimizer=False) == (False, False)
    assert _assert_same_archive(tmp_path / "overlap.trajkit", tmp_path / "sync.trajkit") == 15


@CUDA
def test_cuda_optimiser_step_is_ordered_after_the_copy(tmp_path):
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.zeros(2**24, device="cuda"))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.w.grad = torch.ones_like(model.w)
    with trajkit.Recorder(tmp_path / "r.trajkit", model, schedule=trajkit.schedules.linear(1),
                          optimizer=opt) as rec:
        for k in range(6):
            if k:
                opt.step()
            rec.step(k)
    params = trajkit.open_archive(tmp_path / "r.trajkit").params[:, :]
    for k in range(6):
        assert np.count_nonzero(params[k] != -k) == 0


@pytest.mark.parametrize("as_keyword", [True, False])
def test_a_closure_step_waits_before_the_update(tmp_path, as_keyword):
    """``opt.step(closure)`` (Lightning's way): the wait moves after the closure, still before the update."""
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.zeros(2**22))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.w.grad = torch.ones_like(model.w)
    calls = []

    def closure():   # cheap: the update follows at once, so an unwaited copy would be overtaken
        calls.append(1)
        return torch.zeros(())

    with trajkit.Recorder(tmp_path / "r.trajkit", model, schedule=trajkit.schedules.linear(1), writer="thread",
                          optimizer=opt) as rec:
        for k in range(6):
            if k:
                opt.step(closure=closure) if as_keyword else opt.step(closure)
            rec.step(k)
    params = trajkit.open_archive(tmp_path / "r.trajkit").params[:, :]
    assert len(calls) == 5
    for k in range(6):
        assert np.count_nonzero(params[k] != -k) == 0, f"snapshot {k} holds parameters of another step"


def test_a_failed_zero_copy_write_releases_the_optimiser_and_surfaces(tmp_path):
    """The row the writer was to read from the parameters fails to write: the next optimiser step is not kept
    waiting, the error reaches the training loop, and the rows before it stay committed."""
    import threading

    from trajkit.testing import params_chunk

    path = tmp_path / "r.trajkit"
    model = torch.nn.Sequential(torch.nn.Linear(600, 600))   # 1.4 MiB rows: direct writes
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = trajkit.Recorder(path, model, schedule=trajkit.schedules.linear(1), optimizer=opt, zero_copy=True)
    assert rec.zero_copy
    rec.step(0)
    rec.flush()
    chunk = params_chunk(path, 1, 0)
    chunk.mkdir()   # a directory where the chunk file goes: the write fails
    model(torch.ones(1, 600)).sum().backward()
    rec.step(1)
    stepper = threading.Thread(target=opt.step, daemon=True)
    stepper.start()
    stepper.join(timeout=30)
    assert not stepper.is_alive(), "the optimiser step waits for a row that will never be read"
    with pytest.raises(RecordError, match="step 1"):
        rec.step(2)
        rec.flush()
    with pytest.raises(RecordError, match="earlier write error"):
        rec.step(3)
    chunk.rmdir()
    rec.close()
    assert trajkit.open_archive(path).n_snapshots == 1


def test_copy_row_copies_every_kind_of_tensor_exactly():
    """Large contiguous tensors go by memcpy, the rest by one foreach copy: every kind lands bit for bit
    (checked against torch.cat of the same tensors), casts included."""
    from trajkit.record.copier import MEMCPY_MIN_BYTES, THREAD_MEMCPY_MIN_BYTES, copy_row

    g = torch.Generator().manual_seed(0)
    big = MEMCPY_MIN_BYTES // 4 + 7   # float32 elements: just above the memcpy threshold
    params = [torch.nn.Parameter(torch.randn(big, generator=g)),            # memcpy
              torch.randn(3, 5, generator=g),                               # small: foreach
              torch.randn(big // 8, 8, generator=g).t(),                    # large but strided: foreach
              torch.randn(big, generator=g, dtype=torch.float64),           # large, cast to float32
              torch.nn.Parameter(torch.randn(2, big, generator=g))[1]]      # large view with an offset: memcpy
    n = sum(p.numel() for p in params)
    want = torch.cat([p.detach().reshape(-1).to(torch.float32) for p in params])
    for min_bytes in (MEMCPY_MIN_BYTES, THREAD_MEMCPY_MIN_BYTES, 0):   # default, the copy thread's, all
        row = torch.full((n + 11,), float("nan"))
        views, off = [], 0
        for p in params:
            views.append(row[off:off + p.numel()].view(p.shape))
            off += p.numel()
        copy_row(views, params, min_bytes)
        assert torch.equal(row[:n].view(torch.int32), want.view(torch.int32)), min_bytes
        assert torch.isnan(row[n:]).all(), "copy_row wrote past the row's end"


@pytest.mark.parametrize("zero_copy", [False, None])
def test_large_tensors_are_recorded_bit_for_bit_by_the_memcpy_path(tmp_path, zero_copy):
    """A model whose weights are above both memcpy thresholds: every snapshot equals the parameters the
    loop held at that step (saved independently with torch.cat), with the copy overlapped (the copy
    thread's threshold), on the training thread (no optimiser) and with zero copy's fallback."""
    from trajkit.record.copier import MEMCPY_MIN_BYTES, THREAD_MEMCPY_MIN_BYTES

    for optimizer in (True, False):
        torch.manual_seed(0)
        width = int((max(MEMCPY_MIN_BYTES, THREAD_MEMCPY_MIN_BYTES) // 4) ** 0.5) + 8
        model = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Tanh(), torch.nn.Linear(width, 3))
        assert model[0].weight.nbytes >= max(MEMCPY_MIN_BYTES, THREAD_MEMCPY_MIN_BYTES)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        X, y = torch.randn(64, width), torch.randint(0, 3, (64,))
        expected = {}
        path = tmp_path / f"run-{optimizer}.zarr"
        with trajkit.Recorder(path, model, schedule=trajkit.schedules.linear(1), writer="thread",
                              optimizer=opt if optimizer else None, zero_copy=zero_copy) as rec:
            for k in range(8):
                if k:
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(model(X), y).backward()
                    opt.step()
                expected[k] = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()
                rec.step(k)
        arch = trajkit.open_archive(path)
        assert list(arch.steps) == list(range(8))
        for k, want in expected.items():
            np.testing.assert_array_equal(arch.params[k, :].view(np.uint32), want.numpy().view(np.uint32))
