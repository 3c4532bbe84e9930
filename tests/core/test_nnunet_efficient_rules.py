"""Sliding window, window-skipping rules and the efficient predictor's geometry,
with a fake network whose answer is known: it labels every voxel with the
class id closest to the voxel's (normalised) intensity. No training needed."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window
from torch import nn

from flare_core.io import Geometry, read_label
from flare_core.labels import AORTA, LIVER
from flare_core.nnunet.efficient_predictor import StudentPredictor
from flare_core.nnunet.fastest_rules import (
    EMPTY,
    FRONT_EMPTY,
    FULL,
    TUBULAR_ONLY,
    FastestRules,
    predict_with_rules,
)
from flare_core.nnunet.model_loading import InferencePlan, LoadedStudent
from flare_core.nnunet.sliding_window import (
    SlabAccumulator,
    gaussian_importance_map,
    grid_starts,
    predict_all_windows,
    window_starts,
)

NUM_CLASSES = 15
PATCH = (16, 32, 32)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


class NearestClassNetwork(nn.Module):
    """Logit of class c = -(intensity - c)^2: the argmax is the rounded intensity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(NUM_CLASSES, dtype=x.dtype, device=x.device).view(1, -1, 1, 1, 1)
        return -(x - classes) ** 2


def run(windows: torch.Tensor) -> torch.Tensor:
    return NearestClassNetwork()(windows)


def rules(**overrides) -> FastestRules:
    return FastestRules(min_foreground_voxels=20, min_front_foreground_voxels=20, tubular_margin_voxels=2,
                        **overrides)


# ------------------------------------------------------------------ window grid

@pytest.mark.parametrize("size,patch,step", [(150, 32, 0.5), (341, 192, 0.5), (43, 32, 0.5), (100, 32, 0.3),
                                             (32, 32, 0.5), (200, 48, 1.0)])
def test_window_starts_are_nnunets(size, patch, step):
    assert window_starts(size, patch, step) == compute_steps_for_sliding_window((size,), (patch,), step)[0]


def test_gaussian_matches_nnunets_up_to_the_floor():
    ours = gaussian_importance_map(PATCH)
    theirs = compute_gaussian(PATCH, 1 / 8, 1, torch.float32, torch.device("cpu"))
    assert torch.allclose(ours, theirs / theirs.max(), atol=2e-4)
    assert float(ours.max()) == 1.0 and float(ours.min()) > 0


@pytest.mark.parametrize("size,patch", [(53, 32), (341, 192), (32, 32), (20, 32), (200, 32)])
def test_grid_is_three_positions_without_gaps(size, patch):
    starts = grid_starts(size, patch, 3)
    if size <= patch:
        assert starts == [0]
        return
    assert len(starts) >= 3 and starts[0] == 0 and starts[-1] == size - patch
    assert all(b - a <= patch for a, b in zip(starts, starts[1:]))
    assert len(starts) == 3 or size > 3 * patch


def test_slab_accumulator_equals_whole_volume_accumulation():
    generator = torch.Generator().manual_seed(0)
    shape, classes = (40, 20, 24), 4
    patch = (12, 16, 16)
    weights = gaussian_importance_map(patch)
    full = torch.zeros((classes, *shape))
    slab = SlabAccumulator(classes, shape, patch[0], torch.device("cpu"), torch.float32)
    steps = [window_starts(s, p, 0.5) for s, p in zip(shape, patch)]
    for z in steps[0]:
        slab.advance_to(z)
        for y in steps[1]:
            for x in steps[2]:
                logits = torch.randn((classes, *patch), generator=generator)
                full[:, z:z + 12, y:y + 16, x:x + 16] += logits * weights
                slab.add(logits, weights, (z, y, x))
    assert torch.equal(slab.finish(), full.argmax(dim=0).to(torch.uint8))


@pytest.mark.parametrize("source,target", [((17, 23, 29), (40, 50, 31)), ((50, 60, 70), (13, 17, 70))])
def test_label_resize_is_torchs_nearest_exact(source, target):
    import torch.nn.functional as F

    from flare_core.nnunet.torch_preprocessing import resize_labels

    labels = torch.randint(0, 15, source, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    expected = F.interpolate(labels[None, None], size=target, mode="nearest-exact")[0, 0]
    assert torch.equal(resize_labels(labels, target), expected)


# ------------------------------------------------------------------ fast / fastest

def organ_and_tube_volume() -> torch.Tensor:
    """80 slices: air, a tube alone (slices 0-79), a liver blob in slices 30-49."""
    volume = torch.zeros((80, 60, 60))
    volume[:, 28:31, 28:31] = AORTA
    volume[30:50, 20:40, 20:40] = LIVER
    return volume


def test_fast_visits_every_window_and_recovers_the_classes():
    volume = organ_and_tube_volume()
    labels, counts = predict_all_windows(volume, run, PATCH, NUM_CLASSES)
    assert torch.equal(labels, volume.to(torch.uint8))
    assert counts.skipped == 0 and counts.evaluated == 9 * 9 * 3 * 3 // 9  # 9 z steps x 3 x 3


def test_fastest_on_an_empty_volume_runs_only_centre_windows_and_keeps_the_last_step():
    volume = torch.zeros((100, 60, 60))
    labels, counts, trace = predict_with_rules(volume, run, PATCH, NUM_CLASSES, rules())
    z_steps = window_starts(100, 16, 0.5)
    assert counts.total == len(z_steps) * 9
    assert counts.evaluated == len(trace)  # one centre window per z step that ran
    assert all(step.reason == EMPTY for step in trace)
    assert trace[-1].z == z_steps[-1]  # the end of the volume is always looked at
    dropped = [step for step in trace if step.next_step_skipped]
    assert len(dropped) >= 4 and not labels.any()


def test_fastest_tubular_only_steps_run_no_outer_window_when_the_tube_stays_central():
    volume = organ_and_tube_volume()
    labels, counts, trace = predict_with_rules(volume, run, PATCH, NUM_CLASSES, rules())
    reasons = {step.z: step.reason for step in trace}
    assert reasons[0] == TUBULAR_ONLY and reasons[64] == TUBULAR_ONLY
    assert all(step.outer_run == 0 for step in trace if step.reason == TUBULAR_ONLY)
    assert any(step.reason == FULL for step in trace)
    assert counts.total == 9 * 9 and counts.skipped > 0
    assert torch.equal(labels, volume.to(torch.uint8))  # the tube is central, the blob is fully run


def test_fastest_tube_near_the_centre_windows_border_runs_the_windows_it_reaches():
    volume = torch.zeros((48, 60, 60))
    grid = grid_starts(60, 32, 3)  # [0, 14, 28]: centre window covers y, x in [14, 46)
    volume[:, 29:32, 15:17] = AORTA  # touches the centre window's low-x border
    _, _, trace = predict_with_rules(volume, run, PATCH, NUM_CLASSES, rules())
    assert grid == [0, 14, 28]
    assert all(step.reason == TUBULAR_ONLY for step in trace)
    # only the windows on the low-x side: (y, x) starts (0, 0), (14, 0), (28, 0)
    assert all(step.outer_run == 3 for step in trace)


def test_fastest_front_part_rule_skips_outer_windows_but_not_the_next_step():
    volume = torch.zeros((48, 60, 60))
    volume[10:16, 20:40, 20:40] = LIVER  # only in the back half of the z step starting at 0
    _, _, trace = predict_with_rules(volume, run, PATCH, NUM_CLASSES, rules())
    first = trace[0]
    assert first.z == 0 and first.reason == FRONT_EMPTY and first.outer_run == 0
    assert not first.next_step_skipped and trace[1].z == 8 and trace[1].reason == FULL


def test_scaled_rules_keep_the_flare22_defaults_for_its_patch():
    assert FastestRules.scaled_to_patch((32, 128, 192)) == FastestRules()
    small = FastestRules.scaled_to_patch(PATCH)
    assert small.min_foreground_voxels == round(1000 * 16 * 32 * 32 / (32 * 128 * 192))


# ------------------------------------------------------------------ predictor geometry

def fake_student(transpose_forward=(0, 1, 2), target_spacing=(3.0, 0.8, 0.8)) -> LoadedStudent:
    plan = InferencePlan(
        patch_size=PATCH, target_spacing=target_spacing, transpose_forward=transpose_forward,
        normalization="CTNormalization", num_classes=NUM_CLASSES,
        # identity normalisation: the fake network sees the raw class codes
        intensity_properties={"mean": 0.0, "std": 1.0, "percentile_00_5": -1e9, "percentile_99_5": 1e9},
    )
    return LoadedStudent(network=NearestClassNetwork(), plan=plan)


def coded_case() -> tuple[np.ndarray, Geometry]:
    labels = np.zeros((30, 50, 70), dtype=np.uint8)
    labels[8:20, 10:30, 20:45] = LIVER
    labels[:, 35:38, 30:33] = AORTA
    geometry = Geometry(size=(70, 50, 30), spacing=(0.8, 0.8, 3.0), origin=(10.0, -5.0, 3.0), direction=FLIPPED)
    return labels, geometry


@pytest.mark.parametrize("mode", ["fast", "fastest"])
def test_predict_array_without_resampling_is_exact_on_the_original_grid(mode):
    labels, geometry = coded_case()
    predictor = StudentPredictor(fake_student(), mode, device="cpu", num_threads=1, rules=rules())
    result = predictor.predict_array(labels.astype(np.float32), geometry)
    assert result.label.dtype == np.uint8 and result.label.shape == geometry.shape_zyx
    np.testing.assert_array_equal(result.label, labels)
    assert result.class_voxel_counts[LIVER] == int((labels == LIVER).sum())
    assert result.windows_evaluated + result.windows_skipped > 0


def test_predict_array_follows_transpose_forward():
    labels, geometry = coded_case()
    # network axis order (x, z, y): target spacing given in that order
    student = fake_student(transpose_forward=(2, 0, 1), target_spacing=(0.8, 3.0, 0.8))
    result = StudentPredictor(student, "fast", device="cpu", num_threads=1).predict_array(
        labels.astype(np.float32), geometry)
    np.testing.assert_array_equal(result.label, labels)


def test_fastest_steps_along_the_images_z_even_when_the_plans_transpose():
    labels = np.zeros((60, 50, 70), dtype=np.uint8)
    labels[40:50, 10:30, 20:45] = LIVER
    geometry = Geometry(size=(70, 50, 60), spacing=(0.8, 0.8, 3.0), origin=(0.0, 0.0, 0.0), direction=FLIPPED)
    # network axis order (y, z, x), as nnU-Net plans data whose in-plane spacing is the coarsest
    student = fake_student(transpose_forward=(1, 0, 2), target_spacing=(0.8, 3.0, 0.8))
    student.plan = replace(student.plan, patch_size=(16, 32, 32))  # 32 slices along z, 16 voxels along y
    result = StudentPredictor(student, "fastest", device="cpu", num_threads=1, rules=rules()).predict_array(
        labels.astype(np.float32), geometry)
    np.testing.assert_array_equal(result.label, labels)
    # z steps of 32 slices over 60: [0, 14, 28]; the empty first step drops the second
    assert [(step.z, step.reason) for step in result.step_trace] == [(0, EMPTY), (28, FULL)]


def test_predict_array_resamples_and_comes_back_to_the_original_grid():
    labels, geometry = coded_case()
    student = fake_student(target_spacing=(4.0, 1.2, 1.2))
    result = StudentPredictor(student, "fast", device="cpu", num_threads=1).predict_array(
        labels.astype(np.float32), geometry)
    assert result.label.shape == labels.shape
    liver_pred, liver_true = result.label == LIVER, labels == LIVER
    dice = 2 * (liver_pred & liver_true).sum() / (liver_pred.sum() + liver_true.sum())
    assert dice > 0.9


def test_predict_case_writes_the_images_exact_geometry(tmp_path):
    from flare_core.io import write_volume

    labels, geometry = coded_case()
    image_path = write_volume(labels.astype(np.int16), geometry, tmp_path / "case_0000.nii.gz")
    predictor = StudentPredictor(fake_student(), "fastest", device="cpu", num_threads=1, rules=rules())
    result = predictor.predict_case(image_path, "case", tmp_path / "out" / "case.nii.gz")
    written, written_geometry = read_label(result.output_path, "case", image_geometry=geometry)
    assert written_geometry.differences(geometry) == []
    np.testing.assert_array_equal(written, labels)
    assert result.summary()["case_id"] == "case" and result.seconds > 0


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        StudentPredictor(fake_student(), "fastest-ever", device="cpu")
