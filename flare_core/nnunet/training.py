"""Planning, preprocessing and training of the teacher and the student with nnU-Net v2.

`plan_and_preprocess` runs nnU-Net's fingerprint extraction, our planner class
and nnU-Net's preprocessing; unchanged data are not fingerprinted or
preprocessed again. `train` trains fold "all" and is safe to call repeatedly:

- a finished model (checkpoint_final.pth) trained on the same plans and data
  for at least the requested epochs is returned without training;
- an interrupted run continues from nnU-Net's checkpoint_latest.pth, and a
  finished run asked for more epochs continues from checkpoint_final.pth, with
  the logged curves continued (nnU-Net's own `--c` behaviour);
- when the plans or the data changed, old checkpoints are discarded and
  training starts over.
What "the same" means is recorded in `flare_run.json` beside the checkpoints.

nnU-Net starts worker processes with the spawn method for fingerprinting and
preprocessing: scripts calling these functions need an
`if __name__ == "__main__":` guard.

The folders written are standard nnU-Net v2 ones, so stock commands work on
them where torchvision imports (see tumor_inference.py), e.g.
`nnUNet_extTrainer=<repo>/flare_core/nnunet/ext_trainers nnUNetv2_train 501 2d
all -tr FlareTeacherTrainer -p FlareTeacherPlans --c`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from copy import deepcopy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset

from flare_core.io import file_sha256, write_json
from flare_core.layout import WorkLayout
from flare_core.nnunet.configured_planner import ConfiguredPlanner
from flare_core.nnunet.configured_trainer import ConfiguredTrainer, EpochCallback
from flare_core.nnunet.dataset_export import read_export_digest
from flare_core.nnunet.environment import (
    NnunetFolders, configure_threads, default_augmentation_workers, scoped_env, select_device, use_work_root,
)
from flare_core.nnunet.checkpoint_files import checkpoint_is_readable
from flare_core.nnunet.model_loading import read_checkpoint
from flare_core.nnunet.settings import TRAINING_KEY, StudentSettings, TeacherSettings, with_training
from flare_core.nnunet.student_planner import STUDENT_PLANS, FlareStudentPlanner
from flare_core.nnunet.student_trainer import FlareStudentTrainer
from flare_core.nnunet.teacher_planner import TEACHER_PLANS, FlareTeacherPlanner
from flare_core.nnunet.teacher_trainer import FlareTeacherTrainer

log = logging.getLogger(__name__)

ModelSettings = TeacherSettings | StudentSettings
FOLD = "all"
PLAN_STATE = "flare_plan_state.json"
RUN_STATE = "flare_run.json"
# Configuration keys that change what preprocessing writes.
_PREPROCESSING_KEYS = ("data_identifier", "spacing", "normalization_schemes", "use_mask_for_norm",
                       "resampling_fn_data", "resampling_fn_data_kwargs", "resampling_fn_seg",
                       "resampling_fn_seg_kwargs", "preprocessor_name")


@dataclass(frozen=True)
class ModelRole:
    planner: type[ConfiguredPlanner]
    trainer: type[ConfiguredTrainer]
    plans_name: str


ROLES: dict[str, ModelRole] = {
    "teacher": ModelRole(FlareTeacherPlanner, FlareTeacherTrainer, TEACHER_PLANS),
    "student": ModelRole(FlareStudentPlanner, FlareStudentTrainer, STUDENT_PLANS),
}


@dataclass
class PlanResult:
    dataset_name: str
    plans_name: str
    configuration: str
    plans_path: Path
    plans: dict[str, Any]
    preprocessed_folder: Path
    fingerprinted: bool
    preprocessed: bool
    data_signature: str
    seconds: float


@dataclass
class EpochCurve:
    """Per-epoch values logged by nnU-Net, index = epoch."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    pseudo_dice: list[float] = field(default_factory=list)
    ema_pseudo_dice: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


@dataclass
class TrainingSummary:
    dataset_name: str
    trainer: str
    plans_name: str
    configuration: str
    device: str
    model_folder: Path  # <results>/<dataset>/<trainer>__<plans>__<configuration>
    checkpoint: Path
    checkpoint_sha256: str
    epochs_completed: int
    final_pseudo_dice: float
    final_ema_pseudo_dice: float
    wall_seconds: float
    resumed_from_epoch: int | None
    skipped: bool
    curve: EpochCurve

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(model_folder=str(self.model_folder), checkpoint=str(self.checkpoint))
        return data


def plan_and_preprocess(work: WorkLayout | Path, dataset_name: str, settings: ModelSettings, *,
                        num_processes: int = 2, gpu_memory_gb: float = 8.0, profile_name: str = "",
                        preprocess: bool = True) -> PlanResult:
    """Fingerprint (if the data changed), plan with our planner, preprocess (if needed).

    `preprocess=False` stops after writing the plans (e.g. to inspect them).
    `num_processes` is the size of nnU-Net's worker pools (at least 1).
    """
    start = time.perf_counter()
    folders = use_work_root(work)
    role = ROLES[settings.role]
    configuration = settings.plan.configuration
    pre_dir = folders.preprocessed / dataset_name
    state = _read_json(pre_dir / PLAN_STATE)
    signature = read_export_digest(folders.raw / dataset_name) or _raw_listing_signature(folders.raw / dataset_name)
    workers = max(1, int(num_processes))

    # Planning estimates network sizes under torch.set_num_threads(n_proc_DA), which must not be 0.
    with scoped_env(nnUNet_n_proc_DA=workers):
        fingerprinted = state.get("data_signature") != signature or not (pre_dir / "dataset_fingerprint.json").is_file()
        if fingerprinted:
            extractor = DatasetFingerprintExtractor(dataset_name, workers, verbose=False)
            extractor.show_progress_bar = False
            extractor.run(overwrite_existing=True)
        planner = role.planner(dataset_name, settings, gpu_memory_target_in_gb=gpu_memory_gb, profile_name=profile_name)
        plans = planner.plan_experiment()

    plans_path = pre_dir / f"{role.plans_name}.json"
    cfg = plans["configurations"][configuration]
    data_folder = pre_dir / cfg["data_identifier"]
    preprocessing_key = _sha({k: cfg.get(k) for k in _PREPROCESSING_KEYS} | {"t": plans["transpose_forward"]})
    states = state.get("preprocessed", {}) if not fingerprinted else {}
    up_to_date = states.get(configuration) == preprocessing_key and _has_files(data_folder)
    if not up_to_date:
        states.pop(configuration, None)  # what is on disk no longer matches these plans
    needs_preprocessing = preprocess and not up_to_date
    if needs_preprocessing:
        # This nnU-Net function takes the numeric id only (it looks the name up again).
        preprocess_dataset(_dataset_id(dataset_name), role.plans_name, [configuration], [workers], verbose=False,
                           show_progress_bar=False)
        states[configuration] = preprocessing_key
    write_json({"data_signature": signature, "preprocessed": states}, pre_dir / PLAN_STATE)
    seconds = time.perf_counter() - start
    log.info("%s: planned %s (%s) in %.1f s (fingerprint %s, preprocessing %s)", dataset_name, configuration,
             role.plans_name, seconds, "run" if fingerprinted else "reused",
             "run" if needs_preprocessing else ("reused" if up_to_date else "not requested"))
    return PlanResult(dataset_name, role.plans_name, configuration, plans_path, plans, data_folder,
                      fingerprinted, needs_preprocessing, signature, seconds)


def model_folder(work: WorkLayout | Path, dataset_name: str, settings: ModelSettings) -> Path:
    """nnU-Net's results folder of this model: <results>/<dataset>/<trainer>__<plans>__<cfg>."""
    role = ROLES[settings.role]
    name = f"{role.trainer.__name__}__{role.plans_name}__{settings.plan.configuration}"
    return NnunetFolders.of(work).results / dataset_name / name


def train(work: WorkLayout | Path, dataset_name: str, settings: ModelSettings, device: torch.device | str = "auto",
          *, epochs: int | None = None, iterations: int | None = None, val_iterations: int | None = None,
          augmentation_workers: int | None = None, threads: int | None = None, seed: int | None = None,
          on_epoch: EpochCallback | None = None, run_validation: bool = False) -> TrainingSummary:
    """Train fold "all" of the teacher or student (resuming or skipping when possible).

    `settings.training` (with `epochs`/`iterations`/`val_iterations` applied)
    replaces the training block of the plans for this run, so the results
    folder's plans.json records what actually ran. `run_validation` runs
    nnU-Net's final validation, which for fold "all" only re-predicts the
    training cases (and starts worker processes), so it is off by default.
    """
    start = time.perf_counter()
    folders = use_work_root(work)
    device = select_device(device)
    if device.type == "cpu":
        configure_threads(threads)
    role = ROLES[settings.role]
    configuration = settings.plan.configuration
    settings = with_training(settings, num_epochs=epochs, iterations_per_epoch=iterations,
                             val_iterations_per_epoch=val_iterations)
    plans, dataset_json, data_signature = _load_plans(folders, dataset_name, role.plans_name)
    plans["configurations"][configuration][TRAINING_KEY] = settings.training.to_dict()
    fold_dir = model_folder(work, dataset_name, settings) / f"fold_{FOLD}"
    identity = _run_identity(plans, configuration, data_signature)
    requested = settings.training.num_epochs

    resume = _choose_start(fold_dir, identity, requested)
    if resume == "skip":
        log.info("%s: %s is current (%s); not training again", dataset_name, role.trainer.__name__, fold_dir)
        return _summary_from_checkpoint(fold_dir, dataset_name, role, configuration, device, start)

    trainer = role.trainer(plans=dict(deepcopy(plans), continue_training=resume is not None),
                           configuration=configuration, fold=FOLD, dataset_json=dataset_json, device=device)
    trainer.epoch_callback = on_epoch
    resumed_from = None
    if resume is not None:
        trainer.load_checkpoint(str(resume))
        resumed_from = trainer.current_epoch
        log.info("%s: resuming %s from %s at epoch %d of %d", dataset_name, role.trainer.__name__, resume.name,
                 resumed_from, requested)
    write_json({"identity": identity, "num_epochs": requested}, fold_dir / RUN_STATE)
    _seed(seed)
    workers = default_augmentation_workers(device) if augmentation_workers is None else augmentation_workers
    with scoped_env(nnUNet_n_proc_DA=workers):
        trainer.run_training()
        if run_validation:
            trainer.perform_actual_validation(False)
    return _summary(trainer, fold_dir, dataset_name, role, configuration, device, start, resumed_from, False)


def _load_plans(folders: NnunetFolders, dataset_name: str, plans_name: str) -> tuple[dict, dict, str]:
    pre_dir = folders.preprocessed / dataset_name
    plans_path = pre_dir / f"{plans_name}.json"
    if not plans_path.is_file():
        raise FileNotFoundError(f"no plans {plans_path}; run plan_and_preprocess first")
    plans = json.loads(plans_path.read_text())
    dataset_json = json.loads((pre_dir / "dataset.json").read_text())
    state = _read_json(pre_dir / PLAN_STATE)
    if state and not any(c in state.get("preprocessed", {}) for c in plans["configurations"]):
        raise RuntimeError(f"{dataset_name}: the preprocessed data do not match {plans_path.name}; "
                           "run plan_and_preprocess with preprocess=True")
    signature = state.get("data_signature") or file_sha256(pre_dir / "dataset_fingerprint.json")[:16]
    return plans, dataset_json, signature


def _run_identity(plans: dict, configuration: str, data_signature: str) -> str:
    """What makes two trainings the same model: plans and data, not the epoch count."""
    plans = deepcopy(plans)
    for key in ("num_epochs", "save_every", "plot_every"):  # how long and how often to report, not what
        plans["configurations"][configuration][TRAINING_KEY].pop(key, None)
    return _sha({"plans": plans, "data": data_signature})


def _choose_start(fold_dir: Path, identity: str, requested: int) -> Path | str | None:
    """'skip', a checkpoint to continue from, or None for a fresh start."""
    state = _read_json(fold_dir / RUN_STATE)
    latest, final = fold_dir / "checkpoint_latest.pth", fold_dir / "checkpoint_final.pth"
    if state.get("identity") != identity:
        stale = [p for p in fold_dir.glob("checkpoint_*.pth*")] if fold_dir.is_dir() else []
        if stale:
            log.warning("plans or data changed since %s was trained; discarding %d old checkpoints", fold_dir,
                        len(stale))
            for path in stale:
                path.unlink()
        return None
    for partial in fold_dir.glob(".checkpoint_*.writing"):  # a kill while saving: the target is whole
        partial.unlink()
    if latest.is_file():  # nnU-Net deletes it when a run finishes: this run was interrupted
        if checkpoint_is_readable(latest, read_checkpoint):
            return latest
        log.warning("%s is damaged; not resuming from it", latest)  # written before saves were atomic
        latest.unlink()
    if final.is_file():
        return "skip" if _checkpoint_epochs(final) >= requested else final
    return None


def _checkpoint_epochs(path: Path) -> int:
    return int(read_checkpoint(path)["current_epoch"])


def _summary(trainer: ConfiguredTrainer, fold_dir: Path, dataset_name: str, role: ModelRole, configuration: str,
             device: torch.device, start: float, resumed_from: int | None, skipped: bool) -> TrainingSummary:
    return _summary_from_logging(trainer.logger.get_checkpoint(), fold_dir, dataset_name, role, configuration,
                                 device, start, resumed_from, skipped)


def _summary_from_checkpoint(fold_dir: Path, dataset_name: str, role: ModelRole, configuration: str,
                             device: torch.device, start: float) -> TrainingSummary:
    checkpoint = read_checkpoint(fold_dir / "checkpoint_final.pth")
    return _summary_from_logging(checkpoint["logging"], fold_dir, dataset_name, role, configuration, device, start,
                                 None, True)


def _summary_from_logging(logging_state: dict, fold_dir: Path, dataset_name: str, role: ModelRole,
                          configuration: str, device: torch.device, start: float, resumed_from: int | None,
                          skipped: bool) -> TrainingSummary:
    curve = _curve(logging_state)
    final = fold_dir / "checkpoint_final.pth"
    return TrainingSummary(
        dataset_name=dataset_name, trainer=role.trainer.__name__, plans_name=role.plans_name,
        configuration=configuration, device=str(device), model_folder=fold_dir.parent, checkpoint=final,
        checkpoint_sha256=file_sha256(final), epochs_completed=len(curve.train_loss),
        final_pseudo_dice=curve.pseudo_dice[-1] if curve.pseudo_dice else float("nan"),
        final_ema_pseudo_dice=curve.ema_pseudo_dice[-1] if curve.ema_pseudo_dice else float("nan"),
        wall_seconds=time.perf_counter() - start, resumed_from_epoch=resumed_from, skipped=skipped, curve=curve)


def _curve(logging_state: dict) -> EpochCurve:
    def values(key: str) -> list[float]:
        return [float(v) for v in logging_state.get(key, [])]

    starts, ends = values("epoch_start_timestamps"), values("epoch_end_timestamps")
    return EpochCurve(train_loss=values("train_losses"), val_loss=values("val_losses"),
                      pseudo_dice=values("mean_fg_dice"), ema_pseudo_dice=values("ema_fg_dice"),
                      learning_rate=values("lrs"), seconds=[e - s for s, e in zip(starts, ends)])


def _seed(seed: int | None) -> None:
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _raw_listing_signature(folder: Path) -> str:
    """Fallback data identity for datasets not exported by dataset_export: names, sizes, mtimes."""
    files = sorted(p for p in folder.rglob("*.nii.gz"))
    return _sha([[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in files])


def _dataset_id(dataset_name: str) -> int:
    if not (dataset_name.startswith("Dataset") and dataset_name[7:10].isdigit() and dataset_name[10:11] == "_"):
        raise ValueError(f"{dataset_name!r} is not an nnU-Net dataset name (DatasetXXX_Name)")
    return int(dataset_name[7:10])


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
