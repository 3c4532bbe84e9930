"""nnU-Net's CT preprocessing, done in torch on the inference device.

The same steps as nnU-Net's default preprocessor for a CT configuration, minus
the nonzero cropping (CT has no zero background to crop, and skipping it
spares a full-volume hole filling): transpose to the plans' axis order,
normalise, resample to the target spacing. The difference is the resampling:
trilinear `torch.nn.functional.interpolate` instead of nnU-Net's third-order
spline with separate handling of the slice axis, which is much faster and
runs on the GPU.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

# nnU-Net's guard against a zero standard deviation.
STD_EPSILON = 1e-8


def normalize_ct(volume: torch.Tensor, normalization: str,
                 properties: Mapping[str, float]) -> torch.Tensor:
    """In-place intensity normalisation of a float volume.

    CTNormalization: clip to the training foreground's 0.5 / 99.5 percentiles,
    then z-score with the foreground mean and standard deviation (the plans'
    `foreground_intensity_properties_per_channel`). ZScoreNormalization: the
    volume's own mean and standard deviation.
    """
    if normalization == "CTNormalization":
        volume.clamp_(properties["percentile_00_5"], properties["percentile_99_5"])
        mean, std = properties["mean"], properties["std"]
    elif normalization == "ZScoreNormalization":
        mean, std = float(volume.mean()), float(volume.std())
    else:
        raise ValueError(f"unsupported normalisation {normalization!r}")
    return volume.sub_(mean).div_(max(std, STD_EPSILON))


def resampled_shape(shape: Sequence[int], spacing: Sequence[float],
                    target_spacing: Sequence[float]) -> tuple[int, ...]:
    """nnU-Net's rule: round(old spacing / new spacing x old size) per axis."""
    return tuple(int(round(s / t * n)) for n, s, t in zip(shape, spacing, target_spacing))


def resample_volume(volume: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Trilinear resampling of a (Z, Y, X) float volume to `shape`."""
    if tuple(volume.shape) == tuple(shape):
        return volume
    return F.interpolate(volume[None, None], size=tuple(shape), mode="trilinear", align_corners=False)[0, 0]


def resize_labels(labels: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of a (Z, Y, X) label volume, any dtype and device.

    Samples at voxel centres (torch's 'nearest-exact': source index
    floor((i + 0.5) x in / out)), the same convention as the trilinear
    resampling on the way in (align_corners=False); plain 'nearest' would
    shift the labels by up to half a voxel. Done by indexing one axis at a
    time rather than `F.interpolate`, whose support for uint8 differs between
    devices and versions.
    """
    for axis, size in enumerate(shape):
        source = labels.shape[axis]
        if source == size:
            continue
        index = ((torch.arange(size, device=labels.device, dtype=torch.float64) + 0.5) * (source / size)).floor()
        labels = labels.index_select(axis, index.clamp_(max=source - 1).long())
    return labels


def pad_to_patch(volume: torch.Tensor, patch: Sequence[int],
                 value: float = 0.0) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad a (Z, Y, X) volume to at least the patch size, evenly on both sides
    as nnU-Net does (with 0, the normalised mean, as nnU-Net does); return it
    and the slices that undo the padding."""
    pads, crop = [], []
    for size, p in zip(volume.shape, patch):
        missing = max(p - size, 0)
        before = missing // 2
        pads.append((before, missing - before))
        crop.append(slice(before, before + size))
    if not any(sum(p) for p in pads):
        return volume, tuple(crop)
    # F.pad lists the last axis first
    flat = [amount for pair in reversed(pads) for amount in pair]
    return F.pad(volume, flat, mode="constant", value=value), tuple(crop)
