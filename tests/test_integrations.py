"""The Lightning and Hugging Face callbacks, with the real libraries on CPU: what they record is the trainer's
own loss, learning rate and parameters, a checkpoint resume continues the archive exactly (online two-time
sums included), DDP records once, and attaching a callback twice is a one-line error."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import trajkit
from trajkit.archive.online import SUMS, online_rows
from trajkit.errors import TrajkitError
from trajkit.online import TwoTime, log_lags

pl = pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")
transformers = pytest.importorskip("transformers", reason="the transformers extra is not installed")

from trajkit.integrations.lightning import TrajkitCallback as LightningCallback  # noqa: E402
from trajkit.integrations.transformers import TrajkitCallback as HFCallback  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from hf_ddp import SCHEDULE as HF_DDP_SCHEDULE  # noqa: E402  (the torchrun rank program of the DDP test)
from hf_ddp import HFProbe, TokenData, bert, end_process_group, flat  # noqa: E402


def _assert_same_trajectory(a, b):
    """Two archives hold the same steps, parameter bits, epochs and trace (NaN equal to NaN)."""
    a, b = trajkit.open_archive(a), trajkit.open_archive(b)
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.params[:, :].view(np.uint32), b.params[:, :].view(np.uint32))
    np.testing.assert_array_equal(a.epochs, b.epochs)
    assert set(a.trace) == set(b.trace)
    for k in a.trace:
        np.testing.assert_array_equal(a.trace[k], b.trace[k], err_msg=k)
    oa, ob = online_rows(a), online_rows(b)
    assert (oa is None) == (ob is None)
    if oa is not None:   # online two-time sums: the same rows, bit for bit
        assert oa.n_rows == ob.n_rows > 0
        for name in ("tw_step", "step", "epsilon"):
            np.testing.assert_array_equal(getattr(oa, name), getattr(ob, name), err_msg=name)
        for name in SUMS:
            np.testing.assert_array_equal(oa.sums[name], ob.sums[name], err_msg=name)


# -- Lightning ------------------------------------------------------------------------------------------------

class TinyModule(pl.LightningModule):
    """A 6-8-3 tanh MLP; SGD with momentum and a per-step StepLR; keeps its own loss per optimiser step."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        self.losses: dict[int, float] = {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.losses[self.trainer.global_step + 1] = loss.item()   # the step this batch's update produces
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ParamsProbe(pl.Callback):
    """An independent record: the parameters and the learning rate at every optimiser step."""

    def __init__(self):
        self.params: dict[int, np.ndarray] = {}
        self.lr: dict[int, float] = {}

    def on_train_start(self, trainer, pl_module):
        self.params[trainer.global_step] = flat(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lr[trainer.global_step + 1] = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.params[trainer.global_step] = flat(pl_module)


def _loader(n=48, batch=4):
    g = torch.Generator().manual_seed(3)
    data = torch.utils.data.TensorDataset(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g))
    return torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False)


def _trainer(tmp_path, callbacks, max_steps, **kw):
    kw = {"accelerator": "cpu", "devices": 1, "enable_checkpointing": False, **kw}
    return pl.Trainer(max_steps=max_steps, callbacks=callbacks, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path, **kw)


SCHEDULE = trajkit.schedules.log(1, 30, 8) | trajkit.schedules.linear(6)


def test_lightning_records_the_trainers_loss_lr_and_parameters(tmp_path):
    module, probe = TinyModule(), ParamsProbe()
    cb = LightningCallback(tmp_path / "run.trajkit", schedule=SCHEDULE)
    _trainer(tmp_path, [cb, probe], max_steps=24).fit(module, _loader())
    arch = trajkit.open_archive(tmp_path / "run.trajkit")
    np.testing.assert_array_equal(arch.steps, SCHEDULE.steps(24))
    for r, s in enumerate(arch.steps):
        np.testing.assert_array_equal(arch.params[r, :], probe.params[int(s)])
    np.testing.assert_array_equal(arch.trace["step"], np.arange(25))
    assert np.isnan(arch.trace["loss"][0]) and np.isnan(arch.trace["lr"][0])
    np.testing.assert_array_equal(arch.trace["loss"][1:], [module.losses[k] for k in range(1, 25)])
    np.testing.assert_array_equal(arch.trace["lr"][1:], [probe.lr[k] for k in range(1, 25)])
    assert arch.trace["lr"][1] == 0.2 and arch.trace["lr"][6] == 0.1      # StepLR halves after 5 steps
    np.testing.assert_array_equal(arch.epochs, arch.steps / 12)          # 12 batches per epoch
    assert arch.metadata["integration"]["name"] == "lightning"
    with pytest.raises(TrajkitError, match="already exists and this run starts at step 0") as e:   # a fresh run
        _trainer(tmp_path, [LightningCallback(tmp_path / "run.trajkit")], max_steps=2).fit(TinyModule(), _loader())
    assert "\n" not in str(e.value)


#: online two-time sums from waiting times that are snapshot steps (so a resume can take them back)
PL_ONLINE = TwoTime(waiting_times=[0, 6], lags=log_lags(18, 5))


@pytest.mark.slow
def test_lightning_checkpoint_resume_continues_the_archive_exactly(tmp_path):
    """Checkpoint at 12, stopped at 18, resumed from the checkpoint: the archive — trace, snapshots and the
    online sums of waiting times 0 and 6 (rows at 12..18 dropped and measured again) — equals the
    uninterrupted run's."""
    def callback(name):
        return LightningCallback(tmp_path / name, schedule=SCHEDULE, online=PL_ONLINE)

    _trainer(tmp_path / "a", [callback("a.trajkit")], max_steps=24).fit(TinyModule(), _loader())
    # interrupted run: checkpoint at step 12, training (and recording) goes on to 18, then it stops
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=12, save_top_k=-1)
    _trainer(tmp_path / "b", [callback("b.trajkit"), ckpt],
             max_steps=18, enable_checkpointing=True).fit(TinyModule(), _loader())
    stopped = trajkit.open_archive(tmp_path / "b.trajkit")
    assert stopped.trace["step"][-1] == 18
    assert online_rows(stopped).step.max() > 12   # rows to redo
    (path,) = (tmp_path / "ckpt").glob("*step=12*.ckpt")
    _trainer(tmp_path / "b", [callback("b.trajkit")], max_steps=24).fit(TinyModule(), _loader(), ckpt_path=path)
    _assert_same_trajectory(tmp_path / "b.trajkit", tmp_path / "a.trajkit")


def test_lightning_callback_attached_twice_is_a_one_line_error(tmp_path):
    cb = LightningCallback(tmp_path / "run.trajkit", schedule=SCHEDULE)
    for callbacks in ([cb, cb], [cb, LightningCallback(tmp_path / "run.trajkit")]):
        with pytest.raises(TrajkitError, match="attached to this trainer twice") as e:
            _trainer(tmp_path, callbacks, max_steps=3).fit(TinyModule(), _loader())
        assert "\n" not in str(e.value)
        assert not (tmp_path / "run.trajkit").exists()


@pytest.mark.parametrize("module, extra", [("lightning", "lightning"), ("transformers", "transformers")])
def test_a_missing_library_is_one_line_naming_the_extra(monkeypatch, module, extra):
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, module, None)   # what an uninstalled package looks like to import
    monkeypatch.delitem(sys.modules, f"trajkit.integrations.{extra}")
    with pytest.raises(TrajkitError) as e:
        importlib.import_module(f"trajkit.integrations.{extra}")
    assert str(e.value).endswith(f"is not installed: pip install 'trajkit[{extra}]'")
    assert "\n" not in str(e.value)


def test_callback_arguments_are_checked_when_the_callback_is_made(tmp_path):
    with pytest.raises(TrajkitError, match="resume= is set by the callback"):
        LightningCallback(tmp_path / "r.trajkit", resume="allow")
    with pytest.raises(TrajkitError, match="unknown argument 'writter'; did you mean 'writer'"):
        HFCallback(tmp_path / "r.trajkit", writter="thread")


class HalfBatches(TinyModule):
    """Each DDP rank trains on every other sample, in order (an explicit DistributedSampler, no shuffle)."""

    def train_dataloader(self):
        data = _loader(n=96).dataset
        sampler = torch.utils.data.DistributedSampler(data, num_replicas=2, rank=self.global_rank, shuffle=False)
        return torch.utils.data.DataLoader(data, batch_size=4, sampler=sampler)


class GlooTeardown(pl.Callback):
    """Last callback of a ``ddp_spawn`` run: :func:`hf_ddp.end_process_group` in each spawned rank's teardown
    (Lightning leaves a gloo group to the interpreter's exit, where a rank aborted now and then in CI)."""

    def teardown(self, trainer, pl_module, stage):
        end_process_group()


@pytest.mark.slow
def test_lightning_ddp_records_once_what_one_process_would(tmp_path):
    """Two gloo processes (``ddp_spawn``), each half of every batch of 8: rank 0 records, and the trajectory
    is that of one process on the whole batches, up to the all-reduce's rounding."""
    module = HalfBatches()
    _trainer(tmp_path, [LightningCallback(tmp_path / "ddp.trajkit", schedule=SCHEDULE), GlooTeardown()], max_steps=12,
             devices=2, strategy="ddp_spawn", use_distributed_sampler=False).fit(module)
    ref, probe = TinyModule(), ParamsProbe()
    _trainer(tmp_path / "ref", [probe], max_steps=12).fit(ref, _loader(n=96, batch=8))
    arch = trajkit.open_archive(tmp_path / "ddp.trajkit")
    np.testing.assert_array_equal(arch.steps, SCHEDULE.steps(12))
    for r, s in enumerate(arch.steps):
        np.testing.assert_allclose(arch.params[r, :], probe.params[int(s)], rtol=1e-5, atol=1e-6, err_msg=f"step {s}")
    np.testing.assert_array_equal(arch.params[-1, :], flat(module))   # the weights ddp_spawn brings back
    assert trajkit.archive.validate(tmp_path / "ddp.trajkit") == []


# -- Hugging Face transformers -----------------------------------------------------------------------------------

def _hf_trainer(out, callbacks, **kw):
    kw = {"logging_steps": 1, "save_strategy": "no", **kw}
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=20, per_device_train_batch_size=4, learning_rate=5e-3,
        lr_scheduler_type="linear", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
        dataloader_num_workers=0, **kw)
    return transformers.Trainer(model=bert(), args=args, train_dataset=TokenData(32), callbacks=callbacks)


HF_SCHEDULE = trajkit.schedules.log(1, 20, 6) | trajkit.schedules.linear(4)
HF_ONLINE = TwoTime(waiting_times=[0, 3], lags=log_lags(16, 5))


def test_transformers_records_the_trainers_logged_loss_lr_and_parameters(tmp_path):
    probe = HFProbe()
    trainer = _hf_trainer(tmp_path / "out", [HFCallback(tmp_path / "run.trajkit", schedule=HF_SCHEDULE), probe])
    trainer.train()
    arch = trajkit.open_archive(tmp_path / "run.trajkit")
    np.testing.assert_array_equal(arch.steps, HF_SCHEDULE.steps(20))
    for r, s in enumerate(arch.steps):
        np.testing.assert_array_equal(arch.params[r, :], probe.params[int(s)])
    logged = {h["step"]: h for h in trainer.state.log_history if "loss" in h}
    assert sorted(logged) == list(range(1, 21))
    np.testing.assert_array_equal(arch.trace["step"], np.arange(21))
    np.testing.assert_array_equal(arch.trace["loss"][1:], [logged[k]["loss"] for k in range(1, 21)])
    np.testing.assert_array_equal(arch.trace["lr"][1:], [logged[k]["learning_rate"] for k in range(1, 21)])
    assert arch.trace["lr"][1] == 5e-3 and arch.trace["lr"][20] < arch.trace["lr"][10]   # linear decay
    np.testing.assert_allclose(arch.epochs, arch.steps / 8)   # 8 steps per epoch
    assert arch.metadata["integration"]["name"] == "transformers"


def test_transformers_sparse_logging_leaves_loss_nan_between_logs(tmp_path):
    trainer = _hf_trainer(tmp_path / "out", [HFCallback(tmp_path / "run.trajkit", schedule=HF_SCHEDULE)],
                          logging_steps=5)
    trainer.train()
    loss = trajkit.open_archive(tmp_path / "run.trajkit").trace["loss"]
    logged = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    assert sorted(logged) == [5, 10, 15, 20]
    np.testing.assert_array_equal(loss[[5, 10, 15, 20]], [logged[k] for k in (5, 10, 15, 20)])
    assert np.isnan(np.delete(loss, [5, 10, 15, 20])).all()


@pytest.mark.slow
def test_transformers_checkpoint_resume_continues_the_archive_exactly(tmp_path):
    """Checkpoint at 8, stopped at 11, resumed from checkpoint-8: trace, snapshots and the online sums of
    waiting times 0 and 3 (rows at 4, 5, 7, 11, 19 past the second) equal the uninterrupted run's."""
    def callback(name):
        return HFCallback(tmp_path / name, schedule=HF_SCHEDULE, online=HF_ONLINE)

    _hf_trainer(tmp_path / "a", [callback("a.trajkit")]).train()
    # interrupted run: checkpoint at step 8, recording goes on to 11, then training stops
    _hf_trainer(tmp_path / "b", [callback("b.trajkit"), HFProbe(stop_at=11)],
                save_strategy="steps", save_steps=8).train()
    stopped = trajkit.open_archive(tmp_path / "b.trajkit")
    assert stopped.trace["step"][-1] == 11
    assert online_rows(stopped).step.max() > 8   # rows to redo
    _hf_trainer(tmp_path / "b", [callback("b.trajkit")],
                save_strategy="steps", save_steps=8).train(resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-8"))
    _assert_same_trajectory(tmp_path / "b.trajkit", tmp_path / "a.trajkit")


def test_transformers_callback_attached_twice_is_a_one_line_error(tmp_path):
    cb = HFCallback(tmp_path / "run.trajkit", schedule=HF_SCHEDULE)
    trainer = _hf_trainer(tmp_path / "out", [cb])
    trainer.add_callback(cb)
    with pytest.raises(TrajkitError, match="attached to this trainer twice") as e:
        trainer.train()
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run.trajkit").exists()


# -- Hugging Face under DDP: two gloo processes launched by torch.distributed.run ----------------------------------

def _hf_ddp(out, *args):
    """Run tests/helpers/hf_ddp.py on two gloo ranks (torchrun); one-line failure with the ranks' output."""
    import os
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    helper = Path(__file__).parent / "helpers" / "hf_ddp.py"
    # TMPDIR: torchrun leaves a torchelastic_* log folder in the temporary directory of every launch
    tmp = out.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "TMPDIR": str(tmp)}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                        "127.0.0.1", "--master_port", str(port), str(helper), str(out), *args],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]


@pytest.mark.slow
def test_transformers_ddp_records_once_and_resumes_from_the_trainers_checkpoint(tmp_path):
    """``Trainer`` under DDP (torchrun, 2 gloo ranks, ``ddp_backend="gloo"``): rank 0 alone writes one archive
    holding, bit for bit, the parameters every rank had at the scheduled steps (the ranks agree: DDP averaged
    their gradients, though each saw other samples) and the loss the trainer logged (averaged over the ranks);
    a run stopped at step 11 and resumed from the trainer's checkpoint at step 8 gives the same archive."""
    _hf_ddp(tmp_path / "a")
    r0, r1 = np.load(tmp_path / "a" / "probe_rank0.npz"), np.load(tmp_path / "a" / "probe_rank1.npz")
    assert int(r0["world"]) == 2
    np.testing.assert_array_equal(r0["steps"], np.arange(17))
    np.testing.assert_array_equal(r0["params"], r1["params"])   # replicated by DDP's gradient all-reduce
    assert not np.array_equal(r0["params"][1], r0["params"][0])
    arch = trajkit.open_archive(tmp_path / "a" / "run.trajkit")
    np.testing.assert_array_equal(arch.steps, HF_DDP_SCHEDULE.steps(16))
    np.testing.assert_array_equal(arch.params[:, :], r0["params"][arch.steps])
    np.testing.assert_array_equal(arch.trace["loss"][r0["loss_steps"]], r0["loss"])
    np.testing.assert_allclose(arch.epochs, arch.steps / 8)   # 64 samples / (2 ranks × 4) per epoch
    assert trajkit.archive.validate(tmp_path / "a" / "run.trajkit") == []
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["hf", "probe_rank0.npz", "probe_rank1.npz",
                                                                   "run.trajkit"]
    # interrupted: checkpoint at 8, recording on to 11; then the trainer's own resume from checkpoint-8
    _hf_ddp(tmp_path / "b", "--stop-at", "11")
    assert trajkit.open_archive(tmp_path / "b" / "run.trajkit").trace["step"][-1] == 11
    _hf_ddp(tmp_path / "b", "--resume", str(tmp_path / "b" / "hf" / "checkpoint-8"))
    _assert_same_trajectory(tmp_path / "b" / "run.trajkit", tmp_path / "a" / "run.trajkit")
