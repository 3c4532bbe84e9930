"""`flare predict` on a folder of tiny synthetic CTs with a tiny fresh student (CPU).

In-process (`flare_core.cli.main`) and once as the installed `flare` command:
every case gets a label map with its image's exact geometry (RAS-like storage
and an uncompressed .nii included), existing outputs are kept unless
--overwrite, a corrupt image is named and the others are still written, and
the exit status says whether any case failed.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flare_core import cli
from flare_core.io import file_sha256, read_geometry, read_volume, write_volume
from flare_core.nnunet import efficient_predictor
from flare_core.nnunet.environment import cpu_has_native_bfloat16
from flare_core.nnunet.trained_student import student_record_path
from flare_core.predict_folder import list_cases
from tests.core.fresh_student import fresh_dataset_json, fresh_plans, write_checkpoint, write_fresh_student
from tests.core.nnunet_fixtures import RAS_LIKE, stored_ras_like
from tests.core.toy_student import toy_case

CASES = ("toy_a", "toy_b", "toy_c")
COMMON = ["--threads", "1", "--device", "cpu"]


def make_work_root(root: Path) -> Path:
    """A work root holding a fresh student and the record training would have left."""
    folder = write_fresh_student(root / "nnUNet_results", seed=5)
    record = {"model_folder": str(folder), "checkpoint_sha256": file_sha256(folder / "fold_all" / "checkpoint_final.pth")}
    path = student_record_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return root


def model_folder(work_root: Path) -> Path:
    return Path(json.loads(student_record_path(work_root).read_text())["model_folder"])


@pytest.fixture(scope="module")
def work_root(tmp_path_factory) -> Path:
    return make_work_root(tmp_path_factory.mktemp("work"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three cases: identity direction; stored RAS-like (diag(-1, -1, 1)); an uncompressed .nii."""
    folder = tmp_path_factory.mktemp("images")
    a = toy_case(1)
    write_volume(a.image, a.geometry, folder / "toy_a_0000.nii.gz")
    b = toy_case(2, shape_zyx=(20, 56, 60), spacing_xyz=(0.9, 0.7, 2.5))
    b_image, b_geometry = stored_ras_like(b.image, b.geometry)
    write_volume(b_image, b_geometry, folder / "toy_b_0000.nii.gz")
    c = toy_case(3, shape_zyx=(18, 48, 52))
    write_volume(c.image, c.geometry, folder / "toy_c_0000.nii")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture()
def images_with_a_corrupt_one(images, tmp_path) -> Path:
    folder = Path(shutil.copytree(images, tmp_path / "images"))
    whole = (images / "toy_a_0000.nii.gz").read_bytes()
    (folder / "broken_0000.nii.gz").write_bytes(whole[: len(whole) // 2])  # a gzip stream cut in half
    return folder


def predict(*args: str | Path) -> int:
    return cli.main(["predict", *map(str, args), *COMMON])


def image_path(images: Path, case_id: str) -> Path:
    return next(images.glob(f"{case_id}_0000.nii*"))


def test_every_case_gets_a_label_map_with_its_images_exact_geometry(work_root, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert predict("-i", images, "-o", out, "--work-root", work_root) == 0  # fastest; auto = onnx on the CPU
    assert sorted(p.name for p in out.iterdir()) == [f"{c}.nii.gz" for c in CASES]
    for case_id in CASES:
        label, geometry = read_volume(out / f"{case_id}.nii.gz", case_id)
        assert geometry == read_geometry(image_path(images, case_id), case_id)  # exactly, not within a tolerance
        assert label.dtype == np.uint8 and label.max() <= 14
    assert read_geometry(out / "toy_b.nii.gz", "toy_b").direction == RAS_LIKE
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    # the default --precision auto: bfloat16 in torch where the CPU has it natively, else float32 on onnx
    default = "torch bfloat16" if cpu_has_native_bfloat16() else "onnx float32"
    assert summary.startswith("predicted 3, skipped 0, failed 0 |") and f"fastest, {default} on cpu" in summary
    assert "s per case" in summary and "model load" in summary


def test_whole_image_turns_the_body_box_off(work_root, images, tmp_path, capsys):
    localised, whole = tmp_path / "localised", tmp_path / "whole"
    source = ["--model", model_folder(work_root), "--backend", "torch", "--precision", "float32"]
    assert predict("-i", images, "-o", localised, *source) == 0
    assert "fastest, torch float32" in capsys.readouterr().out
    assert predict("-i", images, "-o", whole, *source, "--whole-image") == 0
    assert "fastest whole image, torch float32" in capsys.readouterr().out
    for case_id in CASES:  # the same geometry either way
        a, ga = read_volume(localised / f"{case_id}.nii.gz", case_id)
        b, gb = read_volume(whole / f"{case_id}.nii.gz", case_id)
        assert ga == gb and a.shape == b.shape


def test_existing_outputs_are_kept_unless_overwrite(work_root, images, tmp_path, capsys):
    out, source = tmp_path / "out", ["--model", model_folder(work_root), "--mode", "stock"]
    assert predict("-i", images, "-o", out, *source) == 0
    first, geometry = read_volume(out / "toy_a.nii.gz", "toy_a")
    # Replace one output by another valid label map: a rerun must not touch it.
    write_volume(np.zeros_like(first), geometry, out / "toy_a.nii.gz")
    kept = (out / "toy_a.nii.gz").read_bytes()
    capsys.readouterr()
    assert predict("-i", images, "-o", out, *source) == 0
    assert (out / "toy_a.nii.gz").read_bytes() == kept
    assert capsys.readouterr().out.startswith("predicted 0, skipped 3, failed 0")
    assert predict("-i", images, "-o", out, *source, "--overwrite") == 0
    np.testing.assert_array_equal(read_volume(out / "toy_a.nii.gz", "toy_a")[0], first)
    assert capsys.readouterr().out.startswith("predicted 3, skipped 0, failed 0")


def test_a_corrupt_image_is_named_and_the_others_are_written(work_root, images_with_a_corrupt_one, tmp_path,
                                                            caplog, capsys):
    out = tmp_path / "out"
    code = predict("-i", images_with_a_corrupt_one, "-o", out, "--model", model_folder(work_root),
                   "--mode", "fast", "--backend", "torch", "--precision", "float32")
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == [f"{c}.nii.gz" for c in CASES]
    assert "broken failed: broken_0000.nii.gz is truncated" in caplog.text
    summary = capsys.readouterr().out
    assert summary.startswith("predicted 3, skipped 0, failed 1 (broken) |") and "fast, torch float32 on cpu" in summary


def test_the_flare_command(work_root, images_with_a_corrupt_one, tmp_path):
    flare = Path(sys.executable).with_name("flare")
    assert flare.is_file(), "the `flare` entry point is missing: reinstall the project (pip install -e .)"
    out = tmp_path / "out"
    done = subprocess.run([str(flare), "predict", "-i", str(images_with_a_corrupt_one), "-o", str(out),
                           "--work-root", str(work_root), "--mode", "fast", *COMMON],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("predicted 3, skipped 0, failed 1 (broken) |"), done.stdout
    assert "broken failed: broken_0000.nii.gz is truncated" in done.stderr
    assert "predict: 100%" in done.stderr  # the progress bar, on stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{c}.nii.gz" for c in CASES]


def test_a_changed_checkpoint_is_not_loaded(tmp_path, images, caplog):
    work = make_work_root(tmp_path / "work")
    write_checkpoint(model_folder(work), fresh_plans(), fresh_dataset_json(), seed=6)  # not what training recorded
    assert predict("-i", images, "-o", tmp_path / "out", "--work-root", work) == 2
    assert "changed since it was trained; not loaded" in caplog.text
    assert not (tmp_path / "out").exists()


def test_a_work_root_without_a_student(tmp_path, images, caplog):
    assert predict("-i", images, "-o", tmp_path / "out", "--work-root", tmp_path) == 2
    assert "no trained student" in caplog.text


def test_arguments_are_checked(images, tmp_path):
    for bad in (["-i", images, "-o", tmp_path],  # neither --model nor --work-root
                ["-i", images, "-o", tmp_path, "--model", tmp_path, "--work-root", tmp_path],
                ["-i", images, "-o", tmp_path, "--model", tmp_path, "--mode", "slow"]):
        with pytest.raises(SystemExit) as exit_info:
            predict(*bad)
        assert exit_info.value.code == 2
    assert set(cli.MODES) == set(efficient_predictor.MODES)
    assert cli.BACKENDS == efficient_predictor.BACKENDS
    assert cli.PRECISIONS == efficient_predictor.PRECISIONS


def test_case_listing(tmp_path):
    for name in ("b_0000.nii.gz", "a_0000.nii", "a_0000.nii.gz", ".c_0000.nii.gz", "a.nii.gz", "d_0001.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    assert [(c.case_id, c.image.name) for c in list_cases(tmp_path)] == [("a", "a_0000.nii.gz"),
                                                                        ("b", "b_0000.nii.gz")]
