"""Train the test-profile teacher in a process that kills itself at a named point.

    python -m tests.core.crash_training WORK DATASET POINT

POINT is `epoch:N` (SIGKILL after epoch N's callback) or `save:N` (SIGKILL
halfway through writing the N-th checkpoint_latest.pth: half of its bytes
written and flushed, as a power cut or the OOM killer would leave it).
"""
from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

import torch

from flare_core.nnunet import training
from flare_core.nnunet.profiles import get_profile

EPOCHS, ITERATIONS = 6, 4
TRAIN_KWARGS = dict(epochs=EPOCHS, iterations=ITERATIONS, seed=0, threads=1)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_after_epoch(epoch: int):
    def on_epoch(done: int, *_):
        if done + 1 == epoch:
            die()
    return on_epoch


def kill_while_saving(nth_latest: int) -> None:
    real_save, seen = torch.save, []

    def half_save(payload, target, *args, **kwargs):
        name = target if isinstance(target, (str, Path)) else getattr(target, "name", "")
        if "checkpoint_latest" in str(name) and ".rng" not in str(name):  # the checkpoint, not its random state
            seen.append(name)
            if len(seen) == nth_latest:
                buffer = io.BytesIO()
                real_save(payload, buffer, *args, **kwargs)
                with open(name, "wb") as handle:
                    handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                    handle.flush()
                    os.fsync(handle.fileno())
                die()
        return real_save(payload, target, *args, **kwargs)

    torch.save = half_save


def main(work: str, dataset: str, point: str) -> None:
    kind, _, number = point.partition(":")
    on_epoch = None
    if kind == "epoch":
        on_epoch = kill_after_epoch(int(number))
    elif kind == "save":
        kill_while_saving(int(number))
    else:
        raise SystemExit(f"unknown kill point {point!r}")
    training.train(Path(work), dataset, get_profile("test").teacher, "cpu", on_epoch=on_epoch, **TRAIN_KWARGS)


if __name__ == "__main__":
    main(*sys.argv[1:])
