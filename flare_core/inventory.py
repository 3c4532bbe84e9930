"""Per-case inventory: what a case's files are and what its label annotates.

`inspect_case` reads a case's image, partial label and organ pseudo-label once
and returns everything later steps and the UI need: geometry, intensity
statistics, annotated classes, label group, content hashes, and any problems
found, sorted by the check they belong to. Only an unusable image raises; a
bad label is recorded so the case can be shown with its failing check.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flare_core import labels
from flare_core.cases import TRAIN, case_files, file_problem
from flare_core.integrity import verify_whole
from flare_core.io import CaseError, Geometry, file_sha256, read_ct, read_volume, validate_label_values
from flare_core.label_counts import present_classes
from flare_core.layout import DataLayout
from flare_core.preview import preview_png

log = logging.getLogger(__name__)

# Check names shared with the orchestration layer's asset checks.
CHECK_GEOMETRY = "geometry_matches"
CHECK_LABEL_IDS = "label_ids_valid"
CHECK_READABLE = "label_files_readable"
CHECKS = (CHECK_READABLE, CHECK_GEOMETRY, CHECK_LABEL_IDS)

# Percentiles on a strided subsample: exact enough for a summary, and cheap on
# a 512x512x300 volume.
_STATS_STRIDE = 4


@dataclass
class CaseInventory:
    case_id: str
    split: str
    image_path: str
    image_sha256: str
    geometry: dict[str, Any]
    intensity: dict[str, float]
    label_path: str | None = None
    label_sha256: str | None = None
    annotated: list[int] | None = None
    label_group: str = labels.GROUP_UNLABELLED
    organ_pseudo_label_path: str | None = None
    organ_pseudo_label_sha256: str | None = None
    problems: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CHECKS})
    # Rendered while the volumes are in memory, so nothing is read twice.
    preview_png: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    @property
    def annotates_tumor(self) -> bool:
        return bool(self.annotated) and labels.TUMOR in self.annotated

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("preview_png")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CaseInventory":
        return cls(**data)


def intensity_statistics(image: np.ndarray) -> dict[str, float]:
    sample = image[::_STATS_STRIDE, ::_STATS_STRIDE, ::_STATS_STRIDE].astype(np.float32, copy=False)
    p005, p995 = np.percentile(sample, [0.5, 99.5])
    return {
        "min": float(image.min()),
        "max": float(image.max()),
        "mean": float(sample.mean()),
        "std": float(sample.std()),
        "p00_5": float(p005),
        "p99_5": float(p995),
    }


def inspect_case(layout: DataLayout, split: str, case_id: str, with_preview: bool = False) -> CaseInventory:
    """Read and validate one case. Raises `CaseError` when the image is unusable.

    With `with_preview`, also renders a PNG of the image with the partial label
    (or, failing that, the organ pseudo-label) as overlay."""
    files = case_files(layout, split, case_id)
    if "image" not in files:
        raise CaseError(case_id, "image file not found")
    unreadable = file_problem(files["image"], layout.root)
    if unreadable:
        raise CaseError(case_id, f"image {unreadable}")
    image_sha256 = verify_whole(files["image"], case_id)  # SimpleITK alone reads a cut file, and NaN as 0
    image, geometry = read_ct(files["image"], case_id)
    inventory = CaseInventory(
        case_id=case_id,
        split=split,
        image_path=str(files["image"]),
        image_sha256=image_sha256,
        geometry=geometry.to_dict(),
        intensity=intensity_statistics(image),
    )
    overlay, overlay_name = None, "no label"
    if "label" in files:
        overlay = _inspect_label(inventory, files["label"], geometry, "label", layout.root)
        inventory.label_path = str(files["label"])
        inventory.label_sha256 = _sha256_if_readable(files["label"], layout.root)
        if overlay is not None:
            inventory.annotated = present_classes(overlay)
            inventory.label_group = labels.label_group(inventory.annotated)
            overlay_name = "partial label"
    if split == TRAIN and "organ_pseudo_label" in files:
        pseudo = _inspect_label(inventory, files["organ_pseudo_label"], geometry, "organ pseudo-label", layout.root)
        inventory.organ_pseudo_label_path = str(files["organ_pseudo_label"])
        inventory.organ_pseudo_label_sha256 = _sha256_if_readable(files["organ_pseudo_label"], layout.root)
        if overlay is None and pseudo is not None:
            overlay, overlay_name = pseudo, "organ pseudo-label"
    if with_preview:
        # A label on another grid cannot be overlaid; show the bare image then.
        usable = overlay is not None and overlay.shape == image.shape
        title = f"{case_id} · {split} · {overlay_name if usable else 'no usable label'}"
        inventory.preview_png = preview_png(image, overlay if usable else None, geometry, title)
    return inventory


def _sha256_if_readable(path: Path, root: Path) -> str | None:
    """The file's hash; None for a file that must not be read (its problem is a check result)."""
    return file_sha256(path) if file_problem(path, root) is None else None


def _inspect_label(inventory: CaseInventory, path: Path, image_geometry: Geometry, role: str,
                   root: Path) -> np.ndarray | None:
    """Validate a label file, recording problems; return it when usable."""
    case_id = inventory.case_id
    try:
        unreadable = file_problem(path, root)
        if unreadable:
            raise CaseError(case_id, unreadable)
        verify_whole(path, case_id)
        array, geometry = read_volume(path, case_id)
    except CaseError as error:
        inventory.problems[CHECK_READABLE].append(f"case {case_id!r}: {role}: {error.problem}")
        return None
    mismatch = image_geometry.differences(geometry)
    if mismatch:
        inventory.problems[CHECK_GEOMETRY].append(
            f"case {case_id!r}: {role} {path.name} geometry differs from its image: " + "; ".join(mismatch))
    try:
        array = validate_label_values(array, case_id, path.name)
    except CaseError as error:
        inventory.problems[CHECK_LABEL_IDS].append(f"case {case_id!r}: {role}: {error.problem}")
        return None
    return array
