"""The work root's current student, found without Dagster.

Training (the `student_weights` asset) records its summary in
`<work root>/manifests/student_weights.json`: the results folder, the
checkpoint's sha256 and more. `trusted_student_folder` reads that record and
proves the checkpoint is the recorded one, inside the work root, before
anything unpickles it (`verify_checkpoint`), as the `prediction` asset does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flare_core.layout import WorkLayout
from flare_core.nnunet.model_loading import verify_checkpoint

# The record's name: the state name the `student_weights` asset writes it under.
STUDENT_STATE = "student_weights"


class NoTrainedStudent(FileNotFoundError):
    """The work root holds no (readable) record of a trained student."""


@dataclass(frozen=True)
class TrainedStudent:
    model_folder: Path
    checkpoint_sha256: str


def student_record_path(work_root: Path) -> Path:
    return WorkLayout(Path(work_root)).manifests / f"{STUDENT_STATE}.json"


def read_trained_student(work_root: Path) -> TrainedStudent:
    """The recorded results folder and checkpoint hash; `NoTrainedStudent` if none."""
    path = student_record_path(work_root)
    try:
        record = json.loads(path.read_text())
        return TrainedStudent(Path(record["model_folder"]), str(record["checkpoint_sha256"]))
    except FileNotFoundError:
        raise NoTrainedStudent(f"no trained student in {work_root}: {path} is missing "
                               "(materialize student_weights first)") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise NoTrainedStudent(f"unreadable student record {path}: {error}") from None


def trusted_student_folder(work_root: Path) -> TrainedStudent:
    """The work root's student, its checkpoint verified (`UntrustedCheckpoint` otherwise)."""
    student = read_trained_student(work_root)
    verify_checkpoint(student.model_folder, student.checkpoint_sha256, Path(work_root))
    return student
