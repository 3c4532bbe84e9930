"""The student: faithful FLARE22 small nnU-Net plans, and a short training through nnU-Net (CPU)."""
from __future__ import annotations

import json
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class, nnUNetDatasetNumpy

from flare_core.layout import WorkLayout
from flare_core.nnunet import training
from flare_core.nnunet.dataset_export import export_student_dataset
from flare_core.nnunet.environment import scoped_env
from flare_core.nnunet.focused_sampling import FocusedDataset, focus_properties, focused_dataset_class
from flare_core.nnunet.profiles import get_profile
from flare_core.nnunet.settings import PLAIN_UNET, TRAINING_KEY, TrainingSettings
from flare_core.nnunet.student_trainer import FlareStudentTrainer
from flare_core.orientation import CANONICAL_ORIENTATION, DATASET_JSON_KEY
from tests.core.nnunet_fixtures import write_sphere_cases


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    root = tmp_path_factory.mktemp("student")
    cases = write_sphere_cases(root / "data", list(range(4)))
    work = WorkLayout(root / "work")
    exported = export_student_dataset(cases, work.nnunet_raw)
    # Faithful plans (planning only: preprocessing tiny data at 1.2 mm would be pointless) ...
    faithful = training.plan_and_preprocess(work, exported.dataset_name, get_profile("flare23").student,
                                            num_processes=1, preprocess=False)
    faithful_plans = json.loads(faithful.plans_path.read_text())
    # ... then the test profile, which reuses the fingerprint, and a short training.
    settings = get_profile("test").student
    small = training.plan_and_preprocess(work, exported.dataset_name, settings, num_processes=1)
    epochs: list[int] = []
    summary = training.train(work, exported.dataset_name, settings, "cpu", seed=0, threads=1,
                             on_epoch=lambda e, *_: epochs.append(e))
    return dict(work=work, name=exported.dataset_name, faithful=faithful, faithful_plans=faithful_plans,
                small=small, summary=summary, epochs=epochs, settings=settings)


def test_student_plans_carry_the_flare22_small_configuration(student):
    plans = student["faithful_plans"]
    assert list(plans["configurations"]) == ["3d_fullres"]
    cfg = plans["configurations"]["3d_fullres"]
    assert cfg["spacing"] == [4.0, 1.2, 1.2]
    assert cfg["patch_size"] == [32, 128, 192]
    assert cfg["batch_size"] == 2
    arch = cfg["architecture"]
    assert arch["network_class_name"] == PLAIN_UNET
    kw = arch["arch_kwargs"]
    assert kw["n_stages"] == 5
    assert kw["features_per_stage"] == [16, 32, 64, 128, 256]
    assert kw["kernel_sizes"] == [[1, 3, 3]] + [[3, 3, 3]] * 4
    assert kw["strides"] == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert kw["n_conv_per_stage"] == [2] * 5 and kw["n_conv_per_stage_decoder"] == [2] * 4
    assert kw["norm_op"] == "torch.nn.modules.instancenorm.InstanceNorm3d"
    assert kw["nonlin"] == "torch.nn.LeakyReLU"
    t = cfg[TRAINING_KEY]
    assert (t["num_epochs"], t["iterations_per_epoch"]) == (1500, 250)
    assert (t["initial_lr"], t["momentum"], t["nesterov"], t["weight_decay"]) == (0.01, 0.99, True, 3e-5)
    assert t["mirroring"] is False and t["elastic_probability"] == pytest.approx(0.2)
    # The paper's recipe exactly: none of the CPU profile's training changes.
    assert (t["optimizer"], t["ce_class_weight_power"], t["cpu_bfloat16"]) == ("sgd", 0.0, False)
    assert student["faithful"].preprocessed is False


def test_student_trains_without_mirroring(student):
    summary = student["summary"]
    assert student["epochs"] == [0, 1] and summary.epochs_completed == 2
    assert summary.model_folder.name == "FlareStudentTrainer__FlareStudentPlans__3d_fullres"
    # nnU-Net copied the exported dataset.json: the model folder records its orientation.
    dataset_json = json.loads((summary.model_folder / "dataset.json").read_text())
    assert dataset_json[DATASET_JSON_KEY] == CANONICAL_ORIENTATION
    checkpoint = torch.load(summary.checkpoint, map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "FlareStudentTrainer"
    assert checkpoint["inference_allowed_mirroring_axes"] is None  # no mirrored test-time augmentation


def _trainer(student, **training_changes) -> FlareStudentTrainer:
    work, name = student["work"], student["name"]
    plans = json.loads(student["small"].plans_path.read_text())
    plans["configurations"]["3d_fullres"][TRAINING_KEY].update(training_changes)
    dataset_json = json.loads((work.nnunet_preprocessed / name / "dataset.json").read_text())
    return FlareStudentTrainer(plans=dict(plans, continue_training=False), configuration="3d_fullres",
                               fold="all", dataset_json=dataset_json, device=torch.device("cpu"))


def test_cpu_regime_trains_with_adamw_and_class_weighted_cross_entropy(student):
    trainer = _trainer(student)  # the test profile inherits the cpu profile's regime
    trainer.initialize()
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    weights = trainer.loss.loss.ce.weight
    assert weights is not None and weights.shape == (15,)
    assert weights[1] > weights[0] > 0  # the liver is rarer than background, so it weighs more
    sgd = _trainer(student, optimizer="sgd", ce_class_weight_power=0.0)
    sgd.initialize()
    assert isinstance(sgd.optimizer, torch.optim.SGD) and sgd.loss.loss.ce.weight is None


def test_annealed_class_weights_fall_to_plain_cross_entropy_by_the_last_epoch(student):
    trainer = _trainer(student, num_epochs=5, ce_class_weight_power=0.5, ce_class_weight_anneal=True)
    trainer.initialize()
    ce = trainer.loss.loss.ce
    seen = []
    for epoch in range(5):
        trainer.current_epoch = epoch
        trainer.on_epoch_start()
        seen.append(ce.weight.clone())
    assert [trainer.class_weight_power(e) for e in range(5)] == pytest.approx([0.5, 0.375, 0.25, 0.125, 0.0])
    assert seen[0][1] > seen[2][1] > seen[4][1]  # the liver's extra weight fades...
    present = seen[4] > 0
    assert torch.allclose(seen[4][present], torch.ones_like(seen[4][present]))  # ...to unweighted CE
    constant = _trainer(student, num_epochs=5, ce_class_weight_power=0.5, ce_class_weight_anneal=False)
    constant.initialize()
    first = constant.loss.loss.ce.weight.clone()
    constant.current_epoch = 4
    constant.on_epoch_start()
    assert torch.equal(constant.loss.loss.ce.weight, first)


def test_student_augmentation_has_elastic_deformation_and_no_mirroring(student):
    work, name = student["work"], student["name"]
    plans = json.loads(student["small"].plans_path.read_text())
    plans["configurations"]["3d_fullres"][TRAINING_KEY]["elastic_probability"] = 0.2  # as in flare23
    dataset_json = json.loads((work.nnunet_preprocessed / name / "dataset.json").read_text())
    trainer = FlareStudentTrainer(plans=dict(plans, continue_training=False), configuration="3d_fullres",
                                  fold="all", dataset_json=dataset_json, device=torch.device("cpu"))
    rotation, dummy_2d, _, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert mirror_axes is None and trainer.inference_allowed_mirroring_axes is None
    pipeline = trainer.get_training_transforms(trainer.configuration_manager.patch_size, rotation, None,
                                               mirror_axes, dummy_2d)
    spatial = [t for t in pipeline.transforms if isinstance(t, SpatialTransform)]
    assert len(spatial) == 1 and spatial[0].p_elastic_deform == pytest.approx(0.2)
    assert not any(isinstance(t, MirrorTransform) for t in pipeline.transforms)
    assert trainer.num_epochs == 2 and trainer.initial_lr == pytest.approx(student["settings"].training.initial_lr)


def test_changed_plans_restart_training_from_scratch(student):
    settings = student["settings"]
    changed = replace(settings, training=replace(settings.training, initial_lr=0.02))
    epochs: list[int] = []
    summary = training.train(student["work"], student["name"], changed, "cpu", epochs=1, seed=0, threads=1,
                             on_epoch=lambda e, *_: epochs.append(e))
    assert epochs == [0] and not summary.skipped and summary.resumed_from_epoch is None
    assert summary.epochs_completed == 1
    assert summary.checkpoint_sha256 != student["summary"].checkpoint_sha256


def _tumor_share_of_patch_centres(trainer: FlareStudentTrainer, dataset_class: type, draws: int = 60) -> float:
    """Share of nnU-Net's foreground-forced patches (real loader, no augmentation) centred on a tumor voxel."""
    folder = trainer.preprocessed_dataset_folder
    dataset = dataset_class(folder, dataset_class.get_identifiers(folder))
    patch = [6, 10, 10]
    loader = nnUNetDataLoader(dataset, 1, patch, patch, trainer.label_manager, oversample_foreground_percent=1.0)
    np.random.seed(0)
    centred = 0
    for _ in range(draws):
        seg = loader.generate_train_batch()["target"][0, 0]
        centred += int(seg[tuple(s // 2 for s in patch)] == 14)
    return centred / draws


def test_focused_sampling_centres_foreground_patches_on_the_tumor(student):
    trainer = _trainer(student, focus_class=14, focus_share=1.0)
    trainer.initialize()
    with scoped_env(nnUNet_n_proc_DA=0):  # single-threaded augmenter, nothing to fork
        trainer.get_dataloaders()
    focused = trainer.dataset_class
    assert issubclass(focused, FocusedDataset) and (focused.focus_class, focused.focus_share) == (14, 1.0)
    stock = infer_dataset_class(trainer.preprocessed_dataset_folder)
    assert focused.focus_base is stock
    with scoped_env(nnUNet_n_proc_DA=0):  # called again, it extends nnU-Net's class, not its own
        trainer.get_dataloaders()
    assert trainer.dataset_class is focused
    # nnU-Net alone picks liver or tumor at random; focused, every forced patch is centred on a tumor.
    assert _tumor_share_of_patch_centres(trainer, focused) == 1.0
    assert _tumor_share_of_patch_centres(trainer, stock) < 0.8
    half = focused_dataset_class(stock, 14, 0.5)
    assert 0.5 < _tumor_share_of_patch_centres(trainer, half) < 1.0
    # Spawned augmentation workers receive the dataset pickled: it comes back with its focus.
    folder = trainer.preprocessed_dataset_folder
    dataset = focused(folder, focused.get_identifiers(folder))
    restored = pickle.loads(pickle.dumps(dataset))
    assert type(restored) is focused and restored.identifiers == dataset.identifiers
    assert list(restored.load_case(restored.identifiers[0])[3]["class_locations"]) == [14]


def test_focus_leaves_cases_without_the_class_and_the_stock_default_alone():
    locations = {1: np.zeros((5, 4)), 14: np.zeros((3, 4))}
    rng = np.random.default_rng(0)
    focused = focus_properties({"class_locations": locations}, 14, 1.0, rng=rng)
    assert list(focused["class_locations"]) == [14] and list(locations) == [1, 14]  # the input is not modified
    no_tumor = {"class_locations": {1: np.zeros((5, 4)), 14: np.zeros((0, 4))}}
    assert focus_properties(no_tumor, 14, 1.0, rng=rng) is no_tumor
    assert focus_properties({"class_locations": locations}, 14, 0.0, rng=rng)["class_locations"] is locations
    with pytest.raises(ValueError, match="share"):
        focused_dataset_class(nnUNetDatasetNumpy, 14, 1.5)


def test_per_lesion_focus_draws_a_small_lesion_as_often_as_a_large_one():
    seg = np.zeros((1, 8, 20, 20), np.int16)
    seg[0, 1:7, 2:12, 2:12] = 14  # a large lesion: 600 voxels
    seg[0, 3:5, 15:17, 15:17] = 14  # a small one: 8 voxels, apart from the first
    voxels = np.argwhere(seg == 14)
    properties = {"class_locations": {1: np.zeros((3, 4), np.int64), 14: voxels}}
    rng = np.random.default_rng(1)
    small = 0
    for _ in range(400):
        kept = focus_properties(properties, 14, 1.0, segmentation=seg, rng=rng)["class_locations"][14]
        assert len(kept) in (600, 8)
        small += len(kept) == 8
    assert 150 < small < 250  # about half the draws, against 8 / 608 for a uniform voxel


def test_plans_omit_focused_sampling_while_it_is_off():
    # A model trained before the setting existed keeps its plans, hence its identity.
    for name in ("flare23", "cpu", "test"):
        block = get_profile(name).student.training.to_dict()
        assert not {"focus_class", "focus_share", "focus_per_lesion"} & set(block)
        assert TrainingSettings.from_dict(block) == get_profile(name).student.training
    focused = replace(get_profile("cpu").student.training, focus_class=14, focus_share=0.5, focus_per_lesion=True)
    block = focused.to_dict()
    assert (block["focus_class"], block["focus_share"], block["focus_per_lesion"]) == (14, 0.5, True)
    assert TrainingSettings.from_dict(block) == focused
