"""Training killed at named points (kill -9 in a real process) resumes to the
same model as an uninterrupted run; training is reproducible from its seed."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flare_core.layout import WorkLayout
from flare_core.nnunet import training
from flare_core.nnunet.checkpoint_files import rng_files, rng_path
from flare_core.nnunet.dataset_export import export_tumor_dataset
from flare_core.nnunet.model_loading import read_checkpoint
from flare_core.nnunet.profiles import get_profile
from tests.core.crash_training import EPOCHS, TRAIN_KWARGS
from tests.core.nnunet_fixtures import write_sphere_cases

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[WorkLayout, str]:
    """Exported and preprocessed teacher data, copied for each training."""
    root = tmp_path_factory.mktemp("crash")
    cases = write_sphere_cases(root / "data", list(range(6)))
    work = WorkLayout(root / "prepared")
    exported = export_tumor_dataset(cases, work.nnunet_raw)
    training.plan_and_preprocess(work, exported.dataset_name, get_profile("test").teacher, num_processes=1,
                                 profile_name="test")
    return work, exported.dataset_name


@pytest.fixture(scope="module")
def uninterrupted(prepared, tmp_path_factory):
    work = _copy(prepared[0], tmp_path_factory.mktemp("uninterrupted"))
    return training.train(work, prepared[1], get_profile("test").teacher, "cpu", **TRAIN_KWARGS)


def _copy(work: WorkLayout, destination: Path) -> WorkLayout:
    shutil.copytree(work.root, destination / "work")
    return WorkLayout(destination / "work")


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(checkpoint)["network_weights"]


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = _weights(a), _weights(b)
    assert first.keys() == second.keys()
    different = [k for k in first if not torch.equal(first[k], second[k])]
    assert not different, f"{len(different)} of {len(first)} tensors differ, e.g. {different[:3]}"


def _train_until_killed(work: WorkLayout, dataset: str, point: str) -> None:
    done = subprocess.run([sys.executable, "-m", "tests.core.crash_training", str(work.root), dataset, point],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == -9, (done.returncode, done.stderr[-2000:])


def test_two_trainings_with_one_seed_give_identical_weights(prepared, uninterrupted, tmp_path):
    work = _copy(prepared[0], tmp_path)
    again = training.train(work, prepared[1], get_profile("test").teacher, "cpu", **TRAIN_KWARGS)
    _assert_same_weights(again.checkpoint, uninterrupted.checkpoint)
    assert again.curve.train_loss == uninterrupted.curve.train_loss


@pytest.mark.parametrize("point,resumes_at", [("epoch:3", 3), ("save:3", 2)])
def test_a_kill_in_training_or_while_saving_resumes_to_the_uninterrupted_model(
        prepared, uninterrupted, tmp_path, point, resumes_at):
    work = _copy(prepared[0], tmp_path)
    _train_until_killed(work, prepared[1], point)
    latest = next(work.root.rglob("checkpoint_latest.pth"))
    # The checkpoint on disk is whole: the one of the last save that finished.
    assert int(read_checkpoint(latest)["current_epoch"]) == resumes_at
    assert rng_path(latest, resumes_at).is_file()

    resumed = training.train(work, prepared[1], get_profile("test").teacher, "cpu", **TRAIN_KWARGS)
    assert resumed.resumed_from_epoch == resumes_at and resumed.epochs_completed == EPOCHS
    _assert_same_weights(resumed.checkpoint, uninterrupted.checkpoint)
    assert resumed.curve.train_loss == uninterrupted.curve.train_loss
    assert not latest.exists() and rng_files(latest) == []


def test_a_damaged_latest_checkpoint_is_set_aside_and_training_starts_over(prepared, uninterrupted, tmp_path):
    work = _copy(prepared[0], tmp_path)
    _train_until_killed(work, prepared[1], "epoch:2")
    latest = next(work.root.rglob("checkpoint_latest.pth"))
    latest.write_bytes(latest.read_bytes()[:1000])  # as a non-atomic writer killed mid-save leaves it
    resumed = training.train(work, prepared[1], get_profile("test").teacher, "cpu", **TRAIN_KWARGS)
    assert resumed.resumed_from_epoch is None and resumed.epochs_completed == EPOCHS
    _assert_same_weights(resumed.checkpoint, uninterrupted.checkpoint)


def test_the_cpu_profiles_student_is_reproducible_from_its_seed(tmp_path):
    """The `cpu` profile's own training pipeline (3D, elastic deformation, its
    sampler): a short training twice on the same data and seed, identical weights."""
    from flare_core.nnunet.dataset_export import export_student_dataset

    cases = write_sphere_cases(tmp_path / "data", list(range(2)))
    settings = get_profile("cpu").student
    planned = WorkLayout(tmp_path / "planned")
    exported = export_student_dataset(cases, planned.nnunet_raw)
    training.plan_and_preprocess(planned, exported.dataset_name, settings, num_processes=1)
    summaries = []
    for name in ("first", "second"):
        work = _copy(planned, tmp_path / name)
        summaries.append(training.train(work, exported.dataset_name, settings, "cpu", epochs=1, iterations=2,
                                        val_iterations=1, seed=7, threads=1))
    _assert_same_weights(summaries[0].checkpoint, summaries[1].checkpoint)
    assert summaries[0].curve.train_loss == summaries[1].curve.train_loss
    # ... and identical label maps from the two students.
    from flare_core.nnunet.efficient_predictor import StudentPredictor

    maps = [StudentPredictor.from_results(summary.model_folder, "fast", device="cpu")
            .predict_case(cases[0].image, cases[0].case_id).label for summary in summaries]
    np.testing.assert_array_equal(maps[0], maps[1])
