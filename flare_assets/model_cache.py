"""Loaded models kept for the runs of one process.

Under the daemon every run is its own process and loads its model once per
batch. The demo and tests run many one-case runs in one process; keyed by
the checkpoint's hash, a model is loaded once there too, and a retrained
model (a new hash) is loaded afresh. Every load first proves the checkpoint
is the one training recorded, inside the work root.
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=2)
def teacher(model_folder: str, checkpoint_sha256: str, device: str, trusted_root: str):
    from flare_core.nnunet.model_loading import verify_checkpoint
    from flare_core.nnunet.tumor_inference import TumorPredictor

    verify_checkpoint(model_folder, checkpoint_sha256, trusted_root)  # before anything is unpickled
    return TumorPredictor.from_results(model_folder, device=device)


@lru_cache(maxsize=2)
def student(model_folder: str, checkpoint_sha256: str, mode: str, device: str, trusted_root: str,
            backend: str = "torch", precision: str = "float32"):
    from flare_core.nnunet.efficient_predictor import StudentPredictor
    from flare_core.nnunet.model_loading import verify_checkpoint

    verify_checkpoint(model_folder, checkpoint_sha256, trusted_root)  # before anything is unpickled
    return StudentPredictor.from_results(model_folder, mode=mode, device=device, backend=backend,
                                         precision=precision)
