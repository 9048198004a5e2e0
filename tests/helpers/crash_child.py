"""Child process for the crash-safety test: records a deterministic trajectory until killed.

Usage: python crash_child.py ARCHIVE N START STOP WRITER [resume]

At step k the model's flat parameter vector is exactly ``expected_params(k, N)`` and the trace loss is
``expected_loss(k)``, so the parent can check every committed row bit for bit. After each ``rec.step``
returns, the child prints the step (the parent uses it as a lower bound on what must be committed: that
step itself with the inline writer; with the writer thread, the step ``buffers`` plus one group commit
(``trajkit.record.background.GROUP`` rows) before it).
"""

import sys

import numpy as np
import torch

import trajkit

#: snapshot buffers of the writer thread: at most this many reported steps may still be in flight
BUFFERS = 3


def expected_params(k: int, n: int) -> np.ndarray:
    return (np.sin(0.001 * np.arange(n) + k) * (1 + k)).astype(np.float32)


def expected_loss(k: int) -> float:
    return 1.0 / (1.0 + k)


def main() -> None:
    path, n, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    writer = sys.argv[5]
    resume = "allow" if len(sys.argv) > 6 else "never"
    model = torch.nn.Linear(n // 2, 2, bias=False)
    assert sum(p.numel() for p in model.parameters()) == n
    with trajkit.Recorder(path, model, schedule=trajkit.schedules.linear(1), resume=resume,
                          writer=writer, buffers=BUFFERS) as rec:
        if resume == "allow":
            last = rec.restore()
            start = 0 if last is None else last + 1
            got = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
            if last is not None and not np.array_equal(got, expected_params(last, n)):
                print("restore-mismatch", flush=True)
                sys.exit(3)
        print("ready", flush=True)
        for k in range(start, stop + 1):
            with torch.no_grad():
                model.weight.copy_(torch.from_numpy(expected_params(k, n)).reshape(model.weight.shape))
            rec.step(k, loss=expected_loss(k), epoch=k / 10)
            print(k, flush=True)


if __name__ == "__main__":
    main()
