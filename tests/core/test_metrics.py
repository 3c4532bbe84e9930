"""FLARE23 DSC / NSD: hand-computed cases, official rules, and a brute-force
cross-check of the surface distances."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from flare_core import labels
from flare_core.metrics import ClassScore, border_voxels, dsc, evaluate_case, nsd, summarize, surface_distances


def cube(shape=(10, 10, 10), start=(2, 2, 2), size=4) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


# ---------------------------------------------------------------- hand-computed


def test_identical_cubes_score_one():
    assert dsc(cube(), cube()) == 1.0
    assert nsd(cube(), cube(), (1.0, 1.0, 1.0), 1.0) == 1.0


def test_disjoint_cubes_score_zero():
    far = cube(shape=(20, 20, 20), start=(12, 12, 12))
    near = cube(shape=(20, 20, 20))
    assert dsc(near, far) == 0.0
    assert nsd(near, far, (1.0, 1.0, 1.0), 2.0) == 0.0


@pytest.mark.parametrize("tolerance, expected", [(0.5, 72 / 112), (1.5, 80 / 112), (2.0, 1.0)])
def test_cube_shifted_one_slice(tolerance, expected):
    # A 4^3 cube has 56 border voxels. Shifted one slice (2 mm) in z:
    # 36 border voxels per cube coincide with the other's border, the 4 inner
    # voxels of the far face lie 1 mm (in-plane) from it, the 16 of the
    # near face 2 mm (one slice).
    moved = cube(start=(3, 2, 2))
    assert dsc(cube(), moved) == pytest.approx(0.75)
    assert nsd(cube(), moved, (2.0, 1.0, 1.0), tolerance) == pytest.approx(expected)


def test_anisotropic_spacing_orders_the_axes_zyx():
    # The same one-voxel shift along x is 1 mm at spacing (2, 1, 1), so the
    # 16 far-face voxels are now within a 1.5 mm tolerance.
    moved_x = cube(start=(2, 2, 3))
    assert nsd(cube(), moved_x, (2.0, 1.0, 1.0), 1.5) == 1.0
    assert nsd(cube(), moved_x, (1.0, 1.0, 2.0), 1.5) == pytest.approx(80 / 112)


def test_empty_rules():
    empty = np.zeros((6, 6, 6), bool)
    assert dsc(empty, empty) == 1.0 and nsd(empty, empty, (1, 1, 1), 1.0) == 1.0
    assert dsc(cube((6, 6, 6), (1, 1, 1), 2), empty) == 0.0
    assert nsd(cube((6, 6, 6), (1, 1, 1), 2), empty, (1, 1, 1), 1.0) == 0.0
    assert nsd(empty, cube((6, 6, 6), (1, 1, 1), 2), (1, 1, 1), 1.0) == 0.0


def test_object_touching_the_volume_border_has_a_surface_there():
    full = np.ones((3, 3, 3), bool)
    assert border_voxels(full).sum() == 26  # all but the centre


# ---------------------------------------------------------------- cases


def test_evaluate_case_empty_rules_per_class():
    gt = np.zeros((8, 8, 8), np.uint8)
    pred = gt.copy()
    gt[1:4, 1:4, 1:4] = labels.LIVER
    pred[4:7, 4:7, 4:7] = labels.SPLEEN
    scores = {s.class_id: s for s in evaluate_case(pred, gt, (1.0, 1.0, 1.0))}
    assert (scores[labels.LIVER].dsc, scores[labels.LIVER].nsd) == (0.0, 0.0)  # missed
    assert (scores[labels.SPLEEN].dsc, scores[labels.SPLEEN].nsd) == (0.0, 0.0)  # not in gt
    assert (scores[labels.TUMOR].dsc, scores[labels.TUMOR].nsd) == (1.0, 1.0)  # absent in both
    assert [s.class_id for s in scores.values()] == list(labels.FOREGROUND)
    assert scores[labels.GALLBLADDER].class_name == "gallbladder"


@pytest.mark.parametrize("organ, tubular", [(labels.AORTA, True), (labels.ESOPHAGUS, True), (labels.LIVER, False)])
def test_tubular_classes_scored_in_gt_z_range_only(organ, tubular):
    gt = np.zeros((20, 10, 10), np.uint8)
    gt[8:16, 3:6, 3:6] = organ
    pred = gt.copy()
    pred[0:4, 3:6, 3:6] = organ  # a piece above the ground truth's slices
    (score,) = evaluate_case(pred, gt, (2.5, 0.8, 0.8), classes=[organ])
    if tubular:
        assert (score.dsc, score.nsd) == (1.0, 1.0)
    else:
        assert score.dsc == pytest.approx(2 * 72 / (72 + 108))
        assert score.nsd < 1.0


def test_tubular_prediction_without_gt_class_counts_as_false_positive():
    pred = np.zeros((6, 6, 6), np.uint8)
    pred[2, 2, 2] = labels.IVC
    (score,) = evaluate_case(pred, np.zeros_like(pred), (1, 1, 1), classes=[labels.IVC])
    assert (score.dsc, score.nsd) == (0.0, 0.0)


def test_nsd_zeroed_where_dsc_below_threshold():
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[1:11, 1:11, 1:11] = labels.LIVER
    pred = np.zeros_like(gt)
    pred[1, 1:11, 1:11] = labels.LIVER  # one face slice of the cube: DSC 200/1100
    assert nsd(pred == 1, gt == 1, (1, 1, 1), 5.0) > 0.2
    (score,) = evaluate_case(pred, gt, (1, 1, 1), classes=[labels.LIVER])
    assert score.dsc == pytest.approx(200 / 1100)
    assert score.nsd == 0.0


def test_evaluate_case_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        evaluate_case(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8), (1, 1, 1))


def test_summarize_means_and_aggregate_rows():
    rows = [ClassScore(c, labels.CLASS_NAMES[c], 0.8, 0.9) for c in labels.ORGANS]
    rows += [ClassScore(c, labels.CLASS_NAMES[c], 0.6, 0.7) for c in labels.ORGANS]
    rows += [ClassScore(labels.TUMOR, "tumor", 0.2, 0.1), {"case_id": "b", "class_id": 14, "dsc": 0.4, "nsd": 0.3}]
    table = summarize(rows)
    assert list(table.index[-3:]) == ["organs mean", "tumor", "all"]
    assert table.loc["liver", "dsc"] == pytest.approx(0.7) and table.loc["liver", "count"] == 2
    assert table.loc["organs mean", "nsd"] == pytest.approx(0.8)
    assert table.loc["tumor", "dsc"] == pytest.approx(0.3)
    assert table.loc["all", "dsc"] == pytest.approx((13 * 0.7 + 0.3) / 14)
    assert table.loc["tumor", "class_id"] == 14 and table["class_id"].isna().sum() == 2


# ---------------------------------------------------------------- cross-check


def brute_force_border(mask: np.ndarray) -> np.ndarray:
    """Border by looking at all 26 neighbours directly (no morphology)."""
    padded = np.pad(mask, 1)
    outside_neighbour = np.zeros_like(mask)
    for offset in itertools.product((-1, 0, 1), repeat=3):
        if offset != (0, 0, 0):
            window = tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, mask.shape))
            outside_neighbour |= ~padded[window]
    return mask & outside_neighbour


def brute_force_distances(source: np.ndarray, target: np.ndarray, spacing) -> np.ndarray:
    """Min pairwise distance in mm from each source border voxel to the target border."""
    a = np.argwhere(brute_force_border(source)) * np.asarray(spacing)
    b = np.argwhere(brute_force_border(target)) * np.asarray(spacing)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min(axis=1)


def random_blob(rng, shape, threshold=0.1) -> np.ndarray:
    return ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) > threshold


@pytest.mark.parametrize("seed, spacing", [(0, (1.0, 1.0, 1.0)), (1, (3.0, 0.8, 0.8)), (2, (5.0, 0.7, 0.7)),
                                           (3, (1.5, 1.0, 0.6))])
def test_surface_distances_match_brute_force(seed, spacing):
    rng = np.random.default_rng(seed)
    shape = (10, 14, 16)
    pred, gt = random_blob(rng, shape), random_blob(rng, shape)
    # Put one object against the volume border to check the outside rule.
    gt[0, :4, :4] = True
    to_gt, to_pred = surface_distances(pred, gt, spacing)
    # Distances are reported in border-voxel (C) order, like argwhere.
    np.testing.assert_allclose(to_gt, brute_force_distances(pred, gt, spacing), atol=1e-9)
    np.testing.assert_allclose(to_pred, brute_force_distances(gt, pred, spacing), atol=1e-9)
    for tol in (1.0, 2.0, 3.0):
        expected = (np.sum(to_gt <= tol + 1e-6) + np.sum(to_pred <= tol + 1e-6)) / (to_gt.size + to_pred.size)
        assert nsd(pred, gt, spacing, tol) == pytest.approx(expected)


def test_cropping_does_not_change_scores():
    rng = np.random.default_rng(5)
    small_pred, small_gt = random_blob(rng, (8, 10, 10)), random_blob(rng, (8, 10, 10))
    big_pred, big_gt = np.zeros((30, 40, 40), bool), np.zeros((30, 40, 40), bool)
    big_pred[11:19, 20:30, 5:15], big_gt[11:19, 20:30, 5:15] = small_pred, small_gt
    spacing = (2.0, 0.7, 0.9)
    # Padding a small array by one background voxel gives the same scene.
    padded = (np.pad(small_pred, 1), np.pad(small_gt, 1))
    assert nsd(big_pred, big_gt, spacing, 2.0) == pytest.approx(nsd(*padded, spacing, 2.0))


def test_close_to_official_surfel_nsd_of_monai():
    """MONAI's use_subvoxels=True re-implements the official surfel-area NSD;
    our voxel definition should stay within a few points on organ-like shapes.
    (monai is a dev dependency for exactly this cross-check.)"""
    import monai.metrics as monai_metrics
    import torch
    spacing = (2.5, 0.8, 0.8)
    z, y, x = np.indices((32, 100, 100)) * np.asarray(spacing)[:, None, None, None]
    gt = ((z - 40) / 25) ** 2 + ((y - 40) / 18) ** 2 + ((x - 40) / 22) ** 2 <= 1
    pred = ((z - 42) / 23) ** 2 + ((y - 41.5) / 16) ** 2 + ((x - 41.5) / 22) ** 2 <= 1

    def one_hot(mask):
        return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))

    official = monai_metrics.compute_surface_dice(one_hot(pred), one_hot(gt), [2.0], spacing=list(spacing),
                                                  use_subvoxels=True)
    assert nsd(pred, gt, spacing, 2.0) == pytest.approx(float(official[0, 0]), abs=0.04)
