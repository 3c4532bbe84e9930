"""A tiny 3d_fullres student, trained in seconds on synthetic CT, for the predictor tests.

It goes through nnU-Net v2's real pipeline (raw dataset, fingerprint,
`ExperimentPlanner`, preprocessing, an `nnUNetTrainer` subclass) and ends in a
standard results folder (`<nnUNet_results>/DatasetXXX_Name/<Trainer>__<Plans>__3d_fullres/`
with `fold_all/checkpoint_final.pth`), which is exactly what the predictors
load. Only the network and the training length are shrunk, by editing the
planner's output.

The synthetic cases are deliberately simple so that a seeded run of 240
iterations (Adam, one CPU thread, about 30 s on an idle 2-core machine) learns
them: an elliptic body (soft tissue) that ends before the volume does (air
slabs above and below), one bright blob (liver, class 1) and a thin tube along
z (aorta, class 5, one of the tubular classes the `fastest` rules treat
specially); plus two scans of pure air (see `air_case`). The network still has
FLARE23's 15 output classes.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from flare_core import labels as L
from flare_core.io import Geometry, write_json, write_volume
from flare_core.orientation import CANONICAL_ORIENTATION, DATASET_JSON_KEY, reorient_array

log = logging.getLogger(__name__)

PLANS_NAME = "ToyStudentPlans"
CONFIGURATION = "3d_fullres"
IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

TOY_LEARNING_RATE = 5e-3
AIR_HU, BODY_HU, ORGAN_HU, TUBE_HU = -1000, 40, 130, 260


@dataclass(frozen=True)
class ToyCase:
    image: np.ndarray  # int16 HU, (z, y, x)
    labels: np.ndarray  # uint8, (z, y, x)
    geometry: Geometry


@dataclass(frozen=True)
class ToyStudentSpec:
    """Network and training size of the toy student (axis order z, y, x)."""

    target_spacing: tuple[float, float, float] = (4.0, 1.2, 1.2)
    patch_size: tuple[int, int, int] = (16, 32, 32)
    features_per_stage: tuple[int, ...] = (8, 16, 32)
    kernel_sizes: tuple[tuple[int, int, int], ...] = ((1, 3, 3), (3, 3, 3), (3, 3, 3))
    strides: tuple[tuple[int, int, int], ...] = ((1, 1, 1), (1, 2, 2), (2, 2, 2))
    batch_size: int = 2
    epochs: int = 12
    iterations_per_epoch: int = 20
    seed: int = 12345


def toy_case(seed: int, shape_zyx: Sequence[int] = (24, 64, 64), spacing_xyz: Sequence[float] = (0.8, 0.8, 3.0),
             direction: Sequence[float] = IDENTITY_DIRECTION, body_margin_slices: int = 3) -> ToyCase:
    """One synthetic CT with a blob (class 1) and a tube along z (class 5)."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape_zyx
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape_zyx), indexing="ij")
    sx, sy, sz = spacing_xyz
    image = np.full(shape_zyx, AIR_HU, dtype=np.float32)
    labels = np.zeros(shape_zyx, dtype=np.uint8)
    body = (((y - ny / 2) / (0.42 * ny)) ** 2 + ((x - nx / 2) / (0.45 * nx)) ** 2 <= 1)
    body &= (z >= body_margin_slices) & (z < nz - body_margin_slices)
    image[body] = BODY_HU
    centre_mm = np.array([nz / 2 + rng.uniform(-0.15, 0.15) * nz, ny / 2 + rng.uniform(-0.12, 0.12) * ny,
                          nx / 2 + rng.uniform(-0.12, 0.12) * nx]) * np.array([sz, sy, sx])
    radii_mm = rng.uniform([12.0, 8.0, 8.0], [18.0, 12.0, 12.0])
    organ = sum(((axis * s - c) / r) ** 2 for axis, s, c, r in zip((z, y, x), (sz, sy, sx), centre_mm, radii_mm)) <= 1
    organ &= body
    image[organ], labels[organ] = ORGAN_HU, L.LIVER
    tube_y, tube_x = ny / 2 + 0.25 * ny * 0.42, nx / 2 + rng.uniform(-0.05, 0.05) * nx
    tube = (((y - tube_y) * sy) ** 2 + ((x - tube_x) * sx) ** 2 <= 3.0 ** 2) & body & ~organ
    image[tube], labels[tube] = TUBE_HU, L.AORTA
    image += rng.normal(0, 12, shape_zyx).astype(np.float32) * body
    geometry = Geometry(size=(nx, ny, nz), spacing=tuple(float(s) for s in spacing_xyz),
                        origin=(0.0, 0.0, 0.0), direction=tuple(float(d) for d in direction))
    return ToyCase(np.round(image).astype(np.int16), labels, geometry)


def air_case(shape_zyx: Sequence[int] = (24, 64, 64), spacing_xyz: Sequence[float] = (0.8, 0.8, 3.0)) -> ToyCase:
    """A scan of nothing but air. Clipped and normalised, air is a uniform field,
    which instance normalisation turns into all-zero features: without such
    patches in training the network answers them with whatever its biases say,
    and the `fastest` rules (which expect background in air) would see organs."""
    image = np.full(shape_zyx, AIR_HU, dtype=np.int16)
    geometry = Geometry(size=tuple(int(n) for n in reversed(shape_zyx)), spacing=tuple(float(s) for s in spacing_xyz),
                        origin=(0.0, 0.0, 0.0), direction=IDENTITY_DIRECTION)
    return ToyCase(image, np.zeros(shape_zyx, dtype=np.uint8), geometry)


def export_raw_dataset(cases: Sequence[ToyCase], raw_root: Path, dataset_id: int, name: str) -> Path:
    """Write an nnU-Net raw dataset (imagesTr, labelsTr, dataset.json with all 15 FLARE classes),
    in the canonical orientation like every dataset of the platform (`flare_core.orientation`)."""
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    for index, case in enumerate(cases):
        case_id = f"toy_{index:03d}"
        write_volume(*reorient_array(case.image, case.geometry), folder / "imagesTr" / f"{case_id}_0000.nii.gz")
        write_volume(*reorient_array(case.labels, case.geometry), folder / "labelsTr" / f"{case_id}.nii.gz")
    write_json({
        "channel_names": {"0": "CT"},
        "labels": {L.CLASS_NAMES[c]: c for c in range(L.MAX_LABEL + 1)},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        "name": name,
        DATASET_JSON_KEY: CANONICAL_ORIENTATION,
        # An explicit case list: otherwise nnU-Net lists the folder with a fork-based
        # Pool, which deadlocks in a process that already runs threads (seen in the suite).
        "dataset": {f"toy_{i:03d}": {"images": [f"imagesTr/toy_{i:03d}_0000.nii.gz"],
                                     "label": f"labelsTr/toy_{i:03d}.nii.gz"} for i in range(len(cases))},
    }, folder / "dataset.json")
    return folder


def shrink_plans(plans: dict, spec: ToyStudentSpec) -> dict:
    """Keep only 3d_fullres and give it the toy network, patch and batch size."""
    config = plans["configurations"][CONFIGURATION]
    stages = len(spec.features_per_stage)
    config.update(patch_size=list(spec.patch_size), batch_size=spec.batch_size, spacing=list(spec.target_spacing))
    config["architecture"]["arch_kwargs"].update(
        n_stages=stages,
        features_per_stage=list(spec.features_per_stage),
        kernel_sizes=[list(k) for k in spec.kernel_sizes],
        strides=[list(s) for s in spec.strides],
        n_conv_per_stage=[1] * stages,
        n_conv_per_stage_decoder=[1] * (stages - 1),
    )
    plans["configurations"] = {CONFIGURATION: config}
    return plans


def plan_and_preprocess(dataset_id: int, spec: ToyStudentSpec) -> None:
    """Fingerprint, plan with nnU-Net's ExperimentPlanner, shrink, preprocess 3d_fullres."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        preprocess_dataset,
    )
    from nnunetv2.paths import nnUNet_preprocessed

    from flare_core.nnunet.environment import scoped_env

    extract_fingerprint_dataset(dataset_id, num_processes=1, clean=True, verbose=False, show_progress_bar=False)
    planner = ExperimentPlanner(dataset_id, plans_name=PLANS_NAME,
                                overwrite_target_spacing=list(spec.target_spacing))
    with scoped_env(nnUNet_n_proc_DA=1):  # the planner calls torch.set_num_threads with it
        planner.plan_experiment()
    plans_file = Path(str(nnUNet_preprocessed)) / planner.dataset_name / f"{PLANS_NAME}.json"
    plans = shrink_plans(json.loads(plans_file.read_text()), spec)
    write_json(plans, plans_file)
    preprocess_dataset(dataset_id, PLANS_NAME, configurations=(CONFIGURATION,), num_processes=[1],
                       show_progress_bar=False)


def _trainer_class():
    """Defined on first use: importing nnU-Net's trainer costs seconds."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class ToyStudentTrainer(nnUNetTrainer):
        """nnU-Net's trainer without the parts a seconds-long run cannot afford."""

        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cuda")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            # Drawing progress.png every epoch costs more than a toy epoch.
            self.logger.plot_progress_png = lambda *args, **kwargs: None
            # Most patches should show the organ: a toy run has few iterations to learn it.
            self.oversample_foreground_percent = 0.66

        def configure_optimizers(self):
            # Adam converges in the few dozen iterations a toy run has; nnU-Net's
            # SGD with momentum 0.99 needs thousands.
            from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

            optimizer = torch.optim.Adam(self.network.parameters(), lr=TOY_LEARNING_RATE)
            return optimizer, PolyLRScheduler(optimizer, TOY_LEARNING_RATE, self.num_epochs)

        def perform_actual_validation(self, save_probabilities: bool = False) -> None:
            # The full-case validation spawns export workers; the tests validate
            # the predictors themselves instead.
            self.print_to_log_file("toy student: final validation skipped")

    return ToyStudentTrainer


def train(dataset_id: int, spec: ToyStudentSpec, device: torch.device) -> Path:
    """Train fold `all`; return the results folder (the one holding plans.json)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    from flare_core.nnunet.environment import scoped_env

    dataset_name = convert_id_to_dataset_name(dataset_id)
    preprocessed = Path(str(nnUNet_preprocessed)) / dataset_name
    plans = load_json(str(preprocessed / f"{PLANS_NAME}.json"))
    plans["continue_training"] = False  # nnU-Net's trainer expects the key
    trainer = _trainer_class()(plans=plans, configuration=CONFIGURATION, fold="all",
                               dataset_json=load_json(str(preprocessed / "dataset.json")), device=device)
    _seed_everything(spec.seed)
    trainer.num_epochs = spec.epochs
    trainer.num_iterations_per_epoch = spec.iterations_per_epoch
    trainer.num_val_iterations_per_epoch = 1
    trainer.save_every = max(spec.epochs, 1)
    threads = torch.get_num_threads()
    # One thread: a toy network gains nothing from more, on a shared machine
    # more threads thrash (10x slower measured), and one thread keeps the
    # seeded run reproducible. Augmentation in-process: no worker start-up.
    torch.set_num_threads(1)
    try:
        with scoped_env(nnUNet_n_proc_DA=0):
            trainer.run_training()
    finally:
        torch.set_num_threads(threads)
    return Path(trainer.output_folder_base)


def _seed_everything(seed: int) -> None:
    """nnU-Net draws patches and augmentations from numpy's, Python's and torch's
    global generators; seeding them makes the toy run repeatable."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_toy_student(work_root: Path, dataset_id: int = 990, n_cases: int = 3,
                      spec: ToyStudentSpec = ToyStudentSpec(), device: str = "cpu",
                      seed: int = 0) -> Path:
    """Whole pipeline under `work_root`; returns the nnU-Net results folder."""
    from flare_core.nnunet.environment import use_work_root

    folders = use_work_root(Path(work_root))
    cases = [toy_case(seed * 1000 + i) for i in range(n_cases)] + [air_case(), air_case()]
    export_raw_dataset(cases, folders.raw, dataset_id, "ToyStudent")
    plan_and_preprocess(dataset_id, spec)
    results = train(dataset_id, spec, torch.device(device))
    log.info("toy student trained: %s", results)
    return results
