"""Loaded models kept for the runs of one process.

Under the daemon every run is its own process and loads its model once per
batch. The demo and tests run many one-case runs in one process; keyed by
the checkpoint's hash, a model is loaded once there too, and a retrained
model (a new hash) is loaded afresh.
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=2)
def teacher(model_folder: str, checkpoint_sha256: str, device: str):
    from flare_core.nnunet.tumor_inference import TumorPredictor

    return TumorPredictor.from_results(model_folder, device=device)


@lru_cache(maxsize=2)
def student(model_folder: str, checkpoint_sha256: str, mode: str, device: str):
    from flare_core.nnunet.efficient_predictor import StudentPredictor

    return StudentPredictor.from_results(model_folder, mode=mode, device=device)
