"""The trained student's network as an ONNX file beside its checkpoint.

`ensure_onnx` exports `<results>/fold_<f>/student.onnx` once and records in
`student.onnx.json` what it was made from (the checkpoint's sha256, the opset,
the torch / onnx / onnxruntime versions, the patch size, the input and output
names) and the ONNX file's own sha256. The next call reuses the file while the
record still matches the loaded checkpoint and the file's bytes, and exports
afresh otherwise (a retrained model, a changed patch, an export cut short).

The graph takes (batch, 1, *patch) windows in the network's axis order and
returns (batch, classes, *patch) logits; the batch axis is dynamic, the patch
fixed (the sliding window only ever feeds whole patches). Deep supervision is
off: only the full-resolution output is exported.

Exporter (measured with torch 2.13 CPU, onnx 1.23, onnxscript 0.7,
onnxruntime 1.32 on nnU-Net's PlainConvUNet): the default torch.export-based
exporter (`dynamo=True`, needs `onnxscript`) and the legacy TorchScript one
(`dynamo=False`) both give logits within 2e-6 of torch and the same argmax.
The legacy one is deprecated ("will be removed"), so the default is used,
with `external_data=False` (else the weights go to a separate `.onnx.data`
file that an atomic replace of one file cannot keep consistent) and
`verbose=False` (else it prints its progress to stdout).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flare_core.io import atomic_path, write_json
from flare_core.nnunet.model_loading import LoadedStudent

log = logging.getLogger(__name__)

ONNX_NAME = "student.onnx"
RECORD_NAME = "student.onnx.json"
OPSET = 18
INPUT_NAME = "windows"
OUTPUT_NAME = "logits"
# Bumped when the export itself changes (names, axes, exporter), so old files are remade.
FORMAT_VERSION = 1
# torch.export specialises a dimension whose example size is 1: the example batch must be larger.
EXAMPLE_BATCH = 2


@dataclass(frozen=True)
class OnnxArtifact:
    """An exported network: where it lies, its record, and its verified bytes
    (the session is built from these very bytes, not from a second read)."""

    path: Path
    record: dict[str, Any]
    data: bytes
    exported: bool  # False when an existing export was reused


def onnx_paths(fold_folder: Path) -> tuple[Path, Path]:
    """(model file, record file) in a results folder's fold folder."""
    return Path(fold_folder) / ONNX_NAME, Path(fold_folder) / RECORD_NAME


def ensure_onnx(model: LoadedStudent, fold_folder: Path) -> OnnxArtifact:
    """The ONNX export of `model`, made now unless an up-to-date one exists."""
    path, record_path = onnx_paths(fold_folder)
    wanted = _expected_record(model)
    reused = _reusable(path, record_path, wanted)
    if reused is not None:
        log.info("ONNX export %s is up to date with checkpoint %s...", path, wanted["checkpoint_sha256"][:12])
        return reused
    return export_onnx(model, fold_folder)


def export_onnx(model: LoadedStudent, fold_folder: Path) -> OnnxArtifact:
    """Export `model`'s network (atomically) and write its record."""
    path, record_path = onnx_paths(fold_folder)
    started = time.perf_counter()
    network = _inference_copy(model.network)
    example = torch.zeros((EXAMPLE_BATCH, 1, *model.plan.patch_size), dtype=torch.float32)
    with atomic_path(path) as tmp, torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # torch 2.13's own exporter trips over a pytree deprecation of its own making
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        torch.onnx.export(network, (example,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    data = path.read_bytes()
    # The model file first, its record second: a crash in between leaves a record
    # whose onnx_sha256 no longer matches, and the next call exports again.
    record = {**_expected_record(model), "onnx_sha256": hashlib.sha256(data).hexdigest(),
              "export_seconds": round(time.perf_counter() - started, 2)}
    write_json(record, record_path)
    log.info("exported %s (%.1f MB) in %.1f s", path, len(data) / 2**20, record["export_seconds"])
    return OnnxArtifact(path, record, data, exported=True)


def _inference_copy(network: torch.nn.Module) -> torch.nn.Module:
    """A CPU float32 copy in eval mode with deep supervision off, so that the
    export neither moves nor changes the network the torch backend uses."""
    network = copy.deepcopy(network).to("cpu", torch.float32).eval()
    decoder = getattr(network, "decoder", None)
    if decoder is not None and hasattr(decoder, "deep_supervision"):
        decoder.deep_supervision = False
    return network


def _expected_record(model: LoadedStudent) -> dict[str, Any]:
    """What a record must say for its ONNX file to stand for `model`."""
    if not model.checkpoint_sha256:
        raise ValueError("the model has no checkpoint hash: load it from its results folder (load_student)")
    return {
        "format_version": FORMAT_VERSION,
        "checkpoint_sha256": model.checkpoint_sha256,
        "opset": OPSET,
        "patch_size": list(model.plan.patch_size),
        "num_classes": model.plan.num_classes,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "dynamic_axes": {INPUT_NAME: [0], OUTPUT_NAME: [0]},
        "torch_version": torch.__version__,
        "onnx_version": _version("onnx"),
        "onnxruntime_version": _version("onnxruntime"),
    }


# Fields that decide whether an existing export still stands for the model;
# the tool versions are recorded for provenance only (a newer onnxruntime
# runs an older file).
_DECISIVE = ("format_version", "checkpoint_sha256", "opset", "patch_size", "num_classes", "input_name",
             "output_name")


def _reusable(path: Path, record_path: Path, wanted: dict[str, Any]) -> OnnxArtifact | None:
    record = _read_record(record_path)
    if record is None or not path.is_file():
        return None
    stale = [key for key in _DECISIVE if record.get(key) != wanted[key]]
    if stale:
        log.info("ONNX export %s is stale (%s differ): exporting again", path, ", ".join(stale))
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != record.get("onnx_sha256"):
        log.warning("ONNX file %s does not match its record (changed or cut short): exporting again", path)
        return None
    return OnnxArtifact(path, record, data, exported=False)


def _read_record(record_path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(Path(record_path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
