"""Snapshot copies that overlap training (``Recorder(..., optimizer=opt)``): same bytes as the copy on the
training thread, finished before the optimiser changes the parameters, and the old path without an
optimiser."""

import numpy as np
import pytest
import torch

import trajkit
from trajkit.errors import TrajkitError

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


def _train(path, device="cpu", optimizer=True, writer="thread", steps=40):
    """A real loop (Adam, minibatches, a scheduled learning rate) recorded with or without ``optimizer=``."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(256, 20, generator=g).to(device), torch.randint(0, 4, (256,), generator=g).to(device)
    sched = trajkit.schedules.linear(1, stop=10) | trajkit.schedules.log(1, steps, 12)
    with trajkit.Recorder(path, model, schedule=sched, writer=writer, optimizer=opt if optimizer else None,
                          evaluate=lambda m: {"full_loss": torch.nn.functional.cross_entropy(m(X), y)}) as rec:
        overlap = rec.overlap
        for k in range(steps + 1):
            loss = None
            if k:
                i = (k * 32) % 256
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(X[i:i + 32]), y[i:i + 32])
                loss.backward()
                opt.step()
            rec.step(k, loss=loss, lr=opt.param_groups[0]["lr"], epoch=k / 8)
    return overlap


def test_overlapped_copy_writes_the_same_bytes_as_the_copy_on_the_training_thread(tmp_path):
    assert _train(tmp_path / "overlap.trajkit") is True
    assert _train(tmp_path / "sync.trajkit", optimizer=False) is False
    assert _assert_same_archive(tmp_path / "overlap.trajkit", tmp_path / "sync.trajkit") == 15


def test_inline_writer_keeps_the_copy_on_the_training_thread(tmp_path):
    """The inline writer needs the row at once, so ``optimizer=`` changes nothing there (``overlap`` False)."""
    assert _train(tmp_path / "inline.trajkit", writer="inline") is False
    assert _train(tmp_path / "sync.trajkit", writer="inline", optimizer=False) is False
    _assert_same_archive(tmp_path / "inline.trajkit", tmp_path / "sync.trajkit")


def _race(path, optimizer: bool):
    """A 4 Mi-parameter tensor snapshotted at every step, the next update (SGD, lr 1, gradient 1: every entry
    drops by exactly 1) issued the moment ``rec.step`` returns. A copy still reading when the update runs
    would mix w(k) and w(k+1): without the pre-hook's wait this fails on every run (checked)."""
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.zeros(2**22))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.w.grad = torch.ones_like(model.w)
    with trajkit.Recorder(path, model, schedule=trajkit.schedules.linear(1), writer="thread",
                          optimizer=opt if optimizer else None) as rec:
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


def test_the_optimiser_step_waits_for_the_copy_in_flight(tmp_path):
    overlap, params = _race(tmp_path / "r.trajkit", optimizer=True)
    assert overlap
    for k in range(6):
        assert np.count_nonzero(params[k] != -k) == 0, f"snapshot {k} holds parameters of another step"


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
    assert _train(tmp_path / "r.trajkit") is True
    assert not torch.cuda.is_initialized()


@CUDA
def test_cuda_side_stream_copy_writes_the_same_bytes(tmp_path):
    assert _train(tmp_path / "overlap.trajkit", device="cuda") is True
    assert _train(tmp_path / "sync.trajkit", device="cuda", optimizer=False) is False
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
