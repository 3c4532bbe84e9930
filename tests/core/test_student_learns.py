"""A tiny student learns several organs of the phantom within seconds on a CPU,
and the regime that does it is what makes the difference: the same network
with nnU-Net's SGD and unweighted cross-entropy, on the same budget, does not.

Fixed seeds; the network, patch and iterations are far below the `cpu`
profile, so the bar is "several organ classes clearly learned", not accuracy.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from flare_core import labels as L
from flare_core.io import read_label
from flare_core.layout import WorkLayout
from flare_core.nnunet import training
from flare_core.nnunet.dataset_export import export_student_dataset
from flare_core.nnunet.efficient_predictor import StudentPredictor
from flare_core.nnunet.profiles import get_profile
from flare_core.nnunet.settings import PlanSettings, StudentSettings, TrainingSettings
from tests.core.nnunet_fixtures import dice, write_cases

LEARNED = 0.3  # a class counts as learned above this mean Dice on the training cases
REGIME = dict(optimizer="adamw", initial_lr=3e-3, weight_decay=1e-4, ce_class_weight_power=0.5)
NNUNET_RECIPE = dict(optimizer="sgd", initial_lr=1e-2, weight_decay=3e-5, ce_class_weight_power=0.0)


def _settings(**training) -> StudentSettings:
    base = get_profile("cpu").student
    plan = replace(base.plan, patch_size=(32, 48, 48), features_per_stage=(8, 16, 32, 64), n_conv_per_stage=2,
                   n_conv_per_stage_decoder=2)
    return StudentSettings(plan=plan, training=TrainingSettings(
        num_epochs=10, iterations_per_epoch=12, val_iterations_per_epoch=1, mirroring=False, save_every=100,
        plot_every=1000, cpu_bfloat16=True, **training))


@pytest.fixture(scope="module")
def phantom_student_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("learns")
    cases = write_cases(root / "data", [101, 102, 103, 104])
    return root, cases


def _learned_organs(root, cases, name: str, **regime) -> tuple[list[int], list[int]]:
    """(organs learned after training, organs 'learned' by the untrained network)."""
    work = WorkLayout(root / name)
    exported = export_student_dataset(cases, work.nnunet_raw)
    settings = _settings(**regime)
    training.plan_and_preprocess(work, exported.dataset_name, settings, num_processes=1)
    summary = training.train(work, exported.dataset_name, settings, "cpu", seed=0, threads=2)
    trained = StudentPredictor.from_results(summary.model_folder, mode="fast", device="cpu")
    untrained = StudentPredictor.from_results(summary.model_folder, mode="fast", device="cpu")
    for parameter in untrained.model.network.parameters():  # same architecture, fresh weights
        parameter.data.normal_(0, 0.05)
    return _organs_above(trained, cases), _organs_above(untrained, cases)


def _organs_above(predictor: StudentPredictor, cases) -> list[int]:
    scores = {organ: [] for organ in L.ORGANS}
    for case in cases:
        truth, geometry = read_label(case.label, case.case_id)
        predicted = predictor.predict_case(case.image, case.case_id).label
        for organ in L.ORGANS:
            scores[organ].append(dice(predicted == organ, truth == organ))
    means = {L.CLASS_NAMES[organ]: round(float(np.mean(values)), 2) for organ, values in scores.items()}
    logging.getLogger(__name__).info("mean Dice per organ: %s", means)
    return [organ for organ, values in scores.items() if np.mean(values) > LEARNED]


def test_the_cpu_regime_learns_several_organs_where_nnunets_recipe_learns_fewer(phantom_student_data):
    root, cases = phantom_student_data
    learned, untrained = _learned_organs(root, cases, "regime", **REGIME)
    assert untrained == []
    assert len(learned) >= 2, f"learned only {[L.CLASS_NAMES[c] for c in learned]}"
    control, _ = _learned_organs(root, cases, "nnunet_recipe", **NNUNET_RECIPE)
    assert len(control) < len(learned), (learned, control)
