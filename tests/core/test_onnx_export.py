"""The student's ONNX export and the onnxruntime backend, on a tiny fresh network (CPU).

Labels from onnxruntime must agree with torch's; the export records the
checkpoint it came from and is remade exactly when that checkpoint (or the
file itself) changed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from flare_core.io import file_sha256
from flare_core.nnunet.efficient_predictor import StudentPredictor, resolve_backend
from flare_core.nnunet.model_loading import load_student
from flare_core.nnunet.onnx_export import ONNX_NAME, OPSET, RECORD_NAME, ensure_onnx
from flare_core.nnunet.onnx_runner import OnnxWindowRunner
from tests.core.fresh_student import fresh_dataset_json, fresh_plans, write_checkpoint, write_fresh_student
from tests.core.nnunet_fixtures import dice
from tests.core.toy_student import toy_case

THREADS = 1  # a shared 2-core machine: more threads only thrash


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory) -> Path:
    return write_fresh_student(tmp_path_factory.mktemp("fresh") / "nnUNet_results", seed=3)


@pytest.fixture(scope="module")
def model(results_folder):
    return load_student(results_folder)


@pytest.fixture(scope="module")
def case():
    c = toy_case(7)
    return c.image.astype(np.float32), c.geometry


@pytest.fixture()
def own_copy(results_folder, tmp_path) -> Path:
    """A copy of the results folder a test may change."""
    return Path(shutil.copytree(results_folder, tmp_path / results_folder.name))


@pytest.mark.parametrize("mode", ["fast", "fastest"])
def test_onnx_labels_agree_with_torch(model, case, mode):
    image, geometry = case
    by_torch = StudentPredictor(model, mode, device="cpu", num_threads=THREADS, backend="torch")
    by_onnx = StudentPredictor(model, mode, device="cpu", num_threads=THREADS, backend="onnx")
    assert (by_torch.backend, by_onnx.backend) == ("torch", "onnx")
    a, b = by_torch.predict_array(image, geometry), by_onnx.predict_array(image, geometry)
    assert b.backend == "onnx" and b.windows_evaluated == a.windows_evaluated > 0
    classes = sorted(set(np.unique(a.label)) | set(np.unique(b.label)))
    assert len(classes) >= 3, f"the random network should predict several classes, got {classes}"
    scores = {int(c): dice(a.label == c, b.label == c) for c in classes}
    assert min(scores.values()) >= 0.99, scores
    # Measured: float32 onnxruntime and torch give the very same argmax here.
    assert np.mean(a.label == b.label) >= 0.999


def test_the_export_records_its_checkpoint_and_versions(model, results_folder):
    artifact = ensure_onnx(model, results_folder / "fold_all")
    record = json.loads((results_folder / "fold_all" / RECORD_NAME).read_text())
    assert artifact.path == results_folder / "fold_all" / ONNX_NAME
    assert record == artifact.record
    assert record["checkpoint_sha256"] == file_sha256(results_folder / "fold_all" / "checkpoint_final.pth")
    assert record["onnx_sha256"] == file_sha256(artifact.path)
    assert record["opset"] == OPSET >= 17
    assert record["patch_size"] == list(model.plan.patch_size)
    assert record["torch_version"] == torch.__version__ and record["onnxruntime_version"]
    graph = onnx.load(str(artifact.path)).graph
    assert [i.name for i in graph.input] == [record["input_name"]]
    assert [o.name for o in graph.output] == [record["output_name"]]  # one output: no deep supervision
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, *model.plan.patch_size]
    assert not list(results_folder.glob("fold_all/*.data")), "weights must live inside the one .onnx file"


def test_an_up_to_date_export_is_reused(model, results_folder):
    first = ensure_onnx(model, results_folder / "fold_all")
    stamp = first.path.stat().st_mtime_ns
    again = ensure_onnx(model, results_folder / "fold_all")
    assert not again.exported and again.data == first.data
    assert first.path.stat().st_mtime_ns == stamp


def test_a_changed_checkpoint_is_exported_again(own_copy, case):
    old = ensure_onnx(load_student(own_copy), own_copy / "fold_all")
    write_checkpoint(own_copy, fresh_plans(), fresh_dataset_json(), seed=99)  # "retrained"
    retrained = load_student(own_copy)
    new = ensure_onnx(retrained, own_copy / "fold_all")
    assert new.exported and new.record["checkpoint_sha256"] == retrained.checkpoint_sha256
    assert new.record["checkpoint_sha256"] != old.record["checkpoint_sha256"] and new.data != old.data
    # ... and the new file is the new network
    windows = torch.randn(2, 1, *retrained.plan.patch_size)
    with torch.inference_mode():
        expected = retrained.network(windows)
    np.testing.assert_allclose(OnnxWindowRunner(new, THREADS)(windows).numpy(), expected.numpy(), atol=1e-4)


def test_a_damaged_export_is_made_again(own_copy):
    model = load_student(own_copy)
    artifact = ensure_onnx(model, own_copy / "fold_all")
    artifact.path.write_bytes(artifact.data[: len(artifact.data) // 2])  # cut short
    again = ensure_onnx(model, own_copy / "fold_all")
    assert again.exported and again.path.read_bytes() == again.data


def test_auto_falls_back_to_torch_when_no_export_can_be_written(own_copy, caplog):
    target = own_copy / "fold_all" / ONNX_NAME
    target.unlink(missing_ok=True)
    target.mkdir()  # a folder where the export goes: the file cannot be put in place
    model = load_student(own_copy)
    assert StudentPredictor(model, "fast", device="cpu", num_threads=THREADS, backend="auto").backend == "torch"
    assert "ONNX backend unavailable" in caplog.text
    with pytest.raises(OSError):
        StudentPredictor(model, "fast", device="cpu", num_threads=THREADS, backend="onnx")


def test_backend_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", "fastest", cpu) == "onnx"
    assert resolve_backend("auto", "fast", cuda) == "torch"
    assert resolve_backend("auto", "stock", cpu) == "torch"
    assert resolve_backend("torch", "fast", cpu) == "torch"
    for mode, device in (("stock", cpu), ("fast", cuda)):
        with pytest.raises(ValueError):
            resolve_backend("onnx", mode, device)
    with pytest.raises(ValueError):
        resolve_backend("openvino", "fast", cpu)
