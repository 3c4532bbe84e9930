"""The teacher through the real nnU-Net planner, trainer and predictor (test profile, CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flare_core.io import read_geometry, read_label, read_volume, write_volume
from flare_core.layout import WorkLayout
from flare_core.nnunet import training
from flare_core.nnunet.attention_unet import AttentionUNet
from flare_core.nnunet.dataset_export import export_tumor_dataset
from flare_core.nnunet.profiles import get_profile
from flare_core.nnunet.settings import ATTENTION_UNET, TRAINING_KEY
from flare_core.nnunet.tumor_inference import TumorPredictor
from flare_core.orientation import CANONICAL_ORIENTATION, DATASET_JSON_KEY, reorient_array
from tests.core.nnunet_fixtures import dice, sphere_case, stored_ras_like, write_sphere_cases

EPOCHS = 10
ITERATIONS = 8
INTERRUPT_AFTER = 3  # epochs completed before the simulated crash


def _net(dim: int, deep_supervision: bool, **attention) -> AttentionUNet:
    conv = nn.Conv2d if dim == 2 else nn.Conv3d
    norm = nn.InstanceNorm2d if dim == 2 else nn.InstanceNorm3d
    strides = [[1] * dim] + [[2] * dim] * 3 if dim == 2 else [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
    kernels = [[3] * dim] * len(strides)
    return AttentionUNet(1, len(strides), [4, 8, 16, 16][:len(strides)], conv, kernels, strides, 1, 3, 1,
                         conv_bias=True, norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True},
                         nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=deep_supervision,
                         **attention)


@pytest.mark.parametrize("dim,patch", [(2, (32, 48)), (3, (8, 32, 32))])
def test_attention_unet_outputs_match_plain_unet_conventions(dim, patch):
    net = _net(dim, deep_supervision=True)
    x = torch.randn(2, 1, *patch)
    outputs = net(x)
    # One output per decoder stage, finest first, each downsampled by the strides so far.
    assert isinstance(outputs, list) and len(outputs) == len(net.encoder.strides) - 1
    scale = np.ones(dim)
    for output, stride in zip(outputs, net.encoder.strides):
        scale = scale * np.array(stride)
        assert output.shape == (2, 3, *[int(p // s) for p, s in zip(patch, scale)])
    net.decoder.deep_supervision = False  # what nnU-Net flips for validation and inference
    single = net(x)
    assert torch.is_tensor(single) and single.shape == (2, 3, *patch)
    assert net.compute_conv_feature_map_size(patch) > 0


def test_attention_options_change_the_decoder():
    all_gates = _net(2, False, gated_skips=None, non_local=False, channel_attention=False)
    default = _net(2, False)
    assert all_gates.decoder.n_gated == 3 and all_gates.decoder.non_local is None
    assert default.decoder.non_local is not None
    # The non-local residual starts switched off, so it cannot disturb early training.
    assert float(default.decoder.non_local.residual_scale.detach()) == 0.0


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """Plan, train with a simulated crash, resume, and re-run on sphere data."""
    root = tmp_path_factory.mktemp("teacher")
    cases = write_sphere_cases(root / "data", list(range(8)))
    held_out = write_sphere_cases(root / "held_out", [100, 101, 102], flip_seeds=(101,))
    work = WorkLayout(root / "work")
    exported = export_tumor_dataset(cases, work.nnunet_raw)
    settings = get_profile("test").teacher
    planned = training.plan_and_preprocess(work, exported.dataset_name, settings, num_processes=1,
                                           profile_name="test")
    replanned = training.plan_and_preprocess(work, exported.dataset_name, settings, num_processes=1,
                                             profile_name="test")

    epochs_seen: list[int] = []

    class Crash(RuntimeError):
        pass

    def crash_after(epoch, loss, pseudo_dice, seconds):
        epochs_seen.append(epoch)
        if epoch + 1 == INTERRUPT_AFTER:
            raise Crash()

    kwargs = dict(epochs=EPOCHS, iterations=ITERATIONS, seed=0, threads=1)
    with pytest.raises(Crash):
        training.train(work, exported.dataset_name, settings, "cpu", on_epoch=crash_after, **kwargs)
    first_run = list(epochs_seen)
    epochs_seen.clear()
    resumed = training.train(work, exported.dataset_name, settings, "cpu",
                             on_epoch=lambda e, *_: epochs_seen.append(e), **kwargs)
    second_run = list(epochs_seen)
    again = training.train(work, exported.dataset_name, settings, "cpu", **kwargs)
    return dict(work=work, planned=planned, replanned=replanned, resumed=resumed, again=again, first_run=first_run,
                second_run=second_run, held_out=held_out, settings=settings)


def test_teacher_plans_carry_network_and_settings(teacher):
    plans = json.loads(teacher["planned"].plans_path.read_text())
    assert list(plans["configurations"]) == ["2d"]
    cfg = plans["configurations"]["2d"]
    arch = cfg["architecture"]
    assert arch["network_class_name"] == ATTENTION_UNET
    assert arch["arch_kwargs"]["gated_skips"] == 3 and arch["arch_kwargs"]["non_local"] is True
    assert arch["arch_kwargs"]["features_per_stage"] == [4, 8, 16]
    assert cfg["batch_size"] == 4
    assert cfg[TRAINING_KEY]["elastic_probability"] == pytest.approx(0.2)
    assert plans["flare_profile"] == "test"


def test_unchanged_data_are_not_fingerprinted_or_preprocessed_again(teacher):
    planned, replanned = teacher["planned"], teacher["replanned"]
    assert planned.fingerprinted and planned.preprocessed
    assert not replanned.fingerprinted and not replanned.preprocessed
    assert replanned.plans == planned.plans and replanned.data_signature == planned.data_signature


def test_faithful_teacher_settings():
    teacher = get_profile("flare23").teacher
    assert teacher.plan.configuration == "2d" and teacher.plan.network_class == ATTENTION_UNET
    assert teacher.plan.base_features == 32 and teacher.plan.batch_size == 4
    t = teacher.training
    assert (t.num_epochs, t.iterations_per_epoch, t.initial_lr) == (1000, 250, 5e-4)
    assert t.elastic_probability > 0 and t.nesterov and t.momentum == 0.99
    assert (t.optimizer, t.ce_class_weight_power, t.cpu_bfloat16) == ("sgd", 0.0, False)


def test_every_teacher_samples_like_nnunet():
    """A third of the patches centred on a tumor, the rest anywhere: the teacher
    also sees tumor-free slices, whose false positives would become class 14 in fusion."""
    for name in ("flare23", "cpu", "test"):
        assert get_profile(name).teacher.training.oversample_foreground == pytest.approx(0.33), name


def test_interrupted_training_resumes_where_it_stopped(teacher):
    resumed = teacher["resumed"]
    assert teacher["first_run"] == list(range(INTERRUPT_AFTER))
    assert teacher["second_run"] == list(range(INTERRUPT_AFTER, EPOCHS))
    assert resumed.resumed_from_epoch == INTERRUPT_AFTER and not resumed.skipped
    assert resumed.epochs_completed == EPOCHS == len(resumed.curve.pseudo_dice) == len(resumed.curve.seconds)
    assert resumed.checkpoint.name == "checkpoint_final.pth" and resumed.checkpoint.is_file()
    assert not (resumed.checkpoint.parent / "checkpoint_latest.pth").exists()
    folder = resumed.model_folder
    assert folder.name == "FlareTeacherTrainer__FlareTeacherPlans__2d"
    assert (folder / "plans.json").is_file() and (folder / "dataset.json").is_file()
    # nnU-Net copied the exported dataset.json: the model folder records its orientation.
    assert json.loads((folder / "dataset.json").read_text())[DATASET_JSON_KEY] == CANONICAL_ORIENTATION
    stored = json.loads((folder / "plans.json").read_text())["configurations"]["2d"][TRAINING_KEY]
    assert stored["num_epochs"] == EPOCHS and stored["iterations_per_epoch"] == ITERATIONS


def test_finished_training_is_not_repeated(teacher):
    again, resumed = teacher["again"], teacher["resumed"]
    assert again.skipped and again.epochs_completed == EPOCHS
    assert again.checkpoint_sha256 == resumed.checkpoint_sha256
    assert again.curve.train_loss == resumed.curve.train_loss


def test_teacher_predicts_binary_masks_on_the_image_grid_and_learns(teacher, tmp_path):
    predictor = TumorPredictor.from_results(teacher["resumed"].model_folder, "cpu")
    trained, untrained = [], []
    for case in teacher["held_out"]:
        out, voxels, seconds = predictor.predict_to_file(case.image, case.case_id, tmp_path / f"{case.case_id}.nii.gz")
        mask, geometry = read_volume(out, case.case_id)
        _, image_geometry = read_volume(case.image, case.case_id)
        truth, _ = read_label(case.label, case.case_id)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1} and voxels == int(mask.sum())
        assert geometry.differences(image_geometry) == []
        trained.append(dice(mask, truth == 14))
    # Same architecture, weights as initialised: the floor a trained model must clear.
    torch.manual_seed(0)
    network = predictor.predictor.network
    network.apply(AttentionUNet.initialize)
    predictor.predictor.list_of_parameters = [{k: v.clone() for k, v in network.state_dict().items()}]
    for case in teacher["held_out"]:
        mask, _, _ = predictor.predict_case(case.image, case.case_id)
        truth, _ = read_label(case.label, case.case_id)
        untrained.append(dice(mask, truth == 14))
    # Measured with these seeds: trained ~0.86, untrained 0.0.
    assert np.mean(trained) > 0.6, (trained, untrained)
    assert np.mean(trained) > np.mean(untrained) + 0.5, (trained, untrained)


def test_teacher_sees_one_orientation_and_writes_each_inputs_geometry(teacher, tmp_path, monkeypatch):
    """The same scan stored LPS-like and RAS-like: the network gets the same
    array, and each mask comes back on its own input's grid and header."""
    predictor = TumorPredictor.from_results(teacher["resumed"].model_folder, "cpu")
    assert predictor.orientation == CANONICAL_ORIENTATION
    seen: list[np.ndarray] = []
    predict = predictor.predictor.predict_single_npy_array

    def spy(image, properties, *args, **kwargs):
        seen.append(np.array(image))
        return predict(image, properties, *args, **kwargs)

    monkeypatch.setattr(predictor.predictor, "predict_single_npy_array", spy)
    image, _, lps_geometry = sphere_case(100)
    masks = {}
    for name, (array, geometry) in {"lps": (image, lps_geometry), "ras": stored_ras_like(image, lps_geometry)}.items():
        path = write_volume(array, geometry, tmp_path / f"{name}_0000.nii.gz")
        out, voxels, _ = predictor.predict_to_file(path, name, tmp_path / "out" / f"{name}.nii.gz")
        mask, mask_geometry = read_volume(out, name)
        assert mask_geometry == read_geometry(path, name)  # size, spacing, origin, direction: exactly
        masks[name] = reorient_array(mask, mask_geometry)[0]
    np.testing.assert_array_equal(seen[0], seen[1])
    assert masks["lps"].any()
    np.testing.assert_array_equal(masks["ras"], masks["lps"])


def test_external_trainer_folder_is_found_by_nnunet():
    """What stock nnU-Net does with nnUNet_extTrainer after its own trainer folders."""
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    from flare_core.nnunet import ext_trainers
    from flare_core.nnunet.teacher_trainer import FlareTeacherTrainer

    folder = str(Path(ext_trainers.__file__).parent)
    found = recursive_find_python_class(folder, "FlareTeacherTrainer", None, base_folder=folder,
                                        cleanup_imports_from_base_folder=True)
    assert found is FlareTeacherTrainer
