"""Environment variables that configure the platform, with demo defaults.

FLARE_DATA_ROOT   FLARE23-shaped input folder (read only)    default ./demo/data
FLARE_WORK_ROOT   where every output is written              default ./demo/work
FLARE_PROFILE     run profile: cpu (demo), test, flare23     default cpu
FLARE_DEVICE      auto, cpu or cuda                          default auto
FLARE_TEACHER_EPOCHS, FLARE_STUDENT_EPOCHS  train that model this many epochs   default: the profile's
FLARE_INFERENCE_MODE  fastest, fast or stock                 default fastest
FLARE_INFERENCE_BACKEND    torch, onnx or auto               default torch
FLARE_INFERENCE_PRECISION  float32 or bfloat16 (CPU, torch)  default float32
FLARE_SENSORS     on: discovery and automation sensors start running; off: stopped   default on
FLARE_SETTLE_SECONDS  a case file is picked up once unchanged this long   default 10
FLARE_RETRAIN_CRON    when the teacher and student may retrain (if their data changed)   default 0 2 * * *
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PROFILE = "cpu"

# What a step reads while it runs. Every process that runs steps (a run pod, a
# step pod, a Celery worker) must see the same values as the code location,
# or a step trains another profile, or writes elsewhere, than the UI shows.
STEP_SETTINGS = (
    "FLARE_DATA_ROOT", "FLARE_WORK_ROOT", "FLARE_PROFILE", "FLARE_DEVICE",
    "FLARE_TEACHER_EPOCHS", "FLARE_STUDENT_EPOCHS",
    "FLARE_INFERENCE_MODE", "FLARE_INFERENCE_BACKEND", "FLARE_INFERENCE_PRECISION",
)


def data_root() -> Path:
    return Path(os.environ.get("FLARE_DATA_ROOT", Path.cwd() / "demo" / "data")).resolve()


def work_root() -> Path:
    return Path(os.environ.get("FLARE_WORK_ROOT", Path.cwd() / "demo" / "work")).resolve()


def profile() -> str:
    return os.environ.get("FLARE_PROFILE", DEFAULT_PROFILE)


def device() -> str:
    return os.environ.get("FLARE_DEVICE", "auto")


def teacher_epochs() -> int | None:
    return _epochs("FLARE_TEACHER_EPOCHS")


def student_epochs() -> int | None:
    return _epochs("FLARE_STUDENT_EPOCHS")


def epoch_count(text: str) -> int:
    """A whole number of epochs of at least 1, from text (a variable, a flag)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"a whole number of epochs of at least 1, not {text!r}")
    return int(text)


def _epochs(variable: str) -> int | None:
    """The epochs `variable` asks for, or None (the profile's own) when unset or empty."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return None
    try:
        return epoch_count(text)
    except ValueError as error:
        raise ValueError(f"{variable} must be {error}") from None


def inference_mode() -> str:
    return os.environ.get("FLARE_INFERENCE_MODE", "fastest")


def inference_backend() -> str:
    """How `fast` / `fastest` run the student: torch, onnx (onnxruntime, CPU) or auto."""
    return os.environ.get("FLARE_INFERENCE_BACKEND", "torch")


def inference_precision() -> str:
    """The student's precision on the CPU: float32, bfloat16 (torch backend; fast on native-bf16 CPUs) or auto."""
    return os.environ.get("FLARE_INFERENCE_PRECISION", "float32")


def sensors_start_running() -> bool:
    return os.environ.get("FLARE_SENSORS", "on").lower() not in {"off", "0", "false", "no"}


def settle_seconds() -> float:
    return float(os.environ.get("FLARE_SETTLE_SECONDS", "10"))


def retrain_cron() -> str:
    from flare_assets.conditions import DEFAULT_RETRAIN_CRON

    return os.environ.get("FLARE_RETRAIN_CRON", DEFAULT_RETRAIN_CRON)
