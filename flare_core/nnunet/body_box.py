"""Where the body is: a cheap localisation before the fine sliding window.

The abdominal organs lie inside the patient, and a CT's field of view holds a
lot of air around the patient (and often a table). `body_box` finds the box
around the largest connected region of tissue on a coarse grid, so `fastest`
can resample and slide over that box only; everything outside it is
background. It is the first, network-free stage of the localise-then-segment
cascade that FLARE23's best entries used.

Tissue is anything above `AIR_THRESHOLD_HU`, between air (-1000 HU) and fat
(about -100 HU), the usual threshold for a CT body mask. The model's own
intensity normalisation assumes Hounsfield units, so the threshold does too.
Whenever the answer is doubtful - no tissue at all, or tissue everywhere - the
box is the whole image: localisation can cost speed, never a structure.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

AIR_THRESHOLD_HU = -500.0
# Kept around the tissue: the body's own surface voxels and a little context.
MARGIN_MM = 10.0
# The coarse grid the tissue is found on, in mm: enough for a box with a
# 10 mm margin, and ~100x fewer voxels than a full-resolution CT.
COARSE_MM = 4.0

Box = tuple[slice, slice, slice]


def whole(shape: Sequence[int]) -> Box:
    return tuple(slice(0, int(n)) for n in shape)  # type: ignore[return-value]


def body_box(image_zyx: np.ndarray, spacing_zyx: Sequence[float], min_size_mm: Sequence[float] = (0.0, 0.0, 0.0),
             threshold: float = AIR_THRESHOLD_HU, margin_mm: float = MARGIN_MM) -> Box:
    """The (z, y, x) box around the largest connected tissue region of a CT,
    grown by `margin_mm` and then to at least `min_size_mm` per axis (so a
    sliding window of that size fits without padding), clipped to the image."""
    shape = image_zyx.shape
    strides = [max(1, int(COARSE_MM // max(s, 1e-6))) for s in spacing_zyx]
    coarse = image_zyx[::strides[0], ::strides[1], ::strides[2]] > threshold
    found = _largest_component_box(coarse)
    if found is None:
        return whole(shape)
    box = []
    for axis, (lo, hi) in enumerate(found):
        n, step, spacing = shape[axis], strides[axis], spacing_zyx[axis]
        grow = math.ceil(margin_mm / spacing)
        # Between two coarse samples the surface is unseen: a stride more on each side.
        start, stop = max((lo - 1) * step - grow, 0), min(hi * step + grow, n)
        start, stop = _at_least(start, stop, math.ceil(min_size_mm[axis] / spacing), n)
        box.append(slice(start, stop))
    return tuple(box)  # type: ignore[return-value]


def _largest_component_box(mask: np.ndarray) -> list[tuple[int, int]] | None:
    """Per axis (first, last + 1) of the largest 6-connected region; None when
    there is no region or the region fills the whole grid."""
    if not mask.any() or mask.all():
        return None
    components, _ = ndimage.label(mask)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    slices = ndimage.find_objects(components)[int(sizes.argmax()) - 1]  # entry i is label i + 1
    return [(s.start, s.stop) for s in slices]


def _at_least(start: int, stop: int, size: int, n: int) -> tuple[int, int]:
    """Grow [start, stop) about its centre to `size` voxels, within [0, n)."""
    size = min(size, n)
    missing = size - (stop - start)
    if missing <= 0:
        return start, stop
    start = max(start - missing // 2, 0)
    stop = min(start + size, n)
    return stop - size, stop


def box_fraction(box: Box, shape: Sequence[int]) -> float:
    """The share of the image's voxels inside `box`."""
    inside = math.prod(s.stop - s.start for s in box)
    return inside / max(math.prod(shape), 1)
