"""Loading a trained nnU-Net v2 model (teacher or student) once, to predict many cases.

A standard nnU-Net v2 results folder (`.../DatasetXXX_Name/<Trainer>__<Plans>__<cfg>/`)
holds `plans.json`, `dataset.json` and `fold_<f>/checkpoint_final.pth`. The
network is rebuilt straight from the plans' architecture entry (a dotted class
path resolved by nnU-Net's `get_network_from_plans`); the trainer is never
looked up by name, because that walks nnunetv2's trainer folders and imports
optional trainers that need torchvision, which fails on the CPU build of torch.
The orientation the model was trained in is read from the folder's
dataset.json (`LoadedModel.orientation`, see `flare_core.orientation`).

`load_model` serves both models; `load_student` adds the `InferencePlan` that
the student's own (non-nnU-Net) prediction modes need, which only a 3D
configuration has.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from flare_core.io import file_sha256
from flare_core.orientation import model_orientation

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint_final.pth"
SUPPORTED_NORMALIZATION = ("CTNormalization", "ZScoreNormalization")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint, on CPU, unpickled with `weights_only=True`.

    Beyond tensors and plain containers, nnU-Net's checkpoints hold numpy
    scalars (the EMA pseudo-Dice, logged values) and their dtypes; exactly
    those are allowed, so a file that asks for anything else (a hostile
    payload) fails to load instead of running."""
    with torch.serialization.safe_globals(_CHECKPOINT_NUMPY_TYPES):
        return torch.load(path, map_location="cpu", weights_only=True)


def _numpy_scalar_reconstructor() -> Any:
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    return core.multiarray.scalar


_CHECKPOINT_NUMPY_TYPES = [_numpy_scalar_reconstructor(), np.dtype, np.dtypes.Float32DType,
                           np.dtypes.Float64DType, np.dtypes.Int64DType]


@dataclass
class LoadedModel:
    """A network with its weights loaded (on CPU), plus nnU-Net's objects to run it."""

    network: nn.Module
    # nnU-Net's own objects: only its predictor (`nnunet_predictor`) needs them.
    plans_manager: PlansManager | None = None
    configuration_manager: ConfigurationManager | None = None
    dataset_json: dict = field(default_factory=dict)
    state_dict: dict | None = None
    trainer_name: str = "unknown"
    mirror_axes: tuple[int, ...] | None = None
    results_folder: Path | None = None
    checkpoint_sha256: str | None = None
    load_seconds: float = 0.0

    @property
    def orientation(self) -> str | None:
        """The orientation inputs must have (dataset.json's `flare_orientation`);
        None for a model that reads voxels in stored order."""
        return model_orientation(self.dataset_json)

    def nnunet_predictor(self, device: torch.device, *, tile_step_size: float = 0.5, mirroring: bool = False,
                         mirror_axes: tuple[int, ...] | None = None,
                         predictor_class: type[nnUNetPredictor] = nnUNetPredictor) -> nnUNetPredictor:
        """nnU-Net's own predictor around this network: Gaussian sliding
        window, run in-process (`predict_single_npy_array`, no worker pools)."""
        if self.plans_manager is None:
            raise ValueError("nnU-Net's predictor needs the model's plans: load the model from its results folder")
        predictor = predictor_class(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=mirroring,
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    verbose=False, allow_tqdm=False)
        predictor.manual_initialization(self.network, self.plans_manager, self.configuration_manager,
                                        [self.state_dict], self.dataset_json, self.trainer_name, mirror_axes)
        return predictor


class UntrustedCheckpoint(RuntimeError):
    """A checkpoint this platform did not write, or one changed since it did."""


def verify_checkpoint(results_folder: Path, expected_sha256: str, trusted_root: Path, fold: str | int = "all",
                      checkpoint_name: str = CHECKPOINT) -> Path:
    """The checkpoint's path, once it is proven to be the one training recorded.

    Unpickling a .pth file runs code, and the folder comes from a manifest on
    disk: the checkpoint must lie under `trusted_root` (the work root) and
    hash to `expected_sha256`, else `UntrustedCheckpoint` is raised before
    anything is unpickled."""
    checkpoint = (Path(results_folder) / f"fold_{fold}" / checkpoint_name).resolve()
    if not checkpoint.is_relative_to(Path(trusted_root).resolve()):
        raise UntrustedCheckpoint(f"{checkpoint} lies outside the work root {trusted_root}; not loaded")
    if not checkpoint.is_file():
        raise UntrustedCheckpoint(f"{checkpoint} is missing")
    actual = file_sha256(checkpoint)
    if actual != expected_sha256:
        raise UntrustedCheckpoint(f"{checkpoint} has sha256 {actual[:12]}..., training recorded "
                                  f"{expected_sha256[:12]}...: changed since it was trained; not loaded")
    return checkpoint


def load_model(results_folder: Path, fold: str | int = "all", checkpoint_name: str = CHECKPOINT) -> LoadedModel:
    """Read plans, dataset.json and one fold's checkpoint; build the network on CPU.

    Only load checkpoints this platform wrote (see `read_checkpoint`).
    """
    started = time.perf_counter()
    results_folder = Path(results_folder)
    checkpoint_path = results_folder / f"fold_{fold}" / checkpoint_name
    for required in (results_folder / "plans.json", results_folder / "dataset.json", checkpoint_path):
        if not required.is_file():
            raise FileNotFoundError(f"nnU-Net results folder is missing {required}")
    plans_manager = PlansManager(load_json(str(results_folder / "plans.json")))
    dataset_json = load_json(str(results_folder / "dataset.json"))
    orientation = model_orientation(dataset_json)  # a bad entry fails here, not at the first case
    checkpoint = read_checkpoint(checkpoint_path)
    configuration = plans_manager.get_configuration(_configuration_name(results_folder, checkpoint))
    network = build_network(plans_manager, configuration, dataset_json)
    network.load_state_dict(checkpoint["network_weights"])
    network.eval()
    mirror_axes = checkpoint.get("inference_allowed_mirroring_axes")
    model = LoadedModel(
        network=network,
        plans_manager=plans_manager,
        configuration_manager=configuration,
        dataset_json=dataset_json,
        state_dict=checkpoint["network_weights"],
        trainer_name=str(checkpoint.get("trainer_name", "unknown")),
        mirror_axes=tuple(mirror_axes) if mirror_axes is not None else None,
        results_folder=results_folder,
        checkpoint_sha256=file_sha256(checkpoint_path),
    )
    model.load_seconds = time.perf_counter() - started
    log.info("loaded %s (%s, %s, fold %s, orientation %s) in %.1f s", results_folder.name, model.trainer_name,
             checkpoint_name, fold, orientation or "stored order", model.load_seconds)
    return model


def build_network(plans_manager: PlansManager, configuration: ConfigurationManager,
                  dataset_json: dict) -> nn.Module:
    """The plans' architecture with deep supervision off (inference needs one output)."""
    num_inputs = determine_num_input_channels(plans_manager, configuration, dataset_json)
    return get_network_from_plans(
        configuration.network_arch_class_name,
        configuration.network_arch_init_kwargs,
        configuration.network_arch_init_kwargs_req_import,
        num_inputs,
        _segmentation_heads(plans_manager, dataset_json),
        allow_init=False,  # weights come from the checkpoint
        deep_supervision=False,
    )


def _segmentation_heads(plans_manager: PlansManager, dataset_json: dict) -> int:
    """Network outputs: one per class, background included (no region-based training here)."""
    return plans_manager.get_label_manager(dataset_json).num_segmentation_heads


def _configuration_name(results_folder: Path, checkpoint: Mapping[str, Any]) -> str:
    init_args = checkpoint.get("init_args") or {}
    if "configuration" in init_args:
        return str(init_args["configuration"])
    # nnU-Net names the folder <Trainer>__<Plans>__<configuration>
    parts = results_folder.name.split("__")
    if len(parts) != 3:
        raise ValueError(f"cannot tell the configuration of {results_folder}")
    return parts[2]


# --------------------------------------------------------------------------
# The student: what its own prediction modes need on top


@dataclass(frozen=True)
class InferencePlan:
    """What the efficient predictor needs from the plans, in one place.

    `patch_size` and `target_spacing` are in the network's axis order, i.e. the
    SimpleITK (z, y, x) array order permuted by `transpose_forward`.
    """

    patch_size: tuple[int, int, int]
    target_spacing: tuple[float, float, float]
    transpose_forward: tuple[int, int, int]
    normalization: str
    intensity_properties: Mapping[str, float]
    num_classes: int

    @property
    def transpose_backward(self) -> tuple[int, int, int]:
        inverse = [0, 0, 0]
        for position, axis in enumerate(self.transpose_forward):
            inverse[axis] = position
        return tuple(inverse)

    @classmethod
    def from_managers(cls, plans_manager: PlansManager, configuration: ConfigurationManager,
                      num_classes: int) -> "InferencePlan":
        if len(configuration.patch_size) != 3:
            raise ValueError(f"the efficient predictor needs a 3D configuration, got patch {configuration.patch_size}")
        schemes = list(configuration.normalization_schemes)
        if len(schemes) != 1 or schemes[0] not in SUPPORTED_NORMALIZATION:
            raise ValueError(f"unsupported normalisation {schemes}: "
                             f"one CT channel with one of {SUPPORTED_NORMALIZATION}")
        properties = plans_manager.foreground_intensity_properties_per_channel.get("0", {})
        return cls(
            patch_size=tuple(int(p) for p in configuration.patch_size),
            target_spacing=tuple(float(s) for s in configuration.spacing),
            transpose_forward=tuple(int(t) for t in plans_manager.transpose_forward),
            normalization=schemes[0],
            intensity_properties={k: float(v) for k, v in properties.items()},
            num_classes=int(num_classes),
        )


@dataclass(kw_only=True)
class LoadedStudent(LoadedModel):
    """A loaded student and its `InferencePlan`."""

    plan: InferencePlan


def load_student(results_folder: Path, fold: str | int = "all", checkpoint_name: str = CHECKPOINT) -> LoadedStudent:
    """`load_model`, plus the plan of the student's own prediction modes
    (fails for a configuration they cannot run: not 3D, or not CT-normalised)."""
    model = load_model(results_folder, fold, checkpoint_name)
    num_classes = _segmentation_heads(model.plans_manager, model.dataset_json)
    plan = InferencePlan.from_managers(model.plans_manager, model.configuration_manager, num_classes)
    loaded = {f.name: getattr(model, f.name) for f in dataclasses.fields(LoadedModel)}
    return LoadedStudent(**loaded, plan=plan)
