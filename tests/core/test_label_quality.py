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
    found = lq.detect_tumors("c1", tmp_path / "gt.nii.gz", geometry, tmp_path / "pseudo.nii.gz")
    assert found.voxel_precision == 1.0 and found.voxel_recall == pytest.approx(8 / 9)
    assert found.true_lesions_found == 1 and found.true_lesions == 2


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
