"""Where files live: the read-only data root and the platform's work root.

The data root has FLARE23's shape (folder names configurable); the work root
holds everything the platform writes, one folder per per-case artifact with
one file per case, plus nnU-Net's raw / preprocessed / results folders.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIX = "_0000.nii.gz"
LABEL_SUFFIX = ".nii.gz"

# One folder per per-case artifact under the work root.
TUMOR_PSEUDO_LABELS = "tumor_pseudo_labels"
PARTIAL_FUSED_LABELS = "partial_fused_labels"
ORGAN_FUSED_LABELS = "organ_fused_labels"
LABEL_QUALITY = "label_quality"
PREDICTIONS = "predictions"
EVALUATIONS = "evaluations"
PREVIEWS = "previews"


@dataclass(frozen=True)
class DataLayout:
    """A FLARE23-shaped data root. Nothing under it is ever modified."""

    root: Path
    train_images: str = "train/images"
    train_labels: str = "train/labels"
    organ_pseudo_labels: str = "train/organ_pseudo_labels"
    infer_images: str = "infer/images"
    infer_labels: str = "infer/labels"
    # Complete ground truth of training cases: exists only for synthetic
    # (phantom) data; the pipeline uses it for quality reports, never training.
    train_ground_truth: str = "train/ground_truth"

    def folder(self, name: str) -> Path:
        return Path(self.root) / getattr(self, name)

    def train_image(self, case_id: str) -> Path:
        return self.folder("train_images") / f"{case_id}{IMAGE_SUFFIX}"

    def train_label(self, case_id: str) -> Path:
        return self.folder("train_labels") / f"{case_id}{LABEL_SUFFIX}"

    def organ_pseudo_label(self, case_id: str) -> Path:
        return self.folder("organ_pseudo_labels") / f"{case_id}{LABEL_SUFFIX}"

    def infer_image(self, case_id: str) -> Path:
        return self.folder("infer_images") / f"{case_id}{IMAGE_SUFFIX}"

    def infer_label(self, case_id: str) -> Path:
        return self.folder("infer_labels") / f"{case_id}{LABEL_SUFFIX}"

    def ground_truth(self, case_id: str) -> Path:
        return self.folder("train_ground_truth") / f"{case_id}{LABEL_SUFFIX}"


@dataclass(frozen=True)
class WorkLayout:
    """The work root: every output of the platform lives below it."""

    root: Path

    def per_case(self, artifact: str, case_id: str, suffix: str = LABEL_SUFFIX) -> Path:
        """One file per case under the artifact's own folder."""
        return Path(self.root) / artifact / f"{case_id}{suffix}"

    def preview(self, kind: str, case_id: str) -> Path:
        """A case's preview of one kind ("train_case", "organ_fused", "prediction", ...):
        a folder per kind, the case id as the file name, so no id collides with another."""
        return Path(self.root) / PREVIEWS / kind / f"{case_id}.png"

    def artifact_dir(self, artifact: str) -> Path:
        return Path(self.root) / artifact

    @property
    def nnunet_raw(self) -> Path:
        return Path(self.root) / "nnUNet_raw"

    @property
    def nnunet_preprocessed(self) -> Path:
        return Path(self.root) / "nnUNet_preprocessed"

    @property
    def nnunet_results(self) -> Path:
        return Path(self.root) / "nnUNet_results"

    @property
    def manifests(self) -> Path:
        return Path(self.root) / "manifests"
