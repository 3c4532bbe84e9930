"""FLARE_TEACHER_EPOCHS / FLARE_STUDENT_EPOCHS: one model's training length
instead of its profile's, from the environment to the settings a model trains with."""
import pytest

from flare_core.nnunet import environment
from flare_core.nnunet.profiles import get_profile
from flare_assets import demo
from flare_assets.definitions import build_resources


def test_each_override_changes_only_its_own_models_epochs(monkeypatch):
    monkeypatch.setenv("FLARE_PROFILE", "flare23")
    monkeypatch.setenv("FLARE_STUDENT_EPOCHS", "150")
    monkeypatch.delenv("FLARE_TEACHER_EPOCHS", raising=False)
    faithful = get_profile("flare23")
    profile = build_resources()["run_profile"].settings
    assert profile.student.training.num_epochs == 150
    assert profile.teacher.training == faithful.teacher.training, "the teacher keeps the paper's training"
    assert profile.student.training.iterations_per_epoch == faithful.student.training.iterations_per_epoch
    assert profile.student.plan == faithful.student.plan, "only the length changes, not the network"

    monkeypatch.setenv("FLARE_TEACHER_EPOCHS", "40")
    monkeypatch.delenv("FLARE_STUDENT_EPOCHS")
    profile = build_resources()["run_profile"].settings
    assert profile.teacher.training.num_epochs == 40
    assert profile.student.training == faithful.student.training


def test_without_overrides_the_profile_is_the_profile(monkeypatch):
    for variable in ("FLARE_TEACHER_EPOCHS", "FLARE_STUDENT_EPOCHS"):
        monkeypatch.setenv(variable, "")
    monkeypatch.setenv("FLARE_PROFILE", "cpu")
    assert build_resources()["run_profile"].settings is get_profile("cpu")


@pytest.mark.parametrize("value", ["0", "-3", "ten", "2.5"])
def test_a_bad_epoch_count_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("FLARE_STUDENT_EPOCHS", value)
    with pytest.raises(ValueError, match=r"FLARE_STUDENT_EPOCHS .*" + repr(value).replace(".", r"\.")):
        build_resources()


@pytest.mark.parametrize("value", [0, -1, True, 2.5])
def test_the_profile_refuses_a_bad_epoch_count(value):
    with pytest.raises(ValueError, match="student_epochs"):
        get_profile("cpu", student_epochs=value)


def test_the_demo_passes_its_epoch_flags_to_the_code_location(monkeypatch, tmp_path):
    for variable in ("FLARE_TEACHER_EPOCHS", "FLARE_STUDENT_EPOCHS", "FLARE_PROFILE", "DAGSTER_HOME"):
        monkeypatch.setenv(variable, "")  # remembered, so what the demo sets is undone afterwards
        monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)
    demo.configure_environment(demo.parse_args(["--student-epochs", "90"]))
    profile = build_resources()["run_profile"].settings
    assert profile.student.training.num_epochs == 90
    assert profile.teacher.training == get_profile("cpu").teacher.training


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_the_demo_refuses_a_bad_epoch_flag_before_it_starts(value, capsys):
    with pytest.raises(SystemExit) as stopped:
        demo.parse_args(["--student-epochs", value])
    assert stopped.value.code == 2 and "--student-epochs" in capsys.readouterr().err


def test_the_demo_says_when_its_models_train_in_float32(monkeypatch):
    monkeypatch.setenv("FLARE_PROFILE", "cpu")
    monkeypatch.setenv("FLARE_DEVICE", "cpu")
    monkeypatch.setattr(environment, "cpu_has_native_bfloat16", lambda: False)
    note = demo.float32_training_note()
    assert note and "float32" in note and "--student-epochs" in note
    monkeypatch.setattr(environment, "cpu_has_native_bfloat16", lambda: True)
    assert demo.float32_training_note() is None, "with native bfloat16 the README's minutes hold"
    monkeypatch.setattr(environment, "cpu_has_native_bfloat16", lambda: False)
    for profile in ("flare23", "test"):  # never bfloat16 / trains for seconds
        monkeypatch.setenv("FLARE_PROFILE", profile)
        assert demo.float32_training_note() is None, profile
    monkeypatch.setenv("FLARE_PROFILE", "cpu")
    monkeypatch.setenv("FLARE_DEVICE", "cuda")
    assert demo.float32_training_note() is None, "a GPU run does not train on the CPU"
