"""One canonical orientation for every model, and the exact way back.

nnU-Net reads voxels in stored order and never reorients, so a scan stored
with direction diag(-1, -1, 1) (RAS-like) looks left/right and front/back
mirrored next to one stored with the identity direction (LPS-like). Every
model of this platform therefore sees one orientation: datasets are
reoriented on export, and every prediction reorients its input before the
network runs and its label map back to the input's own geometry afterwards.

The canonical orientation is "LPS" in ITK's (DICOM) convention: array index
x grows towards the patient's Left, y towards Posterior, z towards Superior.
It is the orientation whose direction matrix is the identity in ITK's
physical space (LPS), which every reader here (SimpleITK, nnU-Net's
SimpleITK reader) works in; scans stored that way (the usual DICOM-derived
layout, and two phantom cases in three) are already canonical and are used
as they are, without a copy.

Reorientation is SimpleITK's `DICOMOrient`: axis permutations and flips only,
so voxel values are moved, never interpolated, and the physical placement is
kept. For an oblique direction it picks the closest axis-aligned orientation;
the way back (`restore_*`) reorients to the original's code, checks that the
result lies where the original did, and then stamps the original geometry
exactly, so outputs carry the input's header to the last bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from flare_core.io import Geometry

CANONICAL_ORIENTATION = "LPS"
# The dataset.json key that records a model's orientation. nnU-Net copies the
# raw dataset.json into the preprocessed folder and from there into every
# results folder, so the model folder itself says how its inputs must look.
DATASET_JSON_KEY = "flare_orientation"

_AXIS_LETTERS = ({"L", "R"}, {"P", "A"}, {"S", "I"})


def check_orientation_code(code: str) -> str:
    """`code` if it is a three-letter ITK orientation code (e.g. "LPS", "RAS", "PSL")."""
    letters = str(code).upper()
    axes = [next((i for i, pair in enumerate(_AXIS_LETTERS) if letter in pair), None) for letter in letters]
    if len(letters) != 3 or None in axes or sorted(axes) != [0, 1, 2] or letters != code:
        raise ValueError(f"bad orientation code {code!r}: three upper-case letters, one of each of "
                         "L/R, P/A, S/I (e.g. 'LPS', 'RAS')")
    return code


def orientation_code(direction: Sequence[float]) -> str:
    """ITK's orientation code of a direction matrix (the closest axis-aligned one if oblique)."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines([float(d) for d in direction])


def is_oriented(geometry: Geometry, code: str = CANONICAL_ORIENTATION) -> bool:
    """True when a volume with `geometry` is already stored in orientation `code`."""
    return orientation_code(geometry.direction) == check_orientation_code(code)


def reorient_image(image: sitk.Image, code: str = CANONICAL_ORIENTATION) -> sitk.Image:
    """`image` in orientation `code` (permutations and flips only; placement kept).
    Returns `image` itself when it is already in that orientation."""
    if orientation_code(image.GetDirection()) == check_orientation_code(code):
        return image
    return sitk.DICOMOrient(image, code)


def restore_image(image: sitk.Image, original: Geometry) -> sitk.Image:
    """`image` (a reoriented copy of a volume placed at `original`) back on the
    original's voxel grid, with the original's geometry exactly."""
    restored = sitk.DICOMOrient(image, orientation_code(original.direction))
    problems = original.differences(Geometry.of(restored))
    if problems:
        raise ValueError("reoriented volume does not map back onto the original grid: " + "; ".join(problems))
    return original.apply_to(restored)


def reorient_array(array: np.ndarray, geometry: Geometry,
                   code: str = CANONICAL_ORIENTATION) -> tuple[np.ndarray, Geometry]:
    """(array, geometry) of a (z, y, x) volume in orientation `code`; the inputs
    themselves when they already are."""
    _check_shape(array, geometry)
    if is_oriented(geometry, code):
        return array, geometry
    oriented = sitk.DICOMOrient(_image(array, geometry), code)
    return sitk.GetArrayFromImage(oriented), Geometry.of(oriented)


def restore_array(array: np.ndarray, geometry: Geometry, original: Geometry) -> np.ndarray:
    """A (z, y, x) volume placed at `geometry` (e.g. a canonical prediction)
    back on the voxel grid of `original` (the input it was made from)."""
    _check_shape(array, geometry)
    if geometry == original:
        return array
    return sitk.GetArrayFromImage(restore_image(_image(array, geometry), original))


def model_orientation(dataset_json: Mapping) -> str | None:
    """The orientation a model was trained in, from its dataset.json; None for a
    model exported before orientations were recorded (it reads stored order)."""
    code = dataset_json.get(DATASET_JSON_KEY)
    return None if code is None else check_orientation_code(code)


@dataclass(frozen=True)
class ModelInput:
    """A volume as a model sees it (`array`, `geometry`) and the input it came
    from (`original`); `restore` puts a label map back on the input's grid."""

    array: np.ndarray
    geometry: Geometry
    original: Geometry

    @classmethod
    def of(cls, array: np.ndarray, geometry: Geometry, orientation: str | None) -> "ModelInput":
        """`orientation` None (a legacy model): the volume in stored order, unchanged."""
        if orientation is None:
            _check_shape(array, geometry)
            return cls(array, geometry, geometry)
        oriented, oriented_geometry = reorient_array(array, geometry, orientation)
        return cls(oriented, oriented_geometry, geometry)

    @property
    def reoriented(self) -> bool:
        return self.geometry != self.original

    def restore(self, label: np.ndarray) -> np.ndarray:
        """A label map predicted on `array`'s grid, on the original input's grid."""
        return restore_array(label, self.geometry, self.original)


def _check_shape(array: np.ndarray, geometry: Geometry) -> None:
    if tuple(array.shape) != geometry.shape_zyx:
        raise ValueError(f"array shape {array.shape} does not match geometry {geometry.shape_zyx}")


def _image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    return geometry.apply_to(sitk.GetImageFromArray(array))
