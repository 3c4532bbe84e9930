"""Class frequencies of an nnU-Net training set and cross-entropy weights from them.

The weights are w_c = f_c ** -power for the classes present (absent classes
get 0), scaled so that the voxel-weighted mean is 1: sum_c w_c f_c = 1, which
keeps the loss on nnU-Net's usual scale. Frequencies are counted on the
preprocessed segmentations (what the network is trained on), on at most
`max_cases` cases in sorted order, so the result is deterministic.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

from flare_core.label_counts import class_counts

log = logging.getLogger(__name__)


def class_frequencies(preprocessed_folder: Path, num_classes: int, max_cases: int = 64) -> np.ndarray:
    """Share of each class among the labelled voxels (index = class id)."""
    dataset = infer_dataset_class(str(preprocessed_folder))(str(preprocessed_folder))
    counts = np.zeros(num_classes, dtype=np.float64)
    for identifier in sorted(dataset.identifiers)[:max_cases]:
        _, seg, _, _ = dataset.load_case(identifier)
        values = np.asarray(seg[0]).ravel()
        values = values[(values >= 0) & (values < num_classes)]  # -1 marks padding outside the image
        counts += class_counts(values, num_classes)
    total = counts.sum()
    if total == 0:
        raise ValueError(f"no labelled voxels in {preprocessed_folder}")
    return counts / total


def class_weights(frequencies: np.ndarray, power: float) -> np.ndarray:
    """w_c proportional to f_c ** -power, 0 for absent classes, with sum_c w_c f_c = 1."""
    frequencies = np.asarray(frequencies, dtype=np.float64)
    if power < 0:
        raise ValueError(f"class weight power must be >= 0, got {power}")
    present = frequencies > 0
    weights = np.zeros_like(frequencies)
    weights[present] = frequencies[present] ** -float(power)
    return weights / float((weights * frequencies).sum())
