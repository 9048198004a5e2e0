"""One rank of a Hugging Face ``Trainer`` DDP run on CPU (gloo), launched by ``torch.distributed.run``
(tests/test_integrations.py, which also takes the tiny BERT, the token data and the parameter probe from here).
Every rank records its own parameters at every optimiser step and the losses the
trainer logs into ``OUT/probe_rank<R>.npz``: the independent record the archive is checked against. Only the
callback on rank 0 may write ``OUT/run.trajkit``.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/hf_ddp.py OUT [--resume-at K]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import transformers

import trajkit
from trajkit.integrations.transformers import TrajkitCallback

SCHEDULE = trajkit.schedules.log(1, 16, 5) | trajkit.schedules.linear(4)


def flat(model: torch.nn.Module) -> np.ndarray:
    """The trainable parameters of ``model``, flattened in order, as a numpy copy."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad]).numpy().copy()


def bert() -> transformers.BertForSequenceClassification:
    """A one-layer BERT classifier built from a config (nothing downloaded), seeded."""
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16, num_labels=3,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(cfg)


class TokenData(torch.utils.data.Dataset):
    """``n`` random 8-token sequences with random labels (the same on every rank)."""

    def __init__(self, n: int):
        g = torch.Generator().manual_seed(5)
        self.ids = torch.randint(0, 40, (n, 8), generator=g)
        self.labels = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class HFProbe(transformers.TrainerCallback):
    """An independent record of the parameters at every optimiser step; stops training at ``stop_at``."""

    def __init__(self, stop_at=None):
        self.params: dict[int, np.ndarray] = {}
        self.stop_at = stop_at

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.params[state.global_step] = flat(model)

    def on_step_end(self, args, state, control, model=None, **kw):
        self.params[state.global_step] = flat(model)
        if state.global_step == self.stop_at:
            control.should_training_stop = True


def end_process_group() -> None:
    """A barrier, then the process group destroyed, at the end of a rank's work, while its interpreter is whole.

    Neither the ``Trainer`` nor Lightning destroys a gloo group: it goes at interpreter exit, where gloo's
    worker threads, still freeing a finished collective's tensors (which takes the GIL), abort the rank now
    and then (SIGABRT, "terminate called without an active exception"; pytorch/pytorch#190489). A
    ``destroy_process_group()`` alone deadlocked instead: the DDP reducer's C++ destructor joins those threads
    holding the GIL. The barrier waits with the GIL released, so the threads finish first."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--stop-at", type=int, default=None, help="stop training after this step (a checkpoint at 8)")
    ap.add_argument("--resume", default=None, help="a checkpoint folder to resume from")
    a = ap.parse_args()
    out = Path(a.out)
    rank = int(os.environ["RANK"])
    model = bert()
    args = transformers.TrainingArguments(
        output_dir=str(out / "hf"), max_steps=16, per_device_train_batch_size=4, learning_rate=5e-3,
        lr_scheduler_type="linear", report_to=[], use_cpu=True, disable_tqdm=True, seed=0, logging_steps=1,
        dataloader_num_workers=0, ddp_backend="gloo",
        save_strategy="steps" if a.stop_at else "no", save_steps=8)
    probe = HFProbe(stop_at=a.stop_at)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=TokenData(64),
                                   callbacks=[TrajkitCallback(out / "run.trajkit", schedule=SCHEDULE), probe])
    trainer.train(resume_from_checkpoint=a.resume)
    steps = sorted(probe.params)
    logged = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    np.savez(out / f"probe_rank{rank}{'_resume' if a.resume else ''}.npz", steps=np.array(steps),
             params=np.stack([probe.params[s] for s in steps]),
             loss_steps=np.array(sorted(logged)), loss=np.array([logged[k] for k in sorted(logged)]),
             world=trainer.args.world_size)
    end_process_group()

if __name__ == "__main__":
    main()
