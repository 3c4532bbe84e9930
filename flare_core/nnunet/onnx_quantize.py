"""Int8 post-training static quantization of the student's ONNX export (CPU).

`calibration_windows` cuts windows out of a CT exactly as the `fast` /
`fastest` predictor feeds them to the network (reorientation, CT
normalisation, trilinear resampling, padding, the `fastest` 3x3 in-plane grid),
so the activation ranges are those of real inference. `quantize_student`
quantizes an fp32 export with onnxruntime's `quantize_static` (QDQ format,
per-channel int8 weights, uint8 activations, min/max calibration) after
onnxruntime's own pre-processing (shape inference and graph optimisation), and
`quantized_artifact` wraps the result so `OnnxWindowRunner` can run it.

Only convolutions (and transposed convolutions) are quantized: instance norm,
LeakyReLU, the skip concatenations and the additions stay float, the usual
choice for a U-Net whose normalisation layers have per-channel affine
parameters that QDQ would otherwise quantize per tensor.

This is a benchmark path (bench/bench_student_inference.py): the predictor
does not pick it, because whether int8 keeps the accuracy depends on the
model and is measured there.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from flare_core.io import Geometry
from flare_core.nnunet.model_loading import LoadedStudent
from flare_core.nnunet.onnx_export import INPUT_NAME, OUTPUT_NAME, OnnxArtifact

log = logging.getLogger(__name__)

QUANTIZED_OPS = ("Conv", "ConvTranspose")


def preprocessed_volume(model: LoadedStudent, image_zyx: np.ndarray, geometry: Geometry) -> torch.Tensor:
    """The normalised, resampled, patch-padded volume the sliding window runs
    on, in the network's axis order (as StudentPredictor._predict_efficient)."""
    from flare_core.nnunet.torch_preprocessing import normalize_ct, pad_to_patch, resample_volume, resampled_shape
    from flare_core.orientation import ModelInput

    plan = model.plan
    view = ModelInput.of(image_zyx, geometry, model.orientation)
    with torch.inference_mode():
        source = torch.from_numpy(np.ascontiguousarray(view.array)).permute(plan.transpose_forward)
        volume = source.to(torch.float32).contiguous()
        del source
        spacing = [view.geometry.spacing_zyx[axis] for axis in plan.transpose_forward]
        normalize_ct(volume, plan.normalization, plan.intensity_properties)
        volume = resample_volume(volume, resampled_shape(tuple(volume.shape), spacing, plan.target_spacing))
        volume, _ = pad_to_patch(volume, plan.patch_size)
    return volume


def calibration_windows(model: LoadedStudent, image_zyx: np.ndarray, geometry: Geometry, count: int = 8,
                        inplane_positions: int = 3, step_fraction: float = 0.5) -> list[np.ndarray]:
    """`count` (1, 1, *patch) float32 windows spread evenly over the `fastest`
    grid of one CT (z steps of half a patch, a 3x3 in-plane grid)."""
    from flare_core.nnunet.sliding_window import grid_starts, window_starts

    volume = preprocessed_volume(model, image_zyx, geometry)
    patch = model.plan.patch_size
    starts = [(z, y, x)
              for z in window_starts(volume.shape[0], patch[0], step_fraction)
              for y in grid_starts(volume.shape[1], patch[1], inplane_positions)
              for x in grid_starts(volume.shape[2], patch[2], inplane_positions)]
    picks = np.unique(np.linspace(0, len(starts) - 1, num=min(count, len(starts))).round().astype(int))
    windows = []
    for index in picks:
        z, y, x = starts[index]
        window = volume[z:z + patch[0], y:y + patch[1], x:x + patch[2]]
        windows.append(np.ascontiguousarray(window.numpy(), dtype=np.float32)[None, None])
    return windows


class _WindowReader:
    """onnxruntime's CalibrationDataReader over a list of windows."""

    def __init__(self, windows: Iterable[np.ndarray]):
        self._all = list(windows)
        self._windows = iter(self._all)

    def get_next(self) -> dict[str, np.ndarray] | None:
        window = next(self._windows, None)
        return None if window is None else {INPUT_NAME: window}

    def rewind(self) -> None:
        self._windows = iter(self._all)


def quantize_student(source: Path, target: Path, windows: Sequence[np.ndarray], *, per_channel: bool = True,
                     op_types: Sequence[str] = QUANTIZED_OPS, keep_first_last_float: bool = True) -> dict[str, Any]:
    """Write the int8 QDQ model of the fp32 export `source` to `target`;
    returns a record of what was done (seconds, sizes, settings).

    `keep_first_last_float`: the first convolution (which sees the raw
    normalised intensities) and the last one (the segmentation head, whose
    output is the logits the argmax compares) stay float, the usual guard of
    a quantized segmentation network's accuracy; they are a small share of
    the work."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    started = time.perf_counter()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        tmp = Path(scratch) / target.name
        excluded = _first_and_last(prepared, op_types) if keep_first_last_float else []
        quantize_static(str(prepared), str(tmp), _WindowReader(windows), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        # MinMax keeps only each tensor's reduced min / max per window, so all
                        # windows go in at once. (CalibMaxIntermediateOutputs is no help: in
                        # onnxruntime 1.32 it drops the collected ranges instead of merging them.)
                        op_types_to_quantize=list(op_types), calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=excluded)
        tmp.replace(target)
    data = target.read_bytes()
    record = {"source": str(source), "path": str(target), "format": "QDQ", "per_channel": per_channel,
              "activation_type": "uint8", "weight_type": "int8", "calibration": "minmax",
              "calibration_windows": len(windows), "op_types": list(op_types), "float_nodes": excluded,
              "onnx_sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
              "source_bytes": Path(source).stat().st_size,
              "seconds": round(time.perf_counter() - started, 2)}
    log.info("quantized %s -> %s (%.1f MB) in %.1f s", source, target, len(data) / 2**20, record["seconds"])
    return record


def _first_and_last(model_path: Path, op_types: Sequence[str]) -> list[str]:
    """Names of the first and the last node of `op_types` in graph order."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    names = [node.name for node in graph.node if node.op_type in op_types]
    return sorted({names[0], names[-1]}) if names else []


def quantized_artifact(path: Path) -> OnnxArtifact:
    """An `OnnxArtifact` over a quantized file, for `OnnxWindowRunner`."""
    data = Path(path).read_bytes()
    record = {"input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
              "onnx_sha256": hashlib.sha256(data).hexdigest(), "quantized": True}
    return OnnxArtifact(Path(path), record, data, exported=False)
