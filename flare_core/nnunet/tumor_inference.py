"""Tumor pseudo-labels: teacher inference, model loaded once, no test-time augmentation.

`TumorPredictor.from_results(model_folder, device)` reads a standard nnU-Net v2
results folder (plans.json, dataset.json, fold_all/checkpoint_final.pth) with
`flare_core.nnunet.model_loading.load_model`, the loader the student uses too:
it builds the network from the plans itself and hands it to nnU-Net's
predictor with `manual_initialization`. That avoids nnU-Net's trainer lookup
by name, which imports every trainer shipped with nnunetv2, some of which need
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

import logging
import time
from pathlib import Path

import numpy as np
import torch

from flare_core.io import Geometry, read_ct, write_volume
from flare_core.nnunet.environment import select_device
from flare_core.nnunet.model_loading import CHECKPOINT, LoadedModel, load_model
from flare_core.orientation import ModelInput

log = logging.getLogger(__name__)


class TumorPredictor:
    """A trained teacher, ready to predict binary tumor masks case after case."""

    def __init__(self, model: LoadedModel, device: torch.device | str = "auto", tile_step_size: float = 0.5):
        self.model = model
        self.device = select_device(device)
        # No test-time mirroring: it multiplies the windows the network evaluates.
        self.predictor = model.nnunet_predictor(self.device, tile_step_size=tile_step_size)

    @classmethod
    def from_results(cls, model_folder: Path, device: torch.device | str = "auto", fold: str = "all",
                     checkpoint: str = CHECKPOINT, tile_step_size: float = 0.5) -> "TumorPredictor":
        """Load `<model_folder>/fold_<fold>/<checkpoint>` with the folder's plans and dataset.json."""
        loaded = cls(load_model(Path(model_folder), fold, checkpoint), device, tile_step_size)
        log.info("teacher ready on %s", loaded.device)
        return loaded

    @property
    def model_folder(self) -> Path | None:
        return self.model.results_folder

    @property
    def checkpoint_sha256(self) -> str | None:
        return self.model.checkpoint_sha256

    @property
    def orientation(self) -> str | None:
        """The orientation the model was trained in; None reads images in stored order."""
        return self.model.orientation

    @property
    def load_seconds(self) -> float:
        return self.model.load_seconds

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
