"""Predicting cases with the trained student, in one of three modes.

* `stock`: nnU-Net v2's own `nnUNetPredictor`, in-process
  (`predict_single_npy_array`), Gaussian sliding window with step 0.5, test-time
  mirroring on or off. The reference the other modes are compared with.
* `fast`: one fold, no mirroring, no nonzero cropping; normalisation and
  trilinear resampling in torch on the inference device; Gaussian sliding
  window on nnU-Net's grid (fp16 on GPU, float32 on CPU) keeping only the
  argmax; the label map resized (nearest) back to the original grid.
* `fastest`: `fast` plus the FLARE22 window-skipping rules
  (`flare_core.nnunet.fastest_rules`), after a cheap localisation of the
  body (`flare_core.nnunet.body_box`, `localise`): only the box around the
  patient is resampled and slid over, with as few in-plane windows as cover
  it (2 x 2 on an abdomen instead of FLARE22's 3 x 3 over the whole field of
  view); everything outside the box is background. `localise=False` gives
  FLARE22's own whole-image grid.

The model is loaded once (`StudentPredictor.from_results`) and then predicts
any number of cases. In `fast` and `fastest` the network runs either in torch
(backend `torch`) or, on the CPU, through onnxruntime on an ONNX export kept
beside the checkpoint (backend `onnx`, `flare_core.nnunet.onnx_export`);
`auto` takes onnx on the CPU and torch on CUDA. `stock` is nnU-Net's own
predictor and always runs torch.

Precision (`PRECISIONS`): on the CPU the torch backend runs in `float32`, or
in `bfloat16` autocast (about 2x faster on CPUs with native bfloat16,
AVX-512 BF16 / AMX, and slower elsewhere; labels of small classes can differ
from float32's, see the README's figures). `auto` takes bfloat16 where the
CPU has it natively and the mode and backend allow it, float32 otherwise.
On CUDA the network always runs in float16 autocast.

In every mode the image is first reoriented to the model's orientation
(`LoadedStudent.orientation`, from the model folder's dataset.json; a model
without one reads stored order) and the label map put back on the input's
grid. Labels come back in SimpleITK's (z, y, x) order
with the input image's exact geometry.
"""
from __future__ import annotations

import logging
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from flare_core.io import Geometry, read_ct, write_volume
from flare_core.nnunet.body_box import Box, body_box, box_fraction, whole
from flare_core.label_counts import foreground_counts
from flare_core.nnunet.environment import configure_threads, select_device
from flare_core.nnunet.fastest_rules import FastestRules, StepTrace, predict_with_rules
from flare_core.nnunet.model_loading import CHECKPOINT, LoadedStudent, load_student
from flare_core.nnunet.onnx_export import OnnxArtifact, ensure_onnx
from flare_core.nnunet.onnx_runner import OnnxWindowRunner, onnx_available
from flare_core.nnunet.sliding_window import WindowCounts, WindowRunner, predict_all_windows
from flare_core.nnunet.torch_preprocessing import (
    normalize_ct,
    pad_to_patch,
    resample_volume,
    resampled_shape,
    resize_labels,
)
from flare_core.orientation import ModelInput, restore_array

log = logging.getLogger(__name__)

MODES = ("stock", "fast", "fastest")
BACKENDS = ("auto", "torch", "onnx")
PRECISIONS = ("float32", "bfloat16", "auto")


@dataclass
class PredictionResult:
    """One predicted case. `label` is uint8 (z, y, x) on the image's grid.

    `peak_memory_bytes`: on CUDA the peak GPU memory torch allocated during
    this prediction; on CPU the process's peak resident memory so far (VmHWM;
    the operating system keeps no per-call peak: run one mode per process to
    compare modes).
    """

    label: np.ndarray
    geometry: Geometry
    seconds: float
    windows_evaluated: int
    windows_skipped: int
    class_voxel_counts: dict[int, int]
    mode: str
    peak_memory_bytes: int | None = None
    case_id: str | None = None
    output_path: Path | None = None
    step_trace: list[StepTrace] = field(default_factory=list)
    backend: str = "torch"
    precision: str = "float32"
    region_fraction: float = 1.0  # the share of the image's voxels slid over (the body box when localising)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description without the label array."""
        return {
            "case_id": self.case_id,
            "mode": self.mode,
            "backend": self.backend,
            "precision": self.precision,
            "seconds": round(self.seconds, 3),
            "windows_evaluated": self.windows_evaluated,
            "windows_skipped": self.windows_skipped,
            "region_fraction": round(self.region_fraction, 4),
            "peak_memory_bytes": self.peak_memory_bytes,
            "class_voxel_counts": {str(k): v for k, v in self.class_voxel_counts.items()},
            "output_path": str(self.output_path) if self.output_path else None,
        }


class _CountingPredictor(nnUNetPredictor):
    """nnU-Net's predictor, remembering how many windows its last case had."""

    last_window_count = 0

    def _internal_get_sliding_window_slicers(self, image_size):
        slicers = super()._internal_get_sliding_window_slicers(image_size)
        self.last_window_count = len(slicers)
        return slicers


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far.

    Linux's VmHWM belongs to the process's own address space. getrusage's
    ru_maxrss is kept across exec, so a worker started by a large parent
    would report the parent's size; it is only the fallback off Linux.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


class StudentPredictor:
    """A loaded student and one inference mode; predicts case after case."""

    def __init__(self, model: LoadedStudent, mode: str = "fastest", *, device: str | torch.device = "auto",
                 num_threads: int | None = None, mirroring: bool = False, tile_step_size: float = 0.5,
                 rules: FastestRules | None = None, window_batch_size: int = 1, channels_last: bool = False,
                 mirror_axes: tuple[int, ...] | None = None, backend: str = "torch", fold: str | int = "all",
                 precision: str = "float32", localise: bool | None = None):
        """`num_threads`: torch CPU threads (default: every CPU this process may
        use). `tile_step_size`: window step as a fraction of the patch (z steps
        for `fastest`). `mirroring` and `mirror_axes` apply to `stock` only:
        test-time mirroring over `mirror_axes`, by default the axes the
        checkpoint allows (none for a student trained without mirroring, as
        FLARE22's was). `rules`: the `fastest` thresholds, by default FLARE22's
        scaled to this model's patch (`FastestRules.scaled_to_patch`), with
        2 in-plane positions (as few as cover the axis) when localising and
        FLARE22's 3 otherwise. `localise`: crop to the body before resampling
        (default: on in `fastest`, off in `fast`, never in `stock`).
        `window_batch_size` windows go through the network at once;
        `channels_last` uses torch's channels-last-3d layout (neither changed
        CPU speed measurably here, so both are off by default). `backend`:
        one of `BACKENDS` (see the module docstring); the ONNX export is made
        in `fold_<fold>` of the model's results folder when it is missing or
        stale. `precision`: one of `PRECISIONS`; `bfloat16` is the torch
        backend's on the CPU (`auto` then means torch)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.model = model
        self.mode = mode
        self.device = select_device(device)
        # Set deliberately: torch's default may count cores this process may not use.
        self.num_threads = configure_threads(num_threads)
        self.mirroring = mirroring
        self.mirror_axes = tuple(mirror_axes) if mirror_axes is not None else model.mirror_axes
        if mode == "stock" and mirroring and not self.mirror_axes:
            log.warning("mirroring requested but the checkpoint allows no mirror axes: nnU-Net will not mirror")
        self.tile_step_size = tile_step_size
        if localise and mode == "stock":
            raise ValueError("localise runs the fast and fastest modes; stock is nnU-Net's own predictor")
        self.localise = mode == "fastest" if localise is None else localise
        slab_patch = [model.plan.patch_size[axis] for axis in slab_order(model.plan.transpose_forward)]
        self.rules = rules or FastestRules.scaled_to_patch(slab_patch, inplane_positions=2 if self.localise else 3)
        self.window_batch_size = window_batch_size
        self.precision = resolve_precision(precision, mode, backend, self.device)
        if self.precision == "bfloat16" and backend == "auto":
            backend = "torch"
        self.backend = resolve_backend(backend, mode, self.device)
        self._stock: _CountingPredictor | None = None
        self._runner: WindowRunner | OnnxWindowRunner | None = None
        self.onnx_artifact: OnnxArtifact | None = None  # the export the onnx backend runs
        if mode == "stock":
            self._stock = self._make_stock_predictor()
        elif self.backend == "onnx":
            self._runner = self._make_onnx_runner(fold, fallback=backend == "auto")
        if mode != "stock" and self._runner is None:
            self.backend = "torch"
            if self.device.type == "cuda":
                torch.backends.cudnn.benchmark = True  # one patch size: autotuning pays off
            self._runner = WindowRunner(model.network, self.device, channels_last=channels_last,
                                        cpu_bfloat16=self.precision == "bfloat16")
        log.info("student predictor: mode=%s backend=%s precision=%s device=%s threads=%d orientation=%s "
                 "localise=%s%s", mode, self.backend, self.precision, self.device, self.num_threads,
                 model.orientation or "stored order", self.localise, f" rules={self.rules}" if mode == "fastest" else "")

    @classmethod
    def from_results(cls, results_folder: Path, mode: str = "fastest", device: str | torch.device = "auto",
                     num_threads: int | None = None, fold: str | int = "all",
                     checkpoint_name: str = CHECKPOINT, **options) -> "StudentPredictor":
        """Load a nnU-Net v2 results folder once; `options` go to the constructor."""
        model = load_student(Path(results_folder), fold=fold, checkpoint_name=checkpoint_name)
        return cls(model, mode, device=device, num_threads=num_threads, fold=fold, **options)

    def _make_onnx_runner(self, fold: str | int, fallback: bool) -> OnnxWindowRunner | None:
        """The ONNX runner; with `fallback` (backend `auto`) None instead of an
        error when the export cannot be made or loaded, and torch runs."""
        try:
            if self.model.results_folder is None:
                raise ValueError("the onnx backend needs the model's results folder (load it with load_student)")
            artifact = ensure_onnx(self.model, self.model.results_folder / f"fold_{fold}")
            runner = OnnxWindowRunner(artifact, self.num_threads)
        except Exception as error:  # noqa: BLE001 - auto must still predict, with torch
            if not fallback:
                raise
            log.warning("ONNX backend unavailable (%s: %s): running the network in torch",
                        type(error).__name__, error)
            return None
        self.onnx_artifact = artifact
        return runner

    def _make_stock_predictor(self) -> _CountingPredictor:
        return self.model.nnunet_predictor(self.device, tile_step_size=self.tile_step_size, mirroring=self.mirroring,
                                           mirror_axes=self.mirror_axes, predictor_class=_CountingPredictor)

    # ---------------------------------------------------------------- cases

    def predict_case(self, image_path: Path, case_id: str, output_path: Path | None = None) -> PredictionResult:
        """Read a CT, predict it, optionally write the label map atomically with
        the image's geometry. `seconds` covers reading, predicting and writing."""
        started = time.perf_counter()
        image, geometry = read_ct(Path(image_path), case_id)
        result = self.predict_array(image, geometry)
        del image
        result.case_id = case_id
        if output_path is not None:
            result.output_path = write_volume(result.label, geometry, Path(output_path))
        result.seconds = time.perf_counter() - started
        log.info("%s: %s %.2f s, windows %d run / %d skipped", case_id, self.mode, result.seconds,
                 result.windows_evaluated, result.windows_skipped)
        return result

    def predict_array(self, image_zyx: np.ndarray, geometry: Geometry) -> PredictionResult:
        """Predict a (z, y, x) CT array whose placement is `geometry`; the label
        map comes back on that array's own grid."""
        if tuple(image_zyx.shape) != geometry.shape_zyx:
            raise ValueError(f"image shape {image_zyx.shape} does not match geometry {geometry.shape_zyx}")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        view = ModelInput.of(image_zyx, geometry, self.model.orientation)
        trace: list[StepTrace] = []
        fraction = 1.0
        if self.mode == "stock":
            label, counts = self._predict_stock(view.array, view.geometry.spacing_zyx)
        else:
            label, counts, trace, fraction = self._predict_efficient(view.array, view.geometry.spacing_zyx)
        model_geometry = view.geometry
        del view  # a reoriented copy of the image: free it before the label map is put back
        label = restore_array(np.ascontiguousarray(label, dtype=np.uint8), model_geometry, geometry)
        label = np.ascontiguousarray(label)
        return PredictionResult(
            label=label, geometry=geometry, seconds=time.perf_counter() - started,
            windows_evaluated=counts.evaluated, windows_skipped=counts.skipped,
            class_voxel_counts=foreground_counts(label, self.model.plan.num_classes),
            mode=self.mode, peak_memory_bytes=self._peak_memory(), step_trace=trace, backend=self.backend,
            precision=self.precision, region_fraction=fraction,
        )

    def _peak_memory(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return peak_rss_bytes()

    # ---------------------------------------------------------------- modes

    def _predict_stock(self, image: np.ndarray, spacing_zyx: Sequence[float]) -> tuple[np.ndarray, WindowCounts]:
        assert self._stock is not None
        # nnU-Net's SimpleITK reader gives (c, z, y, x) and spacing in (z, y, x): the same as ours.
        label = self._stock.predict_single_npy_array(image[None].astype(np.float32, copy=False),
                                                     {"spacing": [float(s) for s in spacing_zyx]})
        return label, WindowCounts(evaluated=self._stock.last_window_count)

    def _predict_efficient(self, image: np.ndarray, spacing_zyx: Sequence[float]
                           ) -> tuple[np.ndarray, WindowCounts, list[StepTrace], float]:
        """`fast` / `fastest` on the body's box (the whole image unless
        localising); voxels outside the box are background. Also returns the
        share of the image inside the box."""
        box = self._box(image, spacing_zyx)
        if box == whole(image.shape):
            return (*self._predict_region(image, spacing_zyx), 1.0)
        labels, counts, trace = self._predict_region(image[box], spacing_zyx)
        full = np.zeros(image.shape, dtype=np.uint8)
        full[box] = labels
        return full, counts, trace, box_fraction(box, image.shape)

    def _box(self, image: np.ndarray, spacing_zyx: Sequence[float]) -> Box:
        if not self.localise:
            return whole(image.shape)
        plan = self.model.plan
        # The box holds at least one window, so no padding stands in for the air around the body.
        window_mm = [0.0, 0.0, 0.0]
        for position, axis in enumerate(plan.transpose_forward):
            window_mm[axis] = plan.patch_size[position] * plan.target_spacing[position]
        box = body_box(image, spacing_zyx, window_mm)
        log.debug("body box %s: %.0f%% of the image", box, 100 * box_fraction(box, image.shape))
        return box

    def _predict_region(self, image: np.ndarray, spacing_zyx: Sequence[float]
                        ) -> tuple[np.ndarray, WindowCounts, list[StepTrace]]:
        plan = self.model.plan
        with torch.inference_mode():
            # One copy (dtype, axis order and device at once): normalisation
            # works in place and must not touch the caller's array. A crop is
            # a strided view, which torch reads as is; only flips need a copy.
            if any(stride < 0 for stride in image.strides):
                image = np.ascontiguousarray(image)
            source = torch.from_numpy(image).permute(plan.transpose_forward)
            volume = torch.empty(source.shape, dtype=torch.float32, device=self.device).copy_(source)
            del source
            original_shape = tuple(volume.shape)
            spacing = [spacing_zyx[axis] for axis in plan.transpose_forward]
            normalize_ct(volume, plan.normalization, plan.intensity_properties)
            volume = resample_volume(volume, resampled_shape(original_shape, spacing, plan.target_spacing))
            volume, unpad = pad_to_patch(volume, plan.patch_size)
            labels, counts, trace = self._slide(volume)
            del volume
            labels = resize_labels(labels[unpad], original_shape)
            labels = labels.permute(plan.transpose_backward).cpu().numpy()
        return labels, counts, trace

    def _slide(self, volume: torch.Tensor) -> tuple[torch.Tensor, WindowCounts, list[StepTrace]]:
        """Slide along the image's own z axis, wherever the plans put it.

        nnU-Net puts the coarsest axis first (`transpose_forward`), which for
        some data sets is not z. The sliding window steps along its first
        axis, and the `fastest` rules are about z steps (air above and below
        the abdomen), so the volume is viewed with z first and every window
        is handed to the network in the network's own axis order.
        """
        plan = self.model.plan
        order = slab_order(plan.transpose_forward)
        inverse = tuple(order.index(axis) for axis in range(3))
        patch = tuple(plan.patch_size[axis] for axis in order)
        run = self._runner
        if order != (0, 1, 2):
            volume = volume.permute(order).contiguous()

            def run(windows: torch.Tensor) -> torch.Tensor:
                logits = self._runner(windows.permute(0, 1, *(2 + a for a in inverse)))
                return logits.permute(0, 1, *(2 + a for a in order))

        if self.mode == "fast":
            labels, counts = predict_all_windows(volume, run, patch, plan.num_classes, self.tile_step_size,
                                                 self.window_batch_size)
            trace: list[StepTrace] = []
        else:
            labels, counts, trace = predict_with_rules(volume, run, patch, plan.num_classes, self.rules,
                                                       self.tile_step_size, self.window_batch_size)
        return labels.permute(inverse), counts, trace


def resolve_backend(backend: str, mode: str, device: torch.device) -> str:
    """`torch` or `onnx` for a requested backend (`BACKENDS`), mode and device.

    `stock` is nnU-Net's predictor and runs torch whatever `auto` says; the
    ONNX session runs on the CPU only (CPUExecutionProvider)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "onnx" and mode == "stock":
        raise ValueError("the onnx backend runs the fast and fastest modes; stock is nnU-Net's own torch predictor")
    if backend == "onnx" and device.type != "cpu":
        raise ValueError(f"the onnx backend runs on the CPU only, not on {device}")
    if backend == "auto":
        return "onnx" if mode != "stock" and device.type == "cpu" and onnx_available() else "torch"
    return backend


def resolve_precision(precision: str, mode: str, backend: str, device: torch.device) -> str:
    """The network's precision on the CPU (`PRECISIONS`); `float16` on CUDA whatever is asked."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        precision = _automatic_precision(mode, backend, device)
    if precision == "float32" or device.type != "cpu":
        return "float16" if device.type == "cuda" else precision
    if mode == "stock":
        raise ValueError("bfloat16 runs the fast and fastest modes; stock is nnU-Net's own float32 predictor")
    if backend == "onnx":
        raise ValueError("bfloat16 runs in torch; the onnx backend runs float32")
    from flare_core.nnunet.environment import cpu_has_native_bfloat16

    if not cpu_has_native_bfloat16():
        log.warning("this CPU has no native bfloat16 (AVX-512 BF16 / AMX): bfloat16 will be slower than float32")
    return precision


def _automatic_precision(mode: str, backend: str, device: torch.device) -> str:
    """bfloat16 where it is fast and allowed (a CPU with native bfloat16, not
    stock, not an explicit onnx backend), float32 elsewhere."""
    from flare_core.nnunet.environment import cpu_has_native_bfloat16

    if device.type != "cpu" or mode == "stock" or backend == "onnx" or not cpu_has_native_bfloat16():
        return "float32"
    return "bfloat16"


def slab_order(transpose_forward: Sequence[int]) -> tuple[int, int, int]:
    """Network axes reordered so that the image's z axis (SimpleITK array axis
    0) comes first, the other two keeping their order."""
    z_axis = list(transpose_forward).index(0)
    return (z_axis, *(axis for axis in range(3) if axis != z_axis))
