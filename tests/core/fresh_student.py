"""A freshly initialised (untrained) student as a standard nnU-Net v2 results folder.

For tests of what surrounds the network (loading, backends, folders, geometry)
rather than what it learned: hand-written plans for a tiny 3d_fullres
PlainConvUNet, a dataset.json with FLARE23's 15 classes, and
`fold_all/checkpoint_final.pth` with seeded random weights. Writing it takes
well under a second; no nnU-Net pipeline runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from flare_core import labels as L
from flare_core.io import write_json
from flare_core.nnunet.model_loading import CHECKPOINT, build_network
from flare_core.orientation import CANONICAL_ORIENTATION, DATASET_JSON_KEY

TRAINER, PLANS, CONFIGURATION = "FreshTrainer", "FreshPlans", "3d_fullres"
PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def fresh_plans(patch_size: Sequence[int] = (16, 32, 32), spacing: Sequence[float] = (4.0, 1.2, 1.2)) -> dict:
    """nnU-Net plans with one tiny 3d_fullres configuration (axis order z, y, x)."""
    return {
        "dataset_name": "Dataset999_Fresh",
        "plans_name": PLANS,
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [24, 64, 64],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "handwritten",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 300.0, "mean": 80.0, "median": 60.0, "min": -1000.0,
            "percentile_00_5": -1000.0, "percentile_99_5": 280.0, "std": 90.0}},
        "configurations": {CONFIGURATION: {
            "data_identifier": f"{PLANS}_{CONFIGURATION}",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2,
            "patch_size": list(patch_size),
            "median_image_size_in_voxels": [18.0, 43.0, 43.0],
            "spacing": list(spacing),
            "normalization_schemes": ["CTNormalization"],
            "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {
                "network_class_name": PLAIN_UNET,
                "arch_kwargs": {
                    "n_stages": 3, "features_per_stage": [4, 8, 16],
                    "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
                    "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
                    "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1],
                    "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                    "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
                },
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
            },
            "batch_dice": False,
        }},
    }


def fresh_dataset_json() -> dict:
    return {
        "channel_names": {"0": "CT"},
        "labels": {L.CLASS_NAMES[c]: c for c in range(L.MAX_LABEL + 1)},
        "numTraining": 0,
        "file_ending": ".nii.gz",
        DATASET_JSON_KEY: CANONICAL_ORIENTATION,
    }


def write_fresh_student(results_root: Path, seed: int = 0, **plan_options) -> Path:
    """`<results_root>/Dataset999_Fresh/FreshTrainer__FreshPlans__3d_fullres`, ready to load."""
    folder = Path(results_root) / "Dataset999_Fresh" / f"{TRAINER}__{PLANS}__{CONFIGURATION}"
    plans, dataset_json = fresh_plans(**plan_options), fresh_dataset_json()
    write_json(plans, folder / "plans.json")
    write_json(dataset_json, folder / "dataset.json")
    write_checkpoint(folder, plans, dataset_json, seed)
    return folder


def write_checkpoint(folder: Path, plans: dict, dataset_json: dict, seed: int) -> Path:
    """fold_all's checkpoint with weights drawn from `seed` (replacing any there)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plans)
    torch.manual_seed(seed)
    network = build_network(manager, manager.get_configuration(CONFIGURATION), dataset_json)
    path = Path(folder) / "fold_all" / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": network.state_dict(), "init_args": {"configuration": CONFIGURATION},
                "trainer_name": TRAINER, "inference_allowed_mirroring_axes": None}, path)
    return path
