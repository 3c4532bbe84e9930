"""Gaussian-weighted sliding-window inference that keeps only the argmax.

The window positions follow nnU-Net's rule (so `fast` visits the same windows
as nnU-Net's own predictor), but the accumulation is ours and built for speed
and memory:

* Only the argmax is wanted, and dividing the weighted sum of logits by the
  sum of weights does not change a voxel's argmax (the divisor is the same
  positive number for every class). So no weight map is kept and nothing is
  divided.
* Windows are visited z step by z step, in increasing z. Once every window of
  a z step has run, the slices before the next z step's start can never be
  touched again: they are turned into labels at once and their logits freed.
  The logit buffer is therefore one patch deep (classes x patch_z x Y x X)
  instead of the whole volume.
* A voxel that no window reached keeps all-zero logits and becomes background
  (argmax picks the first of equal values), which is what the window-skipping
  rules of `fastest` rely on.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

# Smallest Gaussian weight: the corners of a window would otherwise underflow
# to zero in half precision, and a voxel reached only by window corners (the
# volume's own corners) would lose all its logits.
MIN_GAUSSIAN_WEIGHT = 1e-4


@dataclass
class WindowCounts:
    """How many sliding-window positions were evaluated and how many skipped."""

    evaluated: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return self.evaluated + self.skipped


def window_starts(size: int, patch: int, step_fraction: float) -> list[int]:
    """nnU-Net's window positions along one axis: steps of at most
    `step_fraction * patch`, spread evenly so the last window ends at `size`."""
    if not 0 < step_fraction <= 1:
        raise ValueError(f"step fraction must be in (0, 1], got {step_fraction}")
    if size <= patch:
        return [0]
    count = math.ceil((size - patch) / (patch * step_fraction)) + 1
    spacing = (size - patch) / (count - 1)
    return [int(round(spacing * i)) for i in range(count)]


def grid_starts(size: int, patch: int, positions: int) -> list[int]:
    """`positions` evenly spread window starts along one axis (one if the axis
    fits in a patch), with more positions only where that many would leave a
    gap between neighbouring windows."""
    if size <= patch:
        return [0]
    count = max(positions, math.ceil((size - patch) / patch) + 1, 2)
    spacing = (size - patch) / (count - 1)
    return sorted({int(round(spacing * i)) for i in range(count)})


def gaussian_importance_map(patch: Sequence[int], sigma_scale: float = 1.0 / 8,
                            device: torch.device | str = "cpu",
                            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Separable Gaussian centred on the patch (sigma = `sigma_scale` x patch
    size per axis), peak 1, floored at `MIN_GAUSSIAN_WEIGHT`. Window centres
    are predicted better than window borders, so they weigh more."""
    profiles = []
    for size in patch:
        offsets = torch.arange(size, dtype=torch.float64) - size // 2
        sigma = max(size * sigma_scale, 1e-6)
        profiles.append(torch.exp(-0.5 * (offsets / sigma) ** 2))
    weights = profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]
    weights = (weights / weights.max()).clamp_min(MIN_GAUSSIAN_WEIGHT)
    return weights.to(device=device, dtype=dtype)


class WindowRunner:
    """Runs the network on a batch of windows: inference mode, fp16 autocast
    on CUDA, float32 on CPU or (`cpu_bfloat16`) bfloat16 autocast there, with
    float32 logits either way; optional channels-last memory layout."""

    def __init__(self, network: nn.Module, device: torch.device, channels_last: bool = False,
                 cpu_bfloat16: bool = False):
        self.device = device
        self.channels_last = channels_last
        self.cpu_bfloat16 = cpu_bfloat16 and device.type == "cpu"
        self.network = network.to(device).eval()
        if channels_last:
            self.network = self.network.to(memory_format=torch.channels_last_3d)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        if self.cpu_bfloat16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, 1, z, y, x) intensities -> (B, classes, z, y, x) logits."""
        if self.channels_last:
            windows = windows.contiguous(memory_format=torch.channels_last_3d)
        with torch.inference_mode(), self._autocast():
            logits = self.network(windows)
        if isinstance(logits, (list, tuple)):  # deep supervision left on: full resolution first
            logits = logits[0]
        return logits.float() if self.cpu_bfloat16 else logits


class SlabAccumulator:
    """Gaussian-weighted logit sums for one patch-deep slab, turned into labels
    as the sliding window moves on in z (see the module docstring)."""

    def __init__(self, num_classes: int, volume_shape: Sequence[int], slab_depth: int,
                 device: torch.device, dtype: torch.dtype):
        depth = min(slab_depth, volume_shape[0])
        self.buffer = torch.zeros((num_classes, depth, *volume_shape[1:]), device=device, dtype=dtype)
        self.labels = torch.zeros(tuple(volume_shape), device=device, dtype=torch.uint8)
        self.origin = 0

    @property
    def depth(self) -> int:
        return self.buffer.shape[1]

    def _finalize(self, rows: int) -> None:
        rows = min(rows, self.labels.shape[0] - self.origin, self.depth)
        if rows > 0:
            self.labels[self.origin:self.origin + rows] = self.buffer[:, :rows].argmax(dim=0).to(torch.uint8)

    def advance_to(self, z: int) -> None:
        """Label every slice before `z`; the slab then starts at `z`."""
        shift = z - self.origin
        if shift <= 0:
            return
        self._finalize(shift)
        if shift < self.depth:
            self.buffer[:, :self.depth - shift] = self.buffer[:, shift:].clone()
            self.buffer[:, self.depth - shift:] = 0
        else:
            self.buffer.zero_()
        self.origin = z

    def add(self, logits: torch.Tensor, weights: torch.Tensor, start: Sequence[int]) -> None:
        """Add `logits` (classes, z, y, x) times `weights` at window `start`."""
        z, y, x = start
        if z < self.origin or z + logits.shape[1] > self.origin + self.depth:
            raise ValueError(f"window at z={z} outside the current slab [{self.origin}, {self.origin + self.depth})")
        local = z - self.origin
        target = self.buffer[:, local:local + logits.shape[1], y:y + logits.shape[2], x:x + logits.shape[3]]
        target.addcmul_(logits.to(self.buffer.dtype), weights)

    def finish(self) -> torch.Tensor:
        """Label the remaining slices and return the whole label volume."""
        self._finalize(self.labels.shape[0] - self.origin)
        self.origin = self.labels.shape[0]
        return self.labels


def batched(items: Sequence, size: int) -> Iterator[Sequence]:
    for begin in range(0, len(items), max(1, size)):
        yield items[begin:begin + max(1, size)]


def crop_windows(volume: torch.Tensor, starts: Sequence[Sequence[int]], patch: Sequence[int]) -> torch.Tensor:
    """(B, 1, *patch) stack of windows of a (Z, Y, X) volume."""
    pz, py, px = patch
    return torch.stack([volume[z:z + pz, y:y + py, x:x + px] for z, y, x in starts])[:, None]


def accumulator_dtype(device: torch.device) -> torch.dtype:
    # Half precision halves the buffer on GPU, where the network runs in fp16
    # anyway; on CPU half arithmetic is slow, so float32.
    return torch.float16 if device.type == "cuda" else torch.float32


def predict_all_windows(volume: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor],
                        patch: Sequence[int], num_classes: int, step_fraction: float = 0.5,
                        batch_size: int = 1, sigma_scale: float = 1.0 / 8) -> tuple[torch.Tensor, WindowCounts]:
    """Labels of a normalised, at-least-patch-sized (Z, Y, X) volume from every
    window on nnU-Net's grid (`fast` mode)."""
    dtype = accumulator_dtype(volume.device)
    weights = gaussian_importance_map(patch, sigma_scale, volume.device, dtype)
    steps = [window_starts(size, p, step_fraction) for size, p in zip(volume.shape, patch)]
    accumulator = SlabAccumulator(num_classes, volume.shape, patch[0], volume.device, dtype)
    counts = WindowCounts()
    for z in steps[0]:
        accumulator.advance_to(z)
        starts = [(z, y, x) for y in steps[1] for x in steps[2]]
        for group in batched(starts, batch_size):
            logits = run(crop_windows(volume, group, patch))
            for start, window_logits in zip(group, logits):
                accumulator.add(window_logits, weights, start)
            counts.evaluated += len(group)
    return accumulator.finish(), counts
