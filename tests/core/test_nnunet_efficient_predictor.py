"""The three inference modes on a real (tiny) trained nnU-Net v2 student.

A module fixture runs nnU-Net's whole pipeline on synthetic CT (raw dataset,
fingerprint, ExperimentPlanner, preprocessing, a short training on CPU) and
yields a standard results folder; every mode loads it as it would a real one.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flare_core.io import Geometry, read_geometry, read_label, read_volume, write_volume
from flare_core.labels import AORTA, LIVER
from flare_core.nnunet.efficient_predictor import StudentPredictor
from flare_core.nnunet.environment import scoped_env
from flare_core.orientation import CANONICAL_ORIENTATION, DATASET_JSON_KEY, reorient_array
from tests.core.nnunet_fixtures import stored_ras_like
from tests.core.toy_student import AIR_HU, build_toy_student, toy_case

FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
SPACING_XYZ = (0.8, 0.8, 3.0)
MODES = [("stock", False), ("stock", True), ("fast", False), ("fastest", False)]


@pytest.fixture(scope="module")
def results_folder(tmp_path_factory) -> Path:
    # nnU-Net's folder variables only for the build, so other tests see none of them
    with scoped_env(nnUNet_raw=None, nnUNet_preprocessed=None, nnUNet_results=None):
        return build_toy_student(tmp_path_factory.mktemp("toy_student"))


@pytest.fixture(scope="module")
def predictors(results_folder) -> dict:
    return {(mode, mirroring): StudentPredictor.from_results(results_folder, mode, device="cpu",
                                                             mirroring=mirroring)
            for mode, mirroring in MODES}


@pytest.fixture(scope="module")
def case_file(tmp_path_factory) -> tuple[Path, np.ndarray, Geometry]:
    case = toy_case(4242, spacing_xyz=SPACING_XYZ, direction=FLIPPED)
    geometry = Geometry(case.geometry.size, case.geometry.spacing, (-120.5, 80.25, -300.0), FLIPPED)
    path = write_volume(case.image, geometry, tmp_path_factory.mktemp("cases") / "toy_0000.nii.gz")
    return path, case.labels, geometry


@pytest.fixture(scope="module")
def predictions(predictors, case_file, tmp_path_factory) -> dict:
    path, _, _ = case_file
    out = tmp_path_factory.mktemp("predictions")
    return {key: predictor.predict_case(path, "toy", out / f"{key[0]}_{key[1]}.nii.gz")
            for key, predictor in predictors.items()}


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    a, b = a == label, b == label
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


@pytest.mark.parametrize("key", MODES, ids=[f"{m}-mirror" if r else m for m, r in MODES])
def test_every_mode_writes_the_images_exact_geometry(predictions, case_file, key):
    _, truth, geometry = case_file
    result = predictions[key]
    written, written_geometry = read_label(result.output_path, "toy", image_geometry=geometry)
    assert written_geometry.differences(geometry) == []
    assert written.shape == truth.shape == result.label.shape
    np.testing.assert_array_equal(written, result.label)
    assert result.windows_evaluated > 0 and result.peak_memory_bytes > 0


@pytest.mark.parametrize("key", MODES, ids=[f"{m}-mirror" if r else m for m, r in MODES])
def test_the_trained_student_finds_the_organ(predictions, case_file, key):
    _, truth, _ = case_file
    assert dice(predictions[key].label, truth, LIVER) > 0.6


def test_fast_agrees_with_stock_without_mirroring(predictions):
    stock, fast = predictions[("stock", False)], predictions[("fast", False)]
    assert fast.windows_evaluated == stock.windows_evaluated  # same nnU-Net window grid
    assert dice(fast.label, stock.label, LIVER) > 0.85
    assert dice(fast.label, stock.label, AORTA) > 0.6


def padded_with_air(image: np.ndarray, labels: np.ndarray, slices: int) -> tuple[np.ndarray, np.ndarray]:
    pad = ((slices, slices), (0, 0), (0, 0))
    return np.pad(image, pad, constant_values=AIR_HU), np.pad(labels, pad)


def grid_size(trace) -> int:
    """Windows per z step (centre + outer, run or skipped): the same for every step."""
    sizes = {1 + step.outer_run + step.outer_skipped for step in trace}
    assert len(sizes) == 1, sizes
    return sizes.pop()


def padded_case(seed: int, slices: int = 40) -> tuple[np.ndarray, np.ndarray, Geometry]:
    case = toy_case(seed, spacing_xyz=SPACING_XYZ, direction=FLIPPED)
    image, labels = padded_with_air(case.image, case.labels, slices)
    geometry = Geometry((image.shape[2], image.shape[1], image.shape[0]), case.geometry.spacing,
                        case.geometry.origin, FLIPPED)
    return image.astype(np.float32), labels, geometry


def test_fastest_skips_air_and_agrees_with_fast_where_the_organs_are(predictors, results_folder):
    """FLARE22's rules on its own whole-image 3 x 3 grid (no localisation)."""
    image, _, geometry = padded_case(777)
    whole_image = StudentPredictor.from_results(results_folder, "fastest", device="cpu", localise=False)
    fast = predictors[("fast", False)].predict_array(image, geometry)
    fastest = whole_image.predict_array(image, geometry)
    assert fastest.windows_skipped > 0 and fastest.windows_evaluated < fast.windows_evaluated
    # the full 3 x 3 in-plane grid over every z step, run or skipped
    z_steps = {step.z for step in fastest.step_trace}
    assert grid_size(fastest.step_trace) == 9
    assert fastest.windows_evaluated + fastest.windows_skipped >= 9 * len(z_steps)
    air = np.concatenate([fastest.label[:30], fastest.label[-30:]])
    assert (air > 0).mean() < 0.005  # air stays background, up to a few stray voxels
    assert dice(fastest.label, fast.label, LIVER) > 0.9
    assert fastest.label.shape == image.shape


def test_localised_fastest_slides_over_the_body_only(predictors, results_folder):
    """The default `fastest` crops to the body box: fewer windows than the
    whole-image grid, nothing outside the box, the same organs."""
    image, truth, geometry = padded_case(778)
    localised = predictors[("fastest", False)]
    assert localised.localise
    whole_image = StudentPredictor.from_results(results_folder, "fastest", device="cpu", localise=False)
    a, b = localised.predict_array(image, geometry), whole_image.predict_array(image, geometry)
    assert a.windows_evaluated + a.windows_skipped < b.windows_evaluated + b.windows_skipped
    assert a.region_fraction < 0.5 and b.region_fraction == 1.0  # 80 of 104 slices are air
    assert a.label.shape == image.shape == b.label.shape
    # 40 slices of air on each side; the box keeps a 10 mm margin and one window's depth
    assert not a.label[:20].any() and not a.label[-20:].any()
    # The toy network sees different window borders, so the two differ a little; against the
    # truth the localised one is as good (measured: 0.88 vs 0.85 liver, 5 windows vs 33).
    assert dice(a.label, truth, LIVER) > max(0.6, dice(b.label, truth, LIVER) - 0.03)
    assert dice(a.label, truth, AORTA) > max(0.5, dice(b.label, truth, AORTA) - 0.03)


def test_localising_is_refused_for_stock(results_folder):
    with pytest.raises(ValueError, match="localise"):
        StudentPredictor.from_results(results_folder, "stock", device="cpu", localise=True)


def test_fastest_window_counts_add_up(predictors, case_file):
    path, _, _ = case_file
    result = predictors[("fastest", False)].predict_case(path, "toy")
    trace = result.step_trace
    run_outer = sum(step.outer_run for step in trace)
    skipped_outer = sum(step.outer_skipped for step in trace)
    skipped_steps = sum(step.next_step_skipped for step in trace)
    assert result.windows_evaluated == len(trace) + run_outer
    assert result.windows_skipped == skipped_outer + grid_size(trace) * skipped_steps


def test_the_model_folder_records_its_orientation(results_folder, predictors):
    assert json.loads((results_folder / "dataset.json").read_text())[DATASET_JSON_KEY] == CANONICAL_ORIENTATION
    assert all(p.model.orientation == CANONICAL_ORIENTATION for p in predictors.values())


@pytest.mark.parametrize("mode", ["stock", "fast", "fastest"])
def test_every_mode_sees_one_orientation_and_writes_each_inputs_geometry(predictors, tmp_path, monkeypatch, mode):
    """The same scan stored LPS-like and RAS-like: the network gets the same
    array, and each label map comes back on its own input's grid and header."""
    predictor = predictors[(mode, False)]
    method = "_predict_stock" if mode == "stock" else "_predict_efficient"
    seen: list[tuple[np.ndarray, tuple]] = []
    predict = getattr(predictor, method)

    def spy(image, spacing_zyx):
        seen.append((np.array(image), tuple(spacing_zyx)))
        return predict(image, spacing_zyx)

    monkeypatch.setattr(predictor, method, spy)
    case = toy_case(4242, spacing_xyz=SPACING_XYZ)
    lps = Geometry(case.geometry.size, case.geometry.spacing, (-120.5, 80.25, -300.0), case.geometry.direction)
    labels = {}
    for name, (image, geometry) in {"lps": (case.image, lps), "ras": stored_ras_like(case.image, lps)}.items():
        path = write_volume(image, geometry, tmp_path / f"{name}_0000.nii.gz")
        result = predictor.predict_case(path, name, tmp_path / "out" / f"{name}.nii.gz")
        written, written_geometry = read_volume(result.output_path, name)
        assert written_geometry == read_geometry(path, name) == result.geometry  # exactly the input's
        np.testing.assert_array_equal(written, result.label)
        labels[name] = reorient_array(written, written_geometry)[0]
    np.testing.assert_array_equal(seen[0][0], seen[1][0])
    assert seen[0][1] == seen[1][1]
    assert dice(labels["lps"], case.labels, LIVER) > 0.6
    np.testing.assert_array_equal(labels["ras"], labels["lps"])


def test_bfloat16_on_the_cpu_agrees_with_float32_and_says_so(results_folder, predictions, case_file, tmp_path):
    path, _, geometry = case_file
    bf16 = StudentPredictor.from_results(results_folder, "fast", device="cpu", precision="bfloat16")
    assert bf16.backend == "torch" and bf16.precision == "bfloat16"
    assert bf16._runner.cpu_bfloat16, "the windows run under CPU bfloat16 autocast"
    result = bf16.predict_case(path, "toy", tmp_path / "bf16.nii.gz")
    reference = predictions[("fast", False)]
    assert result.precision == "bfloat16" and reference.precision == "float32"
    assert read_geometry(tmp_path / "bf16.nii.gz", "toy").differences(geometry) == []
    assert result.label.dtype == np.uint8
    assert float(np.mean(result.label == reference.label)) > 0.99
    assert dice(result.label, reference.label, LIVER) > 0.95
    auto = StudentPredictor.from_results(results_folder, "fastest", device="cpu", backend="auto",
                                         precision="bfloat16")
    assert auto.backend == "torch", "bfloat16 runs in torch, so auto picks it"


@pytest.mark.parametrize("mode,backend,native,expected", [
    ("fastest", "auto", True, ("torch", "bfloat16")),
    ("fastest", "auto", False, ("onnx", "float32")),
    ("fast", "torch", True, ("torch", "bfloat16")),
    ("fast", "onnx", True, ("onnx", "float32")),
    ("stock", "torch", True, ("torch", "float32")),
])
def test_automatic_precision_takes_bfloat16_only_where_it_is_native_and_allowed(
        results_folder, monkeypatch, mode, backend, native, expected):
    from flare_core.nnunet import environment

    monkeypatch.setattr(environment, "cpu_has_native_bfloat16", lambda: native)  # the CPU's flags, either way
    predictor = StudentPredictor.from_results(results_folder, mode, device="cpu", backend=backend, precision="auto")
    assert (predictor.backend, predictor.precision) == expected


@pytest.mark.parametrize("mode,backend,precision,problem", [
    ("fast", "onnx", "bfloat16", "onnx backend runs float32"),
    ("stock", "torch", "bfloat16", "stock is nnU-Net's own float32"),
    ("fast", "torch", "float16", "precision must be one of"),
])
def test_bfloat16_that_cannot_run_is_refused_clearly(results_folder, mode, backend, precision, problem):
    with pytest.raises(ValueError, match=problem):
        StudentPredictor.from_results(results_folder, mode, device="cpu", backend=backend, precision=precision)
