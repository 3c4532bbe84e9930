"""Where nnU-Net reads and writes, device choice, and the run profiles."""
from __future__ import annotations

import os

import pytest
import torch

from flare_core.layout import WorkLayout
from flare_core.nnunet.environment import configure_threads, scoped_env, select_device, use_work_root
from flare_core.nnunet.profiles import get_profile, profile_names


def test_work_root_reaches_nnunet_even_after_it_was_imported(tmp_path, monkeypatch):
    import nnunetv2.paths as paths
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as trainer_module

    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, "/elsewhere")  # restored after the test
    folders = use_work_root(WorkLayout(tmp_path / "work"))
    assert os.fspath(paths.nnUNet_raw) == str(tmp_path / "work" / "nnUNet_raw")
    # Modules that imported the names before still see the new folders.
    assert os.fspath(trainer_module.nnUNet_results) == str(folders.results)
    assert folders.preprocessed.is_dir() and folders.results.is_dir()


def test_scoped_env_restores_previous_values(monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    with scoped_env(nnUNet_n_proc_DA=3, FLARE_UNSET_ME=None):
        assert os.environ["nnUNet_n_proc_DA"] == "3"
    assert os.environ["nnUNet_n_proc_DA"] == "0" and "FLARE_UNSET_ME" not in os.environ


def test_device_selection():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            select_device("cuda")


def test_threads_are_set_explicitly():
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_profiles():
    assert profile_names() == ["cpu", "flare23", "test"]
    with pytest.raises(ValueError, match="valid profiles: cpu, flare23, test"):
        get_profile("fast")
    short = get_profile("flare23", epochs=3, iterations=5)
    assert short.teacher.training.num_epochs == 3 and short.student.training.iterations_per_epoch == 5
    assert short.student.plan == get_profile("flare23").student.plan
    assert get_profile("cpu").device == "cpu" and get_profile("flare23").device == "auto"
