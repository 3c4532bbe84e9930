"""Resources: where the data is, where outputs go, and how big the models are."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from dagster import ConfigurableResource

from flare_core.layout import DataLayout, WorkLayout


class FlareDataRoot(ConfigurableResource):
    """A FLARE23-shaped data root; the platform never writes below it."""

    path: str
    train_images: str = "train/images"
    train_labels: str = "train/labels"
    organ_pseudo_labels: str = "train/organ_pseudo_labels"
    infer_images: str = "infer/images"
    infer_labels: str = "infer/labels"
    train_ground_truth: str = "train/ground_truth"

    @property
    def layout(self) -> DataLayout:
        return DataLayout(
            root=Path(self.path),
            train_images=self.train_images,
            train_labels=self.train_labels,
            organ_pseudo_labels=self.organ_pseudo_labels,
            infer_images=self.infer_images,
            infer_labels=self.infer_labels,
            train_ground_truth=self.train_ground_truth,
        )


class FlareWorkRoot(ConfigurableResource):
    """Folder that receives every output (one folder per per-case asset)."""

    path: str

    @property
    def layout(self) -> WorkLayout:
        return WorkLayout(root=Path(self.path))


class RunProfile(ConfigurableResource):
    """Model sizes and training lengths (`cpu`, `test` or the faithful `flare23`),
    the device (`auto` picks CUDA when available) and the inference mode."""

    name: str = "cpu"
    device: str = "auto"
    # Student inference: "fastest" (FLARE22 window skipping), "fast" or "stock".
    inference_mode: str = "fastest"
    # How fast/fastest run the network: "torch", "onnx" (an ONNX export beside
    # the checkpoint, run by onnxruntime on the CPU) or "auto" (onnx on CPU).
    inference_backend: str = "torch"
    # The network's precision on the CPU: "float32", or "bfloat16" autocast
    # (torch backend; about 2x faster on CPUs with AVX-512 BF16 / AMX).
    inference_precision: str = "float32"
    # Seeds Python, NumPy and torch before training: the same data gives the
    # same sampling and initial weights (augmentation workers add their own noise).
    seed: int = 0
    # Train the teacher / the student this many epochs instead of the profile's
    # own (unset: the profile's). A model trained for fewer continues from its
    # final checkpoint the next time its weights are materialized.
    teacher_epochs: Optional[int] = None
    student_epochs: Optional[int] = None

    @property
    def settings(self):
        """The flare_core run profile (teacher and student settings)."""
        from flare_core.nnunet.profiles import get_profile

        return get_profile(self.name, teacher_epochs=self.teacher_epochs, student_epochs=self.student_epochs)
