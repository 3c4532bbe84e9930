"""Tumor pseudo-label as a detector, and per-class label quality, on arrays
whose numbers are known by hand."""
import numpy as np
import pytest

from flare_core import label_quality as lq
from flare_core import labels
from flare_core.io import Geometry, write_volume


def two_lesions() -> np.ndarray:
    """Ground truth: lesion A (8 voxels) and lesion B (1 voxel) in a 10^3 grid."""
    truth = np.zeros((10, 10, 10), np.uint8)
    truth[1:3, 1:3, 1:3] = 1  # A
    truth[7, 7, 7] = 1  # B
    return truth


def test_voxel_and_lesion_precision_recall_are_counted():
    predicted = np.zeros((10, 10, 10), np.uint8)
    predicted[1:3, 1:3, 1] = 1  # half of A: 4 true positive voxels
    predicted[1, 1, 0] = 1  # touches that component: 1 false positive voxel, same lesion
    predicted[5, 0, 0] = 1  # a false lesion far away
    found = lq.TumorDetection.of(predicted, two_lesions())
    assert (found.true_positive_voxels, found.false_positive_voxels, found.false_negative_voxels) == (4, 2, 5)
    assert found.voxel_precision == pytest.approx(4 / 6)
    assert found.voxel_recall == pytest.approx(4 / 9)
    assert (found.true_lesions, found.true_lesions_found) == (2, 1)  # A found, B missed
    assert (found.predicted_lesions, found.predicted_lesions_real) == (2, 1)
    assert found.lesion_recall == 0.5 and found.lesion_precision == 0.5


def test_lesions_are_26_connected():
    truth = np.zeros((4, 4, 4), np.uint8)
    truth[0, 0, 0] = truth[1, 1, 1] = 1  # diagonal neighbours: one lesion
    found = lq.TumorDetection.of(truth.copy(), truth)
    assert found.true_lesions == 1 and found.lesion_recall == 1.0 and found.voxel_precision == 1.0


def test_rates_are_undefined_without_anything_to_count():
    empty = np.zeros((3, 3, 3), np.uint8)
    found = lq.TumorDetection.of(empty, empty)
    record = found.to_dict()
    assert record["voxel_precision"] is None and record["voxel_recall"] is None
    assert record["lesion_recall"] is None and record["lesion_precision"] is None


def test_detections_pool_counts_over_cases():
    truth = two_lesions()
    hit_all = lq.TumorDetection.of(truth, truth)  # 9 tp voxels, 2 of 2 lesions
    nothing = lq.TumorDetection.of(np.zeros_like(truth), truth)  # 9 fn voxels, 0 of 2
    pooled = lq.pool_detections([hit_all.to_dict(), nothing.to_dict()])
    assert pooled.cases == 2
    assert pooled.voxel_recall == 0.5 and pooled.voxel_precision == 1.0
    assert pooled.lesion_recall == 0.5 and pooled.lesion_precision == 1.0
    assert lq.pool_detections([]) is None


def test_detect_tumors_reads_the_files(tmp_path):
    geometry = Geometry(size=(10, 10, 10), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                        direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    truth = two_lesions() * labels.TUMOR
    truth[5:7, 5:7, 0:2] = labels.LIVER  # other classes are not tumors
    mask = (truth == labels.TUMOR).astype(np.uint8)
    mask[7, 7, 7] = 0
    write_volume(truth, geometry, tmp_path / "gt.nii.gz")
    write_volume(mask, geometry, tmp_path / "pseudo.nii.gz")
    found, breakdown = lq.detect_tumors("c1", tmp_path / "gt.nii.gz", geometry, tmp_path / "pseudo.nii.gz")
    assert found.voxel_precision == 1.0 and found.voxel_recall == pytest.approx(8 / 9)
    assert found.true_lesions_found == 1 and found.true_lesions == 2
    assert breakdown == {"found_by_host": {"background": [1, 2]}, "false_by_class": {}}  # lesions outside organs


def test_class_table_means_each_class_of_each_source():
    rows = [
        {"source": lq.ORGAN_FUSED, "class_id": 1, "class_name": "liver", "dsc": 0.8, "nsd": 0.9},
        {"source": lq.ORGAN_FUSED, "class_id": 1, "class_name": "liver", "dsc": 0.6, "nsd": 0.7},
        {"source": lq.PARTIAL_FUSED, "class_id": 14, "class_name": "tumor", "dsc": 0.5, "nsd": 0.5},
        {"source": lq.PARTIAL_FUSED, "class_id": 1, "class_name": "liver", "dsc": 0.0, "nsd": 0.0},
    ]
    table = lq.class_table(rows)
    assert [(r["source"], r["class_id"]) for r in table] == [
        (lq.PARTIAL_FUSED, 1), (lq.PARTIAL_FUSED, 14), (lq.ORGAN_FUSED, 1)]  # SOURCES order, then class id
    liver = table[2]
    assert liver["dsc"] == pytest.approx(0.7) and liver["nsd"] == pytest.approx(0.8) and liver["cases"] == 2
    assert lq.class_table([]) == []


def organs_with_lesions() -> np.ndarray:
    """A liver with a lesion, a right kidney with a lesion, a gallbladder."""
    truth = np.zeros((12, 12, 12), np.uint8)
    truth[0:6, 0:6, 0:6] = labels.LIVER
    truth[2:4, 2:4, 2:4] = labels.TUMOR
    truth[7:12, 7:12, 7:12] = labels.RIGHT_KIDNEY
    truth[9, 9, 9] = labels.TUMOR
    truth[0:3, 8:11, 0:3] = labels.GALLBLADDER
    return truth


def test_lesions_are_counted_by_host_organ():
    truth = organs_with_lesions()
    predicted = np.zeros_like(truth)
    predicted[3, 3, 3] = 1  # finds the liver lesion, misses the kidney one
    assert lq.lesions_by_host(predicted, truth) == {"liver": [1, 1], "right_kidney": [0, 1]}
    assert lq.lesions_by_host(truth == labels.TUMOR, truth) == {"liver": [1, 1], "right_kidney": [1, 1]}


def test_false_lesions_are_named_by_what_they_really_are():
    truth = organs_with_lesions()
    predicted = np.zeros_like(truth)
    predicted[0:2, 8:10, 0:2] = 1  # the gallbladder taken for a lesion
    predicted[3, 3, 3] = 1  # a real one: not counted
    predicted[11, 0, 11] = 1  # a stray voxel in the background
    assert lq.false_lesions_by_class(predicted, truth) == {"background": 1, "gallbladder": 1}
    assert lq.false_lesions_by_class(np.zeros_like(truth), truth) == {}


def test_breakdowns_pool_over_cases_into_one_row_per_class():
    truth = organs_with_lesions()
    missed_all, found_liver = np.zeros_like(truth), np.zeros_like(truth)
    found_liver[3, 3, 3] = 1
    found_liver[0, 8, 0] = 1  # a false one in the gallbladder
    pooled = lq.pool_breakdowns([lq.lesion_breakdown(missed_all, truth), lq.lesion_breakdown(found_liver, truth)])
    assert pooled == {"found_by_host": {"liver": [1, 2], "right_kidney": [0, 2]}, "false_by_class": {"gallbladder": 1}}
    assert lq.breakdown_rows(pooled) == [
        {"class": "gallbladder", "true_lesions": 0, "found": 0, "false_lesions_on_it": 1},
        {"class": "liver", "true_lesions": 2, "found": 1, "false_lesions_on_it": 0},
        {"class": "right_kidney", "true_lesions": 2, "found": 0, "false_lesions_on_it": 0}]
