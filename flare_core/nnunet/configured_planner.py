"""An nnU-Net planner whose result is shaped by explicit settings.

nnU-Net plans every configuration from the dataset fingerprint; this planner
lets it, keeps only the configuration the method trains (2d for the teacher,
3d_fullres for the student), replaces what the settings fix (network class,
features, topology, patch, batch) and stores the training settings in the
plans (`plans["configurations"][cfg]["flare_training"]`), where the trainers
read them. Everything else (normalisation, resampling, transpose, intensity
statistics) stays nnU-Net's.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import join, maybe_mkdir_p, save_json
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.utilities.json_export import recursive_fix_for_json_export

from flare_core.nnunet.settings import TRAINING_KEY, PlanSettings, TrainingSettings

log = logging.getLogger(__name__)

# Smallest bottleneck edge nnU-Net allows when it derives a topology.
MIN_FEATURE_MAP_EDGE = 4


class ConfiguredPlanner(ExperimentPlanner):
    """Planner for one configuration, adjusted by `PlanSettings` and carrying `TrainingSettings`."""

    def __init__(self, dataset_name_or_id: str | int, plan: PlanSettings, training: TrainingSettings,
                 plans_name: str, gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", profile_name: str = ""):
        spacing = [float(s) for s in plan.spacing] if plan.spacing is not None else None
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing=spacing, suppress_transpose=False)
        self.plan_settings = plan
        self.training_settings = training
        self.profile_name = profile_name
        self.UNet_class = _locate(plan.network_class)
        self.UNet_base_num_features = plan.base_features
        if plan.max_features is not None:
            self.UNet_max_features_2d = self.UNet_max_features_3d = plan.max_features
        self.UNet_blocks_per_stage_encoder = (plan.n_conv_per_stage,) * 14
        self.UNet_blocks_per_stage_decoder = (plan.n_conv_per_stage_decoder,) * 13

    def save_plans(self, plans: dict) -> None:
        """Keep the one configuration, apply the settings and write the plans file afresh.

        nnU-Net's own save merges configurations of an existing file back in;
        these plans belong to this planner alone, so stale ones must not return.
        """
        name = self.plan_settings.configuration
        if name not in plans["configurations"]:
            raise RuntimeError(f"nnU-Net planned no {name!r} configuration for {self.dataset_name} "
                               f"(got {sorted(plans['configurations'])}); is the data 3D?")
        configuration = self.configure(plans["configurations"][name])
        plans["configurations"] = {name: configuration}
        plans["flare_profile"] = self.profile_name
        recursive_fix_for_json_export(plans)
        maybe_mkdir_p(join(nnUNet_preprocessed, self.dataset_name))
        save_json(plans, join(nnUNet_preprocessed, self.dataset_name, self.plans_identifier + ".json"), sort_keys=False)
        self.plans = plans

    def configure(self, configuration: dict) -> dict:
        """One planned configuration with the settings applied."""
        settings = self.plan_settings
        arch = configuration["architecture"]
        kwargs = arch["arch_kwargs"]
        spacing = configuration["spacing"]
        patch, kernels, strides = _topology(settings, spacing, configuration["patch_size"], kwargs)
        n_stages = len(strides)
        max_features = self.UNet_max_features_2d if len(patch) == 2 else self.UNet_max_features_3d
        features = list(settings.features_per_stage) if settings.features_per_stage else \
            [min(max_features, settings.base_features * 2 ** i) for i in range(n_stages)]
        if len(features) != n_stages:
            raise ValueError(f"features_per_stage has {len(features)} entries for {n_stages} stages")
        kwargs.update({
            "n_stages": n_stages,
            "features_per_stage": features,
            "kernel_sizes": kernels,
            "strides": strides,
            "n_conv_per_stage": [settings.n_conv_per_stage] * n_stages,
            "n_conv_per_stage_decoder": [settings.n_conv_per_stage_decoder] * (n_stages - 1),
            **dict(settings.extra_arch_kwargs),
        })
        arch["network_class_name"] = settings.network_class
        configuration["patch_size"] = patch
        if settings.batch_size is not None:
            configuration["batch_size"] = settings.batch_size
        configuration[TRAINING_KEY] = self.training_settings.to_dict()
        log.info("%s %s: patch %s, %d stages, features %s, batch %d", self.dataset_name, settings.configuration,
                 patch, n_stages, features, configuration["batch_size"])
        return configuration


def _topology(settings: PlanSettings, spacing: Sequence[float], planned_patch: Sequence[int],
              kwargs: dict[str, Any]) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """Patch size, kernel sizes and strides after the settings' overrides."""
    n_stages = settings.n_stages or (len(settings.features_per_stage) if settings.features_per_stage else None)
    if settings.strides is not None and settings.kernel_sizes is not None:
        strides, kernels = _lists(settings.strides), _lists(settings.kernel_sizes)
        patch = list(settings.patch_size or planned_patch)
    else:
        patch = list(settings.patch_size or planned_patch)
        if settings.patch_size is not None:
            _, strides, kernels, _, _ = get_pool_and_conv_props(spacing, patch, MIN_FEATURE_MAP_EDGE, 999999)
        else:
            strides, kernels = kwargs["strides"], kwargs["kernel_sizes"]
        strides, kernels = _lists(strides), _lists(kernels)
        if n_stages is not None:
            if n_stages > len(strides):
                log.warning("patch %s allows only %d stages, not %d", patch, len(strides), n_stages)
            strides, kernels = strides[:n_stages], kernels[:n_stages]
    if len(strides) != len(kernels):
        raise ValueError(f"{len(strides)} strides but {len(kernels)} kernel sizes")
    return _divisible(patch, strides), kernels, strides


def _divisible(patch: Sequence[int], strides: Sequence[Sequence[int]]) -> list[int]:
    """Round the patch up so every stage downsamples without remainder."""
    factor = np.prod(np.array(strides), axis=0)
    return [int(np.ceil(p / f) * f) for p, f in zip(patch, factor)]


def _lists(nested: Sequence[Sequence[int]]) -> list[list[int]]:
    return [[int(v) for v in row] for row in nested]


def _locate(dotted: str) -> type:
    import pydoc

    cls = pydoc.locate(dotted)
    if cls is None:
        raise ImportError(f"network class {dotted!r} cannot be imported")
    return cls
