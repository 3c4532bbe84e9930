"""The FLARE22 window-skipping rules of the `fastest` inference mode.

Abdominal CT scans are long in z and most of their windows hold only air,
lungs or legs. The rules below let the centre of each z step decide how much
of that step (and of the next one) is worth running. Everything is measured
on the resampled, padded volume the network sees, in its voxels, with the
image's slice axis z first (the predictor reorders the axes when nnU-Net's
`transpose_forward` puts another axis first).

Window grid
    z: nnU-Net's positions (steps of at most `step_fraction` x patch, 0.5 by
    default). In-plane, per axis: one position if the axis fits in a patch,
    else `inplane_positions` evenly spread positions, more only if that many
    would leave a gap between windows. FLARE22 used 3 over the whole field of
    view, so a z step is a 3 x 3 grid: one centre window (the middle position
    on both axes) and 8 outer windows. On a volume already cropped to the
    body (`flare_core.nnunet.body_box`) 2 cover an abdomen: a 2 x 2 grid whose
    "centre" window is the second position on both axes, holding more than a
    quarter of the body.

Per z step k (start s_k), in increasing z:
    1. The centre window is predicted first and its argmax taken: its
       foreground voxel count F, its front-part count F_front, its set of
       foreground classes.
    2. Empty step: if F < `min_foreground_voxels`, the 8 outer windows are
       skipped and so is the whole next z step (k + 1), unless k + 1 is the
       last z step (the end of the volume is always looked at). With steps of
       at most half a patch, step k + 2 starts no later than where the window
       of step k ends, so dropping step k + 1 leaves no slice that no z step
       covers.
    3. Front part: the slices of the centre window that the next z step does
       not cover, i.e. window-local slices [0, s_{k+1} - s_k) (the whole window
       for the last z step). These are the slices for which this z step is the
       last chance; the rest is covered again by step k + 1 with its own 9
       windows. If F_front < `min_front_foreground_voxels`, the 8 outer
       windows are skipped (step k + 1 still runs).
    4. Tubular only: if every foreground class found is tubular (aorta, IVC,
       esophagus: `flare_core.labels.TUBULAR`), only the outer windows those
       structures reach are run: take the in-plane bounding box of the centre
       window's foreground voxels, grow it by `tubular_margin_voxels` on every
       side, and run an outer window only if that box overlaps the part of the
       window outside the centre window. A tube that stays clear of the centre
       window's borders needs no outer window.
    5. Otherwise all 8 outer windows run.
Rules are tried in this order; the first that applies decides. Voxels that no
window reached are background.

Thresholds are in voxels of the network's grid. The FLARE22 defaults (1000)
belong to its patch of 32 x 128 x 192 voxels; `FastestRules.scaled_to_patch`
scales them by patch volume for other patch sizes (tiny test networks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from flare_core.labels import TUBULAR
from flare_core.nnunet.sliding_window import (
    SlabAccumulator,
    WindowCounts,
    accumulator_dtype,
    batched,
    crop_windows,
    gaussian_importance_map,
    grid_starts,
    window_starts,
)

FLARE22_PATCH: tuple[int, int, int] = (32, 128, 192)

# Decision names, as they appear in the step trace.
EMPTY = "empty"
FRONT_EMPTY = "front_empty"
TUBULAR_ONLY = "tubular_only"
FULL = "full"


@dataclass(frozen=True)
class FastestRules:
    """Thresholds of the window-skipping rules (see the module docstring)."""

    min_foreground_voxels: int = 1000
    min_front_foreground_voxels: int = 1000
    tubular_classes: tuple[int, ...] = TUBULAR
    tubular_margin_voxels: int = 8
    inplane_positions: int = 3

    @classmethod
    def scaled_to_patch(cls, patch_size: Sequence[int], reference_patch: Sequence[int] = FLARE22_PATCH,
                        **overrides) -> "FastestRules":
        """FLARE22 defaults scaled to another patch: voxel thresholds by the ratio
        of patch volumes, the margin by the ratio of in-plane sizes."""
        volume_ratio = math.prod(patch_size) / math.prod(reference_patch)
        inplane_ratio = (patch_size[1] * patch_size[2] / (reference_patch[1] * reference_patch[2])) ** 0.5
        base = cls()
        scaled = replace(
            base,
            min_foreground_voxels=max(1, round(base.min_foreground_voxels * volume_ratio)),
            min_front_foreground_voxels=max(1, round(base.min_front_foreground_voxels * volume_ratio)),
            tubular_margin_voxels=max(1, round(base.tubular_margin_voxels * inplane_ratio)),
        )
        return replace(scaled, **overrides)


@dataclass(frozen=True)
class CentreFindings:
    """What the centre window of a z step found."""

    foreground: int
    front_foreground: int
    classes: frozenset[int]
    bbox_yx: tuple[int, int, int, int] | None  # y0, y1, x0, x1 (ends exclusive), window-local

    @classmethod
    def of(cls, logits: torch.Tensor, front_depth: int) -> "CentreFindings":
        labels = logits.argmax(dim=0)
        foreground = labels > 0
        counts = torch.bincount(labels.flatten().long(), minlength=logits.shape[0])
        present = torch.nonzero(counts).flatten().tolist()
        return cls(
            foreground=int(foreground.sum()),
            front_foreground=int(foreground[:front_depth].sum()),
            classes=frozenset(int(c) for c in present if c != 0),
            bbox_yx=_bbox_yx(foreground),
        )


def _bbox_yx(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    plane = mask.any(dim=0)
    rows = torch.nonzero(plane.any(dim=1)).flatten()
    cols = torch.nonzero(plane.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


@dataclass(frozen=True)
class StepDecision:
    """Which outer windows of a z step run, and whether the next z step is dropped."""

    reason: str
    outer_windows: tuple[tuple[int, int], ...]
    skip_next_step: bool = False


@dataclass(frozen=True)
class StepTrace:
    z: int
    reason: str
    outer_run: int
    outer_skipped: int
    next_step_skipped: bool


def decide_step(findings: CentreFindings, rules: FastestRules, centre: tuple[int, int],
                outer: Sequence[tuple[int, int]], patch_yx: tuple[int, int]) -> StepDecision:
    """Apply rules 2-5 of the module docstring to one z step."""
    if findings.foreground < rules.min_foreground_voxels:
        return StepDecision(EMPTY, (), skip_next_step=True)
    if findings.front_foreground < rules.min_front_foreground_voxels:
        return StepDecision(FRONT_EMPTY, ())
    if findings.classes <= set(rules.tubular_classes):
        reached = tuple(start for start in outer
                        if _tube_reaches(findings.bbox_yx, rules.tubular_margin_voxels, centre, start, patch_yx))
        return StepDecision(TUBULAR_ONLY, reached)
    return StepDecision(FULL, tuple(outer))


def _tube_reaches(bbox: tuple[int, int, int, int], margin: int, centre: tuple[int, int],
                  start: tuple[int, int], patch_yx: tuple[int, int]) -> bool:
    """Does the grown bounding box overlap the window at `start` outside the centre window?"""
    py, px = patch_yx
    cy, cx = centre
    y0, y1 = cy + bbox[0] - margin, cy + bbox[1] + margin
    x0, x1 = cx + bbox[2] - margin, cx + bbox[3] + margin
    iy0, iy1 = max(y0, start[0]), min(y1, start[0] + py)
    ix0, ix1 = max(x0, start[1]), min(x1, start[1] + px)
    if iy0 >= iy1 or ix0 >= ix1:
        return False
    return iy0 < cy or iy1 > cy + py or ix0 < cx or ix1 > cx + px


def predict_with_rules(volume: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor],
                       patch: Sequence[int], num_classes: int, rules: FastestRules,
                       step_fraction: float = 0.5, batch_size: int = 1, sigma_scale: float = 1.0 / 8,
                       ) -> tuple[torch.Tensor, WindowCounts, list[StepTrace]]:
    """Labels of a normalised, at-least-patch-sized (Z, Y, X) volume under the
    window-skipping rules; also the window counts and one trace entry per z
    step that ran."""
    dtype = accumulator_dtype(volume.device)
    weights = gaussian_importance_map(patch, sigma_scale, volume.device, dtype)
    z_starts = window_starts(volume.shape[0], patch[0], step_fraction)
    ys = grid_starts(volume.shape[1], patch[1], rules.inplane_positions)
    xs = grid_starts(volume.shape[2], patch[2], rules.inplane_positions)
    centre = (ys[len(ys) // 2], xs[len(xs) // 2])
    outer = [(y, x) for y in ys for x in xs if (y, x) != centre]
    accumulator = SlabAccumulator(num_classes, volume.shape, patch[0], volume.device, dtype)
    counts, trace = WindowCounts(), []
    k = 0
    while k < len(z_starts):
        z = z_starts[k]
        accumulator.advance_to(z)
        centre_logits = run(crop_windows(volume, [(z, *centre)], patch))[0]
        accumulator.add(centre_logits, weights, (z, *centre))
        front_depth = min(z_starts[k + 1] - z, patch[0]) if k + 1 < len(z_starts) else patch[0]
        decision = decide_step(CentreFindings.of(centre_logits, front_depth), rules, centre, outer,
                               (patch[1], patch[2]))
        del centre_logits
        for group in batched(decision.outer_windows, batch_size):
            starts = [(z, y, x) for y, x in group]
            for start, logits in zip(starts, run(crop_windows(volume, starts, patch))):
                accumulator.add(logits, weights, start)
        counts.evaluated += 1 + len(decision.outer_windows)
        counts.skipped += len(outer) - len(decision.outer_windows)
        drop_next = decision.skip_next_step and k + 2 < len(z_starts)
        trace.append(StepTrace(z, decision.reason, len(decision.outer_windows),
                               len(outer) - len(decision.outer_windows), drop_next))
        if drop_next:
            counts.skipped += 1 + len(outer)
            k += 2
        else:
            k += 1
    return accumulator.finish(), counts, trace
