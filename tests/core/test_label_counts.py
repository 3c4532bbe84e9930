import numpy as np

from flare_core import label_counts
from flare_core.label_counts import class_counts, foreground_counts, present_classes


def test_counts_slab_by_slab_equal_one_bincount(monkeypatch):
    monkeypatch.setattr(label_counts, "SLAB_VOXELS", 7)  # many slabs on a small volume
    label = np.random.default_rng(3).integers(0, 15, size=(9, 4, 3), dtype=np.uint8)
    label[-1, -1, -1] = 200  # a value only the last slab has
    np.testing.assert_array_equal(class_counts(label), np.bincount(label.ravel()))
    assert class_counts(label, 256).size == 256 and class_counts(label, 256).dtype == np.int64


def test_an_empty_map_has_minlength_zero_counts():
    assert class_counts(np.zeros((0, 4, 3), np.uint8), 15).tolist() == [0] * 15


def test_foreground_counts_and_present_classes():
    label = np.array([[[0, 1, 1], [14, 0, 5]]], np.uint8)
    assert foreground_counts(label) == {c: {1: 2, 5: 1, 14: 1}.get(c, 0) for c in range(1, 15)}
    assert present_classes(label) == [1, 5, 14]
    assert present_classes(np.zeros((2, 2, 2), np.uint8)) == []
