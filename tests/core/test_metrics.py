"""FLARE23 DSC / NSD: hand-computed cases, the official rules, and agreement
of our NSD (MONAI's surfel implementation behind the FLARE rules) with DeepMind's
`surface-distance` package, the code FLARE23's evaluation script calls."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from flare_core import labels
from flare_core.metrics import ClassScore, dsc, evaluate_case, nsd, summarize

# The reference: DeepMind's surface-distance 0.1 (a dev dependency). It uses
# np.Inf, gone in NumPy 2, but only for an empty mask, which the reference is
# never given here (the empty rules are FLARE's, tested separately).
surface_distance = pytest.importorskip("surface_distance")

# Agreement we require with the reference; measured: ~1e-7 (float32 in MONAI).
REFERENCE_ABS = 1e-4


def reference_nsd(pred: np.ndarray, gt: np.ndarray, spacing, tolerance: float) -> float:
    assert pred.any() and gt.any()
    distances = surface_distance.compute_surface_distances(gt.astype(bool), pred.astype(bool), list(spacing))
    return float(surface_distance.compute_surface_dice_at_tolerance(distances, tolerance))


def cube(shape=(10, 10, 10), start=(2, 2, 2), size=4) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def ellipsoid(shape, spacing, centre_mm, radii_mm) -> np.ndarray:
    """Voxels whose centre lies in the ellipsoid (all in mm, axes z, y, x)."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g * s - c) / r) ** 2 for g, s, c, r in zip(grid, spacing, centre_mm, radii_mm)) <= 1


def box_mm(shape, spacing, low_mm, high_mm) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    inside = [(g * s >= lo) & (g * s <= hi) for g, s, lo, hi in zip(grid, spacing, low_mm, high_mm)]
    return inside[0] & inside[1] & inside[2]


def shape_for(spacing, extent_mm=60.0) -> tuple[int, ...]:
    return tuple(int(round(extent_mm / s)) for s in spacing)


# ---------------------------------------------------------------- hand-computed


def test_identical_cubes_score_one():
    assert dsc(cube(), cube()) == 1.0
    assert nsd(cube(), cube(), (1.0, 1.0, 1.0), 0.0) == 1.0


def test_disjoint_cubes_score_zero():
    far = cube(shape=(20, 20, 20), start=(12, 12, 12))
    near = cube(shape=(20, 20, 20))
    assert dsc(near, far) == 0.0
    assert nsd(near, far, (1.0, 1.0, 1.0), 2.0) == 0.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8)])
def test_tolerance_is_inclusive(spacing):
    # Shifted one slice, no surfel is further than one slice thickness from the
    # other surface and some are exactly that far: distance <= tolerance counts.
    moved = cube(start=(3, 2, 2))
    assert dsc(cube(), moved) == pytest.approx(0.75)
    assert nsd(cube(), moved, spacing, spacing[0]) == 1.0
    assert nsd(cube(), moved, spacing, spacing[0] - 1e-3) < 1.0


def test_anisotropic_spacing_orders_the_axes_zyx():
    # The same one-voxel shift along x is 1 mm at spacing (2, 1, 1), so every
    # surfel is within a 1.5 mm tolerance; at (1, 1, 2) it is 2 mm.
    moved_x = cube(start=(2, 2, 3))
    assert nsd(cube(), moved_x, (2.0, 1.0, 1.0), 1.5) == 1.0
    at_2mm = nsd(cube(), moved_x, (1.0, 1.0, 2.0), 1.5)
    assert at_2mm < 1.0
    assert at_2mm == pytest.approx(reference_nsd(moved_x, cube(), (1.0, 1.0, 2.0), 1.5), abs=REFERENCE_ABS)


def test_transposing_array_and_spacing_together_changes_nothing():
    spacing = (2.5, 0.8, 0.6)
    shape = shape_for(spacing, 40.0)
    gt = ellipsoid(shape, spacing, (20, 20, 20), (12, 9, 14))
    pred = ellipsoid(shape, spacing, (21.5, 19.5, 20.5), (11, 10, 13))
    order = (2, 0, 1)
    moved = nsd(pred.transpose(order), gt.transpose(order), [spacing[i] for i in order], 2.0)
    assert moved == pytest.approx(nsd(pred, gt, spacing, 2.0), abs=1e-6)
    # ... while keeping the spacing in the old order is a different scene.
    assert abs(nsd(pred.transpose(order), gt.transpose(order), spacing, 2.0) - moved) > 0.01


def test_empty_rules():
    empty = np.zeros((6, 6, 6), bool)
    assert dsc(empty, empty) == 1.0 and nsd(empty, empty, (1, 1, 1), 1.0) == 1.0
    assert dsc(cube((6, 6, 6), (1, 1, 1), 2), empty) == 0.0
    assert nsd(cube((6, 6, 6), (1, 1, 1), 2), empty, (1, 1, 1), 1.0) == 0.0
    assert nsd(empty, cube((6, 6, 6), (1, 1, 1), 2), (1, 1, 1), 1.0) == 0.0


def test_nsd_rejects_bad_input():
    with pytest.raises(ValueError, match="spacing"):
        nsd(cube(), cube(), (1.0, 1.0), 1.0)
    with pytest.raises(ValueError, match="shape"):
        nsd(cube(), cube(shape=(10, 10, 11)), (1.0, 1.0, 1.0), 1.0)
    with pytest.raises(ValueError, match="tolerance"):
        nsd(cube(), cube(), (1.0, 1.0, 1.0), -1.0)


# ---------------------------------------------------------------- agreement with the reference

SPACINGS = [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8), (5.0, 0.7, 0.7), (6.0, 6.0, 7.0)]


def shape_pairs(spacing):
    """(pred, gt) pairs in a 48 mm cube; on the coarse grid everything is
    scaled by 2 so that the shapes still span several voxels."""
    k = 2.0 if min(spacing) >= 5.0 else 1.0
    shape = shape_for(spacing, 48.0 * k)

    def mm(*values):
        return tuple(k * v for v in values)

    yield "scaled+shifted ellipsoid", (ellipsoid(shape, spacing, mm(27.5, 21.8, 26.0), mm(14.0, 12.5, 12.0)),
                                       ellipsoid(shape, spacing, mm(24.0, 24.0, 24.0), mm(16.0, 11.0, 14.0)))
    yield "flat ellipsoid", (ellipsoid(shape, spacing, mm(21.0, 25.0, 26.5), mm(6.0, 17.0, 15.0)),
                             ellipsoid(shape, spacing, mm(24.0, 23.0, 23.0), mm(8.0, 16.0, 17.0)))
    yield "shifted box", (box_mm(shape, spacing, mm(12.0, 12.0, 3.0), mm(40.0, 36.0, 32.0)),
                          box_mm(shape, spacing, mm(8.0, 9.0, 7.0), mm(36.0, 33.0, 37.0)))


@pytest.mark.parametrize("spacing", SPACINGS)
def test_nsd_matches_surface_distance_package(spacing):
    for name, (pred, gt) in shape_pairs(spacing):
        for tolerance in (2.0, 3.0, 5.0, 7.0):
            ours, ref = nsd(pred, gt, spacing, tolerance), reference_nsd(pred, gt, spacing, tolerance)
            assert ours == pytest.approx(ref, abs=REFERENCE_ABS), (name, tolerance)


def random_blob(rng, shape, threshold=0.1) -> np.ndarray:
    return ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) > threshold


@pytest.mark.parametrize("seed, spacing", [(1, (3.0, 0.8, 0.8)), (2, (1.5, 1.0, 0.6))])
def test_irregular_shapes_touching_the_volume_border_match_the_reference(seed, spacing):
    # Concave, many-component surfaces exercise most of the 256 neighbourhood
    # codes; outside the volume counts as background (a surface there).
    rng = np.random.default_rng(seed)
    pred, gt = random_blob(rng, (10, 14, 16)), random_blob(rng, (10, 14, 16))
    gt[0, :4, :4] = pred[:, -1, -3:] = True
    for tolerance in (1.0, 2.0, 3.0):
        assert nsd(pred, gt, spacing, tolerance) == pytest.approx(reference_nsd(pred, gt, spacing, tolerance),
                                                                  abs=REFERENCE_ABS)


def test_2d_masks_match_the_reference():
    spacing = (0.7, 1.3)
    grid = np.ogrid[:60, :50]
    gt = ((grid[0] * 0.7 - 20) / 12) ** 2 + ((grid[1] * 1.3 - 30) / 15) ** 2 <= 1
    pred = ((grid[0] * 0.7 - 21) / 11) ** 2 + ((grid[1] * 1.3 - 31) / 16) ** 2 <= 1
    assert nsd(pred, gt, spacing, 1.0) == pytest.approx(reference_nsd(pred, gt, spacing, 1.0), abs=REFERENCE_ABS)


def test_cropping_does_not_change_scores():
    rng = np.random.default_rng(5)
    small_pred, small_gt = random_blob(rng, (8, 10, 10)), random_blob(rng, (8, 10, 10))
    big_pred, big_gt = np.zeros((30, 40, 40), bool), np.zeros((30, 40, 40), bool)
    big_pred[11:19, 20:30, 5:15], big_gt[11:19, 20:30, 5:15] = small_pred, small_gt
    spacing = (2.0, 0.7, 0.9)
    ours = nsd(big_pred, big_gt, spacing, 2.0)
    assert ours == pytest.approx(reference_nsd(big_pred, big_gt, spacing, 2.0), abs=REFERENCE_ABS)
    # The small arrays' objects touch their border, where the volume ends: the
    # same scene as the embedded one.
    assert ours == pytest.approx(nsd(small_pred, small_gt, spacing, 2.0), abs=1e-6)


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


def test_evaluate_case_uses_each_class_tolerance():
    spacing = (2.5, 0.8, 0.8)
    shape = shape_for(spacing, 70.0)
    gt, pred = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    classes = [labels.AORTA, labels.ESOPHAGUS, labels.LIVER, labels.DUODENUM]  # 2, 3, 5, 7 mm
    for i, c in enumerate(classes):
        centre = (35.0, 17.0 + (i // 2) * 34.0, 17.0 + (i % 2) * 34.0)
        gt[ellipsoid(shape, spacing, centre, (25.0, 11.0, 12.0))] = c
        pred[ellipsoid(shape, spacing, (centre[0] + 4.0, centre[1] - 1.5, centre[2] + 1.0), (24.0, 9.0, 13.0))] = c
    scores = {s.class_id: s for s in evaluate_case(pred, gt, spacing, classes=classes)}
    nsds = []
    for c in classes:
        tolerance = labels.NSD_TOLERANCE_MM[c]
        p, g = pred == c, gt == c
        if c in labels.TUBULAR:  # scored on the ground truth's slices only
            z = np.flatnonzero(g.any(axis=(1, 2)))
            p, g = p[z[0]:z[-1] + 1], g[z[0]:z[-1] + 1]
        assert scores[c].dsc == pytest.approx(dsc(p, g))
        assert scores[c].nsd == pytest.approx(reference_nsd(p, g, spacing, tolerance), abs=REFERENCE_ABS)
        nsds.append(scores[c].nsd)
    assert len({round(n, 3) for n in nsds}) == len(nsds)  # the tolerances made a difference


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


def test_tubular_prediction_cut_at_the_gt_z_range_matches_reference_on_those_slices():
    # The prediction runs past the ground truth's slices and deviates inside
    # them: its part outside is ignored, and the cut leaves a cap on it, as in
    # the official script (which slices the arrays before surface-distance).
    spacing = (2.5, 0.8, 0.8)
    gt, pred = np.zeros((30, 24, 24), np.uint8), np.zeros((30, 24, 24), np.uint8)
    gt[8:20, 8:14, 8:14] = labels.IVC
    pred[2:26, 11:17, 8:15] = labels.IVC  # 3 voxels (2.4 mm) off in y
    (score,) = evaluate_case(pred, gt, spacing, classes=[labels.IVC])
    p, g = pred[8:20] == labels.IVC, gt[8:20] == labels.IVC
    assert score.dsc == pytest.approx(dsc(p, g))
    assert score.nsd == pytest.approx(reference_nsd(p, g, spacing, labels.NSD_TOLERANCE_MM[labels.IVC]),
                                      abs=REFERENCE_ABS)
    assert score.nsd < 1.0


def test_tubular_prediction_without_gt_class_counts_as_false_positive():
    pred = np.zeros((6, 6, 6), np.uint8)
    pred[2, 2, 2] = labels.IVC
    (score,) = evaluate_case(pred, np.zeros_like(pred), (1, 1, 1), classes=[labels.IVC])
    assert (score.dsc, score.nsd) == (0.0, 0.0)


def test_tubular_prediction_only_outside_gt_z_range_scores_zero():
    gt, pred = np.zeros((12, 6, 6), np.uint8), np.zeros((12, 6, 6), np.uint8)
    gt[6:10, 2:4, 2:4] = labels.AORTA
    pred[0:4, 2:4, 2:4] = labels.AORTA
    (score,) = evaluate_case(pred, gt, (1, 1, 1), classes=[labels.AORTA])
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


def test_nsd_kept_at_dsc_threshold():
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[1:11, 1:11, 1:11] = labels.LIVER
    pred = np.zeros_like(gt)
    pred[1:2, 1:11, 1:11] = labels.LIVER
    pred[2, 1:11, 1:2] = labels.LIVER  # 110 voxels, all inside: DSC 220/1110 ~ 0.198 < 0.2
    (below,) = evaluate_case(pred, gt, (1, 1, 1), classes=[labels.LIVER])
    assert below.dsc < 0.2 and below.nsd == 0.0
    pred[2, 1:11, 1:4] = labels.LIVER  # 130 voxels: DSC 260/1130 ~ 0.23
    (above,) = evaluate_case(pred, gt, (1, 1, 1), classes=[labels.LIVER])
    assert above.dsc >= 0.2
    assert above.nsd == pytest.approx(nsd(pred == 1, gt == 1, (1, 1, 1), 5.0)) and above.nsd > 0


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
