"""The canonical orientation: exact reorientation and the exact way back."""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from flare_core.io import Geometry
from flare_core.orientation import (
    CANONICAL_ORIENTATION, ModelInput, check_orientation_code, is_oriented, model_orientation, orientation_code,
    reorient_array, restore_array, restore_image,
)
from tests.core.nnunet_fixtures import IDENTITY, RAS_LIKE, stored_ras_like

SHAPE = (5, 6, 7)  # z, y, x
LPS = Geometry(size=(7, 6, 5), spacing=(0.8, 0.9, 3.0), origin=(-120.5, 80.25, -300.0), direction=IDENTITY)


def volume() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 15, SHAPE).astype(np.uint8)


def stored_as(code: str) -> tuple[np.ndarray, Geometry]:
    image = sitk.DICOMOrient(LPS.apply_to(sitk.GetImageFromArray(volume())), code)
    return sitk.GetArrayFromImage(image), Geometry.of(image)


def test_canonical_is_lps_the_identity_direction():
    assert CANONICAL_ORIENTATION == "LPS" and orientation_code(IDENTITY) == "LPS"
    assert orientation_code(RAS_LIKE) == "RAS"


def test_ras_like_storage_is_mirrored_back_voxel_for_voxel():
    array, geometry = stored_ras_like(volume(), LPS)
    canonical, canonical_geometry = reorient_array(array, geometry)
    np.testing.assert_array_equal(canonical, volume())
    assert canonical_geometry.differences(LPS) == [] and canonical_geometry.direction == IDENTITY
    restored = restore_array(canonical, canonical_geometry, geometry)
    np.testing.assert_array_equal(restored, array)


@pytest.mark.parametrize("code", ["RAS", "LPI", "PSL", "IRA", "ASR"])
def test_any_axis_aligned_storage_comes_to_the_same_canonical_array(code):
    array, geometry = stored_as(code)
    assert orientation_code(geometry.direction) == code
    canonical, canonical_geometry = reorient_array(array, geometry)
    np.testing.assert_array_equal(canonical, volume())
    assert canonical_geometry.differences(LPS) == []
    np.testing.assert_array_equal(restore_array(canonical, canonical_geometry, geometry), array)


def test_oblique_directions_come_back_with_the_exact_original_geometry():
    angle = math.radians(7)
    c, s = math.cos(angle), math.sin(angle)
    oblique = Geometry(size=(6, 5, 7), spacing=(3.0, 0.8, 0.9), origin=(1.123456789, -2.2, 3.3),
                       direction=(0.0, c, -s, 0.0, s, c, -1.0, 0.0, 0.0))
    array = np.random.default_rng(1).integers(0, 15, oblique.shape_zyx).astype(np.uint8)
    view = ModelInput.of(array, oblique, CANONICAL_ORIENTATION)
    assert view.reoriented and is_oriented(view.geometry)
    assert view.array.shape != array.shape  # axes permuted towards L, P, S
    restored = restore_image(view.geometry.apply_to(sitk.GetImageFromArray(view.array)), oblique)
    assert Geometry.of(restored) == oblique  # exactly, not just within tolerance
    np.testing.assert_array_equal(sitk.GetArrayFromImage(restored), array)
    np.testing.assert_array_equal(view.restore(view.array), array)


def test_already_canonical_and_legacy_inputs_are_not_copied():
    array = volume()
    assert reorient_array(array, LPS)[0] is array
    legacy = ModelInput.of(array, LPS, None)
    assert legacy.array is array and not legacy.reoriented and legacy.restore(array) is array
    flipped, geometry = stored_ras_like(array, LPS)
    assert ModelInput.of(flipped, geometry, None).array is flipped  # a legacy model reads stored order


def test_restore_refuses_a_grid_that_does_not_match():
    array, geometry = stored_ras_like(volume(), LPS)
    canonical, canonical_geometry = reorient_array(array, geometry)
    elsewhere = Geometry(geometry.size, geometry.spacing, tuple(o + 5.0 for o in geometry.origin), geometry.direction)
    with pytest.raises(ValueError, match="does not map back"):
        restore_array(canonical, canonical_geometry, elsewhere)
    with pytest.raises(ValueError, match="does not match geometry"):
        reorient_array(canonical[1:], canonical_geometry)


def test_model_orientation_comes_from_dataset_json():
    assert model_orientation({}) is None
    assert model_orientation({"flare_orientation": "RAS"}) == "RAS"
    for bad in ("lps", "LLS", "LP", "RAX", ""):
        with pytest.raises(ValueError, match="orientation code"):
            check_orientation_code(bad)
    with pytest.raises(ValueError):
        model_orientation({"flare_orientation": "XYZ"})
