"""The Recorder: what it writes is exactly the trajectory the training loop produced."""

import numpy as np
import pytest
import torch

import trajkit
from trajkit.errors import ArchiveError, TrajkitError
from trajkit.record import RecordError
from trajkit.testing import params_chunk


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()


def _train(path, writer="inline", steps=120, schedule=None, **kw):
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    expected, losses = {}, {}
    schedule = schedule or trajkit.schedules.log(1, steps, 15)
    with trajkit.Recorder(path, model, schedule=schedule, writer=writer, **kw) as rec:
        for k in range(steps + 1):
            loss = None
            if k:
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(X), y)
                loss.backward()
                opt.step()
                losses[k] = loss.item()
            if rec.step(k, loss=loss, lr=0.05, epoch=k / 8):
                expected[k] = _flat(model)
    return model, expected, losses


@pytest.mark.parametrize("writer", ["inline", "thread"])
def test_snapshots_are_bit_exact_and_follow_the_schedule(tmp_path, writer):
    sched = trajkit.schedules.log(1, 120, 15) | trajkit.schedules.linear(50)
    model, expected, losses = _train(tmp_path / "r.trajkit", writer, schedule=sched)
    arch = trajkit.open_archive(tmp_path / "r.trajkit")
    np.testing.assert_array_equal(arch.steps, sched.steps(120))
    assert sorted(expected) == arch.steps.tolist()
    for r, s in enumerate(arch.steps):
        np.testing.assert_array_equal(arch.params[r, :], expected[int(s)])
    np.testing.assert_array_equal(arch.epochs, arch.steps / 8)
    assert np.all(np.diff(arch.times) >= 0)
    # the trace holds every step; loss is NaN where none was given (step 0)
    np.testing.assert_array_equal(arch.trace["step"], np.arange(121))
    assert np.isnan(arch.trace["loss"][0])
    np.testing.assert_allclose(arch.trace["loss"][1:], [losses[k] for k in range(1, 121)], rtol=1e-7)
    np.testing.assert_array_equal(arch.trace["lr"], 0.05)
    meta = arch.metadata
    assert meta["model"]["n_params"] == sum(p.numel() for p in model.parameters())
    assert meta["model"]["class"] == "torch.nn.modules.container.Sequential"
    assert meta["schedule"] == sched.spec
    assert [e["name"] for e in arch.layout] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [e["layer"] for e in arch.layout] == [0, 0, 1, 1]
    assert [e["role"] for e in arch.layout] == ["weight", "bias", "weight", "bias"]
    # select "hidden" = every layer but the output one
    np.testing.assert_array_equal(arch.select("hidden"), np.arange(5 * 7 + 7))


def test_layout_rebuilds_the_state_dict(tmp_path):
    model, _, _ = _train(tmp_path / "r.trajkit")
    arch = trajkit.open_archive(tmp_path / "r.trajkit")
    sd = arch.state_dict(-1)
    fresh = _mlp(seed=5)
    fresh.load_state_dict(sd)
    for a, b in zip(fresh.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_evaluate_metrics_and_tensor_scalars(tmp_path):
    model = _mlp()
    calls = []

    def evaluate(m):
        calls.append(1)
        return {"norm": torch.cat([p.reshape(-1) for p in m.parameters()]).norm()}

    with trajkit.Recorder(tmp_path / "e.trajkit", model, schedule=trajkit.schedules.explicit([0, 3, 9]),
                          evaluate=evaluate) as rec:
        for k in range(10):
            rec.step(k, loss=torch.tensor(float(k)), grad_norm=np.float32(2 * k))
        rec.snapshot(12, metrics={"extra": 1.5})
    arch = trajkit.open_archive(tmp_path / "e.trajkit")
    assert arch.steps.tolist() == [0, 3, 9, 12]
    assert len(calls) == 4
    np.testing.assert_allclose(arch.metrics["norm"], np.linalg.norm(_flat(model)), rtol=1e-6)
    assert np.isnan(arch.metrics["extra"][:3]).all() and arch.metrics["extra"][3] == 1.5
    np.testing.assert_array_equal(arch.trace["loss"], np.arange(10.0))
    np.testing.assert_array_equal(arch.trace["grad_norm"], 2 * np.arange(10.0))


def test_trace_columns_given_at_some_steps_only_and_bad_scalars(tmp_path):
    """A scalar given at some steps only is NaN at the others (also one first seen late); a loss that still
    requires grad, numpy steps and floats mix; a tensor with more than one element is refused by name."""
    model = _mlp()
    w = torch.ones((), requires_grad=True)
    with trajkit.Recorder(tmp_path / "t.trajkit", model, schedule=trajkit.schedules.explicit([0, 5])) as rec:
        for k in range(8):
            extra = {"lr": 0.1} if k % 2 == 0 else {}
            if k >= 6:
                extra["late"] = torch.tensor(float(k))
            rec.step(np.int64(k) if k == 3 else k, loss=w * k if k != 4 else None, **extra)
        with pytest.raises(TrajkitError, match="trace scalar 'acc' must have one element, got shape \\(2,\\)"):
            rec.step(8, acc=torch.zeros(2))
    arch = trajkit.open_archive(tmp_path / "t.trajkit")
    assert arch.trace["step"].tolist() == list(range(8))
    np.testing.assert_array_equal(arch.trace["loss"], [0, 1, 2, 3, np.nan, 5, 6, 7])
    np.testing.assert_array_equal(arch.trace["lr"], [0.1, np.nan] * 4)
    np.testing.assert_array_equal(arch.trace["late"], [np.nan] * 6 + [6, 7])


def test_resume_drops_rows_at_or_after_the_resume_step(tmp_path):
    path = tmp_path / "r.trajkit"
    model = _mlp()
    with trajkit.Recorder(path, model, schedule=trajkit.schedules.linear(2)) as rec:
        for k in range(11):
            rec.step(k, loss=float(k))
    with pytest.raises(ArchiveError, match="already exists"):
        trajkit.Recorder(path, model)
    with trajkit.Recorder(path, model, schedule=trajkit.schedules.linear(2), resume="allow") as rec:
        assert rec.restore() == 10
        for k in range(6, 9):  # training restarted from step 6: rows 6, 8, 10 are replaced
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float(k))
            rec.step(k, loss=-float(k))
    arch = trajkit.open_archive(path)
    assert arch.steps.tolist() == [0, 2, 4, 6, 8]
    assert np.all(arch.params[3, :] == 6.0) and np.all(arch.params[4, :] == 8.0)
    np.testing.assert_array_equal(arch.trace["step"], np.arange(9))
    np.testing.assert_array_equal(arch.trace["loss"], [0, 1, 2, 3, 4, 5, -6, -7, -8])
    with pytest.raises(ArchiveError, match="resume='must'"):
        trajkit.Recorder(tmp_path / "absent.trajkit", model, resume="must")


def test_resume_with_a_different_model_is_refused(tmp_path):
    path = tmp_path / "r.trajkit"
    with trajkit.Recorder(path, _mlp()) as rec:
        rec.step(0)
    with pytest.raises(ArchiveError, match="n_params"):
        trajkit.Recorder(path, torch.nn.Linear(2, 2), resume="allow")


def test_writer_thread_errors_surface_on_the_next_step(tmp_path):
    path = tmp_path / "r.trajkit"
    model = _mlp()
    rec = trajkit.Recorder(path, model, schedule=trajkit.schedules.linear(1), writer="thread", buffers=1)
    rec.step(0)
    rec.step(1)
    rec._sink.close()  # let the queue drain, then break the params directory under the writer
    rec._sink = type(rec._sink)(1)
    params_chunk(path, 2, 0).mkdir()   # a directory where the next chunk file goes: the write fails
    with pytest.raises(RecordError, match="step 2"):
        rec.step(2)
        for k in range(3, 50):
            rec.step(k)
    with pytest.raises(RecordError, match="earlier write error"):
        rec.step(60)
    params_chunk(path, 2, 0).rmdir()
    rec.close()
    assert trajkit.open_archive(path).n_snapshots == 2


def test_back_pressure_never_drops_snapshots(tmp_path, monkeypatch):
    """A writer much slower than training makes the training thread wait; every snapshot lands."""
    import time as _time

    from trajkit.archive.writer import ArchiveWriter

    original = ArchiveWriter.write_row

    def slow_write_row(self, *a, **k):
        _time.sleep(0.01)
        return original(self, *a, **k)

    monkeypatch.setattr(ArchiveWriter, "write_row", slow_write_row)
    model = _mlp()
    with trajkit.Recorder(tmp_path / "bp.trajkit", model, schedule=trajkit.schedules.linear(1),
                          writer="thread", buffers=2) as rec:
        for k in range(40):
            with torch.no_grad():
                model[0].weight.fill_(float(k))
            rec.step(k)
    arch = trajkit.open_archive(tmp_path / "bp.trajkit")
    assert arch.steps.tolist() == list(range(40))
    for r in range(40):
        assert np.all(arch.params[r, :35] == float(r))


def test_the_writer_thread_commits_queued_rows_in_groups():
    """Hand-overs that queue up behind the writer are settled (made visible) together: after GROUP rows, or
    when the queue has emptied (here at most SETTLE_S after the last settle); a lone hand-over is settled
    at once."""
    import threading

    from trajkit.record.background import GROUP, BackgroundSink, Handover

    runs, settled_after = [], []
    gate = threading.Event()

    class Archive:   # what the Recorder hands over: rows written by run(), made visible by publish()
        def publish(self):
            settled_after.append(len(runs))

    arch = Archive()

    def work(i):
        def run():
            if i == 0:
                gate.wait(10)
            runs.append(i)
        return run

    n = 2 * GROUP + 8
    sink = BackgroundSink(n)
    for i in range(n):
        sink.submit(Handover(None, work(i), "archive", i, arch.publish))
    gate.set()
    sink.close()
    assert runs == list(range(n))
    assert settled_after == [GROUP, 2 * GROUP, n]
    lone = BackgroundSink(2)
    lone.submit(Handover(None, lambda: runs.append("x"), "archive", 0, arch.publish))
    lone.close()
    assert settled_after[-1] == n + 1


def test_rows_faster_than_the_settle_interval_share_commits_and_none_waits_long():
    """Rows handed over every few milliseconds are published together (fewer settles than rows, none more
    than GROUP rows after its row), the first row after a quiet spell at once, and the last row without any
    further hand-over or close (SETTLE_S after it)."""
    import threading
    import time

    from trajkit.record.background import GROUP, SETTLE_S, BackgroundSink, Handover

    runs, settled_after = [], []
    settled = threading.Event()

    def publish():
        settled_after.append(len(runs))
        settled.set()

    sink = BackgroundSink(4)
    n = 40
    for i in range(n):
        sink.submit(Handover(None, lambda i=i: runs.append(i), "archive", i, publish))
        time.sleep(SETTLE_S / 10)
    deadline = time.monotonic() + 30
    while (not settled_after or settled_after[-1] < n) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert settled_after and settled_after[-1] == n, "the last rows were never published without a close"
    assert settled_after[0] == 1, "the first row after a quiet spell waited for others"
    assert len(settled_after) < n, "rows a few milliseconds apart were committed one by one"
    assert all(b - a <= GROUP for a, b in zip([0, *settled_after], settled_after, strict=False))
    time.sleep(2 * SETTLE_S)   # a quiet spell: the next row is published on its own
    settled.clear()
    sink.submit(Handover(None, lambda: runs.append("late"), "archive", n, publish))
    assert settled.wait(30) and settled_after[-1] == n + 1
    sink.close()


def test_deferred_commits_are_invisible_until_published_and_lost_only_to_a_crash(tmp_path):
    """ArchiveWriter(defer_commit): rows committed in memory are not on disk's marker until publish();
    a crash (abort) keeps exactly the published rows, intact and valid; close() publishes the rest."""
    from trajkit.archive.writer import create

    path = tmp_path / "g.trajkit"
    w = create(path, 1000)
    w.defer_commit = True
    for k in range(3):
        w.append(k, np.full(1000, float(k), np.float32))
    assert trajkit.open_archive(path).n_snapshots == 0
    w.publish()
    assert trajkit.open_archive(path).n_snapshots == 3
    w.append(3, np.full(1000, 3.0, np.float32))
    w.abort()   # what SIGKILL leaves
    arch = trajkit.open_archive(path)
    assert arch.steps.tolist() == [0, 1, 2] and np.all(arch.params[2] == 2.0)
    assert not trajkit.archive.validate(path)
    w = create(path, 1000, resume="allow")
    w.defer_commit = True
    w.append(3, np.full(1000, 3.0, np.float32))
    w.close()
    arch = trajkit.open_archive(path)
    assert arch.steps.tolist() == [0, 1, 2, 3] and np.all(arch.params[3] == 3.0)


def test_nonfinite_params_are_flagged_at_record_time(tmp_path):
    model = _mlp()
    with pytest.warns(RuntimeWarning, match="NaN or inf"), \
            trajkit.Recorder(tmp_path / "nan.trajkit", model, schedule=trajkit.schedules.linear(1)) as rec:
        rec.step(0)
        with torch.no_grad():
            model[0].weight[0, 0] = float("nan")
        rec.step(1)
        rec.step(2)
    meta = trajkit.open_archive(tmp_path / "nan.trajkit").metadata
    assert meta["nonfinite"]["first_step"] == 1 and meta["nonfinite"]["steps"] == [1, 2]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_nonfinite_rows_are_flagged_when_the_copy_thread_checks_them(tmp_path, dtype):
    """With ``optimizer=`` the copy thread checks each row's finiteness while copying it (the writer then
    does not read the row back); an inf reached through a real optimiser step is flagged at that step and
    the rows before it are not."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    with pytest.warns(RuntimeWarning, match="NaN or inf"), \
            trajkit.Recorder(tmp_path / "inf.trajkit", model, schedule=trajkit.schedules.linear(1), optimizer=opt,
                             writer="thread", dtype=dtype) as rec:
        for k in range(5):
            if k:
                opt.zero_grad()
                for p in model.parameters():
                    p.grad = torch.zeros_like(p)
                if k == 3:
                    model[0].weight.grad[1, 2] = -float("inf")
                opt.step()
            rec.step(k)
    arch = trajkit.open_archive(tmp_path / "inf.trajkit")
    assert arch.metadata["nonfinite"]["steps"] == [3, 4]
    assert np.isfinite(arch.params[:3]).all() and np.isinf(arch.params[3]).any()


def test_bad_arguments_are_clear_errors(tmp_path):
    model = _mlp()
    with pytest.raises(TrajkitError, match="writer="):
        trajkit.Recorder(tmp_path / "a.trajkit", model, writer="fast")
    with pytest.raises(TrajkitError, match="no trainable parameters"):
        trajkit.Recorder(tmp_path / "b.trajkit", torch.nn.ReLU())
    with trajkit.Recorder(tmp_path / "c.trajkit", model) as rec:
        rec.step(0)
        with pytest.raises(TrajkitError, match="integer"):
            rec.step(1.5)
        with pytest.raises(ArchiveError, match="increase strictly"):
            rec.snapshot(0)
    with pytest.raises(TrajkitError, match="closed"):
        rec.step(3)


def test_schedules():
    s = trajkit.schedules.log(1, 1000, 10)
    assert s.steps(1000)[0] == 0 and s.steps(1000)[-1] == 1000
    assert all(k in s for k in s.steps(1000))
    lin = trajkit.schedules.linear(7, start=3, stop=30)
    assert lin.steps(100).tolist() == [3, 10, 17, 24]
    assert 10 in lin and 11 not in lin and 31 not in lin
    u = s | lin | trajkit.schedules.explicit([5, 999])
    assert set(u.steps(1000)) == set(s.steps(1000)) | {3, 10, 17, 24, 5, 999}
    rebuilt = trajkit.schedules.from_spec(u.spec)
    assert np.array_equal(rebuilt.steps(1000), u.steps(1000))
    with pytest.raises(TrajkitError):
        trajkit.schedules.log(10, 5, 3)
    with pytest.raises(TrajkitError):
        trajkit.schedules.linear(0)


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device: checks that non-snapshot steps never "
                                              "synchronise the host")),
])
def test_non_snapshot_steps_never_synchronise_the_host(tmp_path, device):
    """DESIGN.md: on GPU, ``rec.step`` on a non-snapshot step must not synchronise (tensor losses stay on
    the device until the next snapshot); ``set_sync_debug_mode("error")`` turns any sync into an error.
    The CPU run checks the same loop's recorded values."""
    cuda = device == "cuda"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(64, 512, device=device)
    y = torch.randint(0, 10, (64,), device=device)
    losses = []
    with trajkit.Recorder(tmp_path / "run.trajkit", model, schedule=trajkit.schedules.explicit([0, 40])) as rec:
        rec.step(0)
        for k in range(1, 41):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach().clone())
            if cuda and k < 40:
                torch.cuda.set_sync_debug_mode("error")
            try:
                rec.step(k, loss=loss)
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode(0)
        final = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu().numpy()
    arch = trajkit.open_archive(tmp_path / "run.trajkit")
    np.testing.assert_array_equal(arch.steps, [0, 40])
    np.testing.assert_array_equal(arch.params[1, :], final)
    np.testing.assert_array_equal(arch.trace["step"], np.arange(41))
    assert np.isnan(arch.trace["loss"][0])
    np.testing.assert_allclose(arch.trace["loss"][1:], torch.stack(losses).cpu().numpy(), rtol=1e-6)


def test_a_repeated_or_decreasing_step_is_refused_at_the_call_and_records_nothing(tmp_path):
    """rec.step(k) with k not above the last call's step: a one-line error naming both steps at that call
    (not at the next flush), nothing recorded for it, and the run goes on."""
    path = tmp_path / "r.trajkit"
    model = _mlp()
    with trajkit.Recorder(path, model, schedule=trajkit.schedules.explicit([0, 4])) as rec:
        for k in (0, 1, 2):
            rec.step(k, loss=float(k))
        for bad in (2, 1, np.int64(2)):
            with pytest.raises(trajkit.TrajkitError, match=rf"rec\.step\({int(bad)}\) after rec\.step\(2\): steps must "
                                                           r"increase strictly") as err:
                rec.step(bad, loss=99.0)
            assert "\n" not in str(err.value)
        for k in (3, 4):
            rec.step(k, loss=float(k))
    arch = trajkit.open_archive(path)
    assert arch.trace["step"].tolist() == [0, 1, 2, 3, 4] and arch.trace["loss"].tolist() == [0, 1, 2, 3, 4]
    assert arch.steps.tolist() == [0, 4] and not trajkit.archive.validate(path)
