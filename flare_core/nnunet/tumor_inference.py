"""Tumor pseudo-labels: teacher inference, model loaded once, no test-time augmentation.

`TumorPredictor.from_results(model_folder, device)` reads a standard nnU-Net v2
results folder (plans.json, dataset.json, fold_all/checkpoint_final.pth),
builds the network from the plans itself and hands it to nnU-Net's predictor
with `manual_initialization`. That avoids nnU-Net's trainer lookup by name,
which imports every trainer shipped with nnunetv2, some of which need
torchvision, and torchvision does not import with the CPU build of torch.
Prediction runs in-process (`predict_single_npy_array`: no worker pools),
with Gaussian-weighted sliding windows and no mirroring. Each image is
reoriented to the orientation the model was trained in (`flare_orientation`
in the model folder's dataset.json; a model without it reads stored order)
and the mask put back on the image's own grid and geometry.

The same folder works with stock nnU-Net on a machine where torchvision
imports (any CUDA install of torch), given the trainer class can be found:
nnunetv2 2.8 searches the folders listed in `nnUNet_extTrainer` after its own,
and `flare_core/nnunet/ext_trainers` holds only small modules re-exporting the
two trainers:

    export nnUNet_results=<work>/nnUNet_results
    export nnUNet_extTrainer=<repo>/flare_core/nnunet/ext_trainers
    nnUNetv2_predict -i IMAGES -o OUT -d 501 -c 2d -f all \
        -tr FlareTeacherTrainer -p FlareTeacherPlans --disable_tta

(`flare_core` must be importable, e.g. `pip install -e .`, because the plans
name the network class `flare_core.nnunet.attention_unet.AttentionUNet`.)
Stock nnU-Net does not reorient: give it images already in the model's
orientation (`flare_core.orientation.reorient_image`).
Or from Python: `nnUNetPredictor(...).initialize_from_trained_model_folder(
<model folder>, use_folds=("all",))`.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from flare_core.io import Geometry, file_sha256, read_ct, write_volume
from flare_core.nnunet.environment import select_device
from flare_core.orientation import ModelInput, model_orientation

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint_final.pth"


class TumorPredictor:
    """A trained teacher, ready to predict binary tumor masks case after case."""

    def __init__(self, predictor: nnUNetPredictor, model_folder: Path, checkpoint_sha256: str | None = None,
                 orientation: str | None = None):
        """`orientation`: the one the model was trained in; None reads images in stored order."""
        self.predictor = predictor
        self.model_folder = Path(model_folder)
        self.checkpoint_sha256 = checkpoint_sha256
        self.orientation = orientation
        self.load_seconds = 0.0

    @classmethod
    def from_results(cls, model_folder: Path, device: torch.device | str = "auto", fold: str = "all",
                     checkpoint: str = CHECKPOINT, tile_step_size: float = 0.5) -> "TumorPredictor":
        """Load `<model_folder>/fold_<fold>/<checkpoint>` with the folder's plans and dataset.json."""
        start = time.perf_counter()
        model_folder = Path(model_folder)
        device = select_device(device) if isinstance(device, str) else device
        plans = PlansManager(json.loads((model_folder / "plans.json").read_text()))
        dataset_json = json.loads((model_folder / "dataset.json").read_text())
        # Our own checkpoint (numpy scalars inside): weights_only=False is required.
        checkpoint_path = model_folder / f"fold_{fold}" / checkpoint
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        configuration = plans.get_configuration(state["init_args"]["configuration"])
        network = get_network_from_plans(
            configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
            configuration.network_arch_init_kwargs_req_import,
            determine_num_input_channels(plans, configuration, dataset_json),
            plans.get_label_manager(dataset_json).num_segmentation_heads,
            allow_init=False, deep_supervision=False)
        network.load_state_dict(state["network_weights"])
        predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=False,
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    verbose=False, allow_tqdm=False)
        predictor.manual_initialization(network, plans, configuration, [state["network_weights"]], dataset_json,
                                        state["trainer_name"], None)
        orientation = model_orientation(dataset_json)
        loaded = cls(predictor, model_folder, file_sha256(checkpoint_path), orientation)
        loaded.load_seconds = time.perf_counter() - start
        log.info("loaded teacher %s (%s, orientation %s) on %s in %.1f s", model_folder.name, state["trainer_name"],
                 orientation or "stored order", device, loaded.load_seconds)
        return loaded

    def predict_array(self, image: np.ndarray, geometry: Geometry) -> np.ndarray:
        """Binary uint8 mask (z, y, x) of an image array (z, y, x) placed at
        `geometry`, on that array's own grid."""
        view = ModelInput.of(image, geometry, self.orientation)
        spacing = [float(s) for s in view.geometry.spacing_zyx]
        segmentation = self.predictor.predict_single_npy_array(view.array[None].astype(np.float32, copy=False),
                                                               {"spacing": spacing})
        mask = (np.asarray(segmentation) == 1).astype(np.uint8)
        if mask.shape != view.geometry.shape_zyx:
            raise RuntimeError(f"prediction shape {mask.shape} != model input {view.geometry.shape_zyx}")
        return view.restore(mask)

    def predict_case(self, image_path: Path, case_id: str) -> tuple[np.ndarray, Geometry, float]:
        """(mask, the image's geometry, seconds) for one image file."""
        start = time.perf_counter()
        image, geometry = read_ct(Path(image_path), case_id)
        mask = self.predict_array(image, geometry)
        return mask, geometry, time.perf_counter() - start

    def predict_to_file(self, image_path: Path, case_id: str, output_path: Path) -> tuple[Path, int, float]:
        """Write the mask on the image's exact grid (atomically); returns (path, tumor voxels, seconds)."""
        mask, geometry, seconds = self.predict_case(image_path, case_id)
        write_volume(mask, geometry, Path(output_path))
        return Path(output_path), int(mask.sum()), seconds

    def predict_cases(self, cases: Iterable[tuple[str, Path]]) -> Iterator[tuple[str, np.ndarray, Geometry, float]]:
        """Predict (case_id, image_path) pairs one after the other with the loaded model."""
        for case_id, image_path in cases:
            mask, geometry, seconds = self.predict_case(image_path, case_id)
            yield case_id, mask, geometry, seconds
