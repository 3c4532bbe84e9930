"""Sliding-window batches through onnxruntime instead of torch (CPU backend).

`OnnxWindowRunner` is called exactly like `sliding_window.WindowRunner`:
(B, 1, z, y, x) float32 windows in, (B, classes, z, y, x) logits out, both
torch tensors on the CPU, so the sliding window, the `fastest` rules and the
accumulation stay the torch code they are; only the network runs elsewhere.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from flare_core.nnunet.onnx_export import OnnxArtifact

log = logging.getLogger(__name__)


def onnx_available() -> bool:
    """Whether onnxruntime is installed (it is a dependency, but `auto` must
    not fail where someone removed it)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxWindowRunner:
    """An onnxruntime CPU session over an exported student network."""

    def __init__(self, artifact: OnnxArtifact, num_threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(num_threads))
        # One graph, one window batch at a time: parallelism inside operators only.
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle onnxruntime threads would otherwise spin between window batches,
        # taking the cores torch needs for the accumulation in between.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(artifact.data, options, providers=["CPUExecutionProvider"])
        self.input_name = artifact.record["input_name"]
        self.output_name = artifact.record["output_name"]
        log.info("onnxruntime %s session on %s: %d threads", ort.__version__, artifact.path.name,
                 options.intra_op_num_threads)

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, 1, z, y, x) intensities -> (B, classes, z, y, x) logits."""
        if windows.device.type != "cpu":
            raise ValueError(f"the ONNX backend runs on the CPU; got windows on {windows.device}")
        batch = np.ascontiguousarray(windows.detach().numpy(), dtype=np.float32)
        (logits,) = self.session.run([self.output_name], {self.input_name: batch})
        return torch.from_numpy(logits)
