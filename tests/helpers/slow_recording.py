"""Child process for the report tests: records a small model one snapshot per step, PAUSE seconds apart,
until it is killed (a live archive that grows slowly enough to watch).

Usage: python slow_recording.py ARCHIVE PAUSE
"""

import sys
import time

import torch

import trajkit


def main() -> None:
    path, pause = sys.argv[1], float(sys.argv[2])
    model = torch.nn.Linear(32, 2, bias=False)
    with trajkit.Recorder(path, model, schedule=trajkit.schedules.linear(1)) as rec:
        for k in range(10**9):
            with torch.no_grad():
                model.weight.mul_(0.99).add_(0.01 * torch.randn_like(model.weight))
            rec.step(k, loss=1.0 / (1.0 + k))
            time.sleep(pause)


if __name__ == "__main__":
    main()
