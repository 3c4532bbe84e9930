"""Checkpoints that survive a kill, and the random state that makes a resume exact.

nnU-Net writes `checkpoint_latest.pth` in place, so a process killed while
saving leaves a truncated file that every later resume fails on. Here each
checkpoint is written beside its target and renamed into place (`os.replace`
is atomic on one file system): a kill leaves the previous checkpoint whole.

A resumed training equals an uninterrupted one only if it continues with the
random state the interrupted run had when it saved: the sampler, the
augmentation and dropout draw from Python's, numpy's and torch's generators.
That state is kept in a small file per epoch next to the latest checkpoint
(`<checkpoint>.epoch-<n>.rng`), written before the checkpoint and the older
ones removed after it: whenever a kill strikes, the checkpoint on disk has
the state of its own epoch beside it.
"""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

RNG_SUFFIX = ".rng"


def save_atomically(payload: Any, target: Path) -> None:
    """`torch.save` to a temporary file in the target's folder, then rename it into place."""
    target = Path(target)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        with open(partial, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def rng_path(checkpoint: Path, epoch: int) -> Path:
    return Path(checkpoint).with_name(f"{Path(checkpoint).name}.epoch-{int(epoch)}{RNG_SUFFIX}")


def rng_files(checkpoint: Path) -> list[Path]:
    return sorted(Path(checkpoint).parent.glob(f"{Path(checkpoint).name}.epoch-*{RNG_SUFFIX}"))


def save_random_state(checkpoint: Path, epoch: int) -> None:
    """Record the generators' state for the checkpoint of `epoch` (epochs completed)."""
    numpy_state = np.random.get_state()
    state = {
        "epoch": int(epoch),
        "python": random.getstate(),
        # As plain values, so the file loads with weights_only=True.
        "numpy": (numpy_state[0], numpy_state[1].tolist(), *[float(v) if isinstance(v, float) else int(v)
                                                            for v in numpy_state[2:]]),
        "torch": torch.get_rng_state(),
    }
    save_atomically(state, rng_path(checkpoint, epoch))


def keep_random_state_of(checkpoint: Path, epoch: int | None) -> None:
    """Remove the states of every other epoch (all of them with `epoch` None)."""
    for path in rng_files(checkpoint):
        if epoch is None or path != rng_path(checkpoint, epoch):
            path.unlink(missing_ok=True)


def read_random_state(checkpoint: Path, epoch: int) -> dict | None:
    """The state saved with the checkpoint of `epoch`, or None (missing or unreadable)."""
    path = rng_path(checkpoint, epoch)
    if not path.is_file():
        log.warning("no random state beside %s for epoch %d; resuming without it (not bit-identical)",
                    checkpoint, epoch)
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a bad side file only costs exactness
        log.warning("%s is unreadable (%s); resuming without the interrupted run's random state", path, error)
        return None
    return state


def restore_random_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])


def _as_tuples(value: Any) -> Any:
    """random.setstate wants the tuples it gave (a reload may hand back lists)."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


def checkpoint_is_readable(path: Path, reader) -> bool:
    """Whether `reader(path)` loads the file (a truncated or foreign file does not)."""
    try:
        reader(path)
    except Exception as error:  # noqa: BLE001 - any failure means: do not resume from it
        log.warning("%s cannot be read (%s: %s)", path, type(error).__name__, error)
        return False
    return True
