"""The README demo: record a small training run and show what was recorded.

    python -m trajkit.demo [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch


def record_digits_run(path: Path, steps: int = 600) -> Path:
    """Train a small MLP on scikit-learn's digits with SGD, recording a log-spaced trajectory."""
    from sklearn.datasets import load_digits

    import trajkit

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()

    def evaluate(m):
        with torch.no_grad():
            out = m(X)
            return {"train_loss": loss_fn(out, y), "train_acc": (out.argmax(1) == y).float().mean()}

    meta = {"seed": 0, "dataset": {"name": "digits", "n_train": len(y), "n_test": 0},
            "dynamics": {"kind": "sgd", "lr": 0.1, "batch_size": 64, "momentum": 0.0, "weight_decay": 0.0}}
    g = torch.Generator().manual_seed(0)
    with trajkit.Recorder(path, model, schedule=trajkit.schedules.log(1, steps, 40), metadata=meta,
                          evaluate=evaluate) as rec:
        for k in range(steps + 1):
            loss = None
            if k:
                idx = torch.randint(0, len(y), (64,), generator=g)
                opt.zero_grad()
                loss = loss_fn(model(X[idx]), y[idx])
                loss.backward()
                opt.step()
            rec.step(k, loss=loss, epoch=k * 64 / len(y))
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="trajkit demo")
    ap.add_argument("--out", default=None, help="output directory (default: a temp dir)")
    args = ap.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="trajkit-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    path = record_digits_run(out / "digits-sgd.trajkit")
    print(f"recorded {path}\n")
    from trajkit.cli import cli

    cli.main(["info", str(path)], prog_name="trajkit", standalone_mode=False)


if __name__ == "__main__":
    main()
