"""Export of nnU-Net raw datasets: layout, label transforms, idempotence, inputs untouched."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from flare_core import labels as L
from flare_core.io import CaseError, Geometry, read_label, read_volume, write_volume
from flare_core.nnunet import dataset_export
from flare_core.nnunet.dataset_export import (
    ExportCase, dataset_folder_name, export_student_dataset, export_tumor_dataset, read_export_digest,
)
from flare_core.orientation import CANONICAL_ORIENTATION, DATASET_JSON_KEY
from flare_core.phantom import make_case
from tests.core.nnunet_fixtures import tree_hashes, write_cases


@pytest.fixture
def phantom_cases(tmp_path):
    return write_cases(tmp_path / "inputs", [0, 1, 2])


def test_tumor_export_layout_and_binary_labels(phantom_cases, tmp_path):
    before = tree_hashes(tmp_path / "inputs")
    result = export_tumor_dataset(phantom_cases, tmp_path / "raw")
    folder = tmp_path / "raw" / "Dataset501_FLARE23Tumor"
    assert result.folder == folder and result.written == ["syn_000", "syn_001", "syn_002"]
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"} and meta["labels"] == {"background": 0, "tumor": 1}
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz" and meta[DATASET_JSON_KEY] == "LPS"
    for case in phantom_cases:
        image = folder / "imagesTr" / f"{case.case_id}_0000.nii.gz"
        assert image.is_symlink() and image.resolve() == case.image.resolve()
        label, geometry = read_volume(folder / "labelsTr" / f"{case.case_id}.nii.gz", case.case_id)
        source, source_geometry = read_label(case.label, case.case_id)
        assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
        assert np.array_equal(label == 1, source == L.TUMOR)
        assert geometry.differences(source_geometry) == []
    assert tree_hashes(tmp_path / "inputs") == before


def test_student_export_keeps_all_classes(phantom_cases, tmp_path):
    result = export_student_dataset(phantom_cases, tmp_path / "raw", dataset_id=777, name="Student")
    assert result.dataset_name == "Dataset777_Student"
    meta = json.loads((result.folder / "dataset.json").read_text())
    assert meta["labels"] == {L.CLASS_NAMES[i]: i for i in range(15)}
    assert list(meta["labels"])[0] == "background"
    label, _ = read_volume(result.folder / "labelsTr" / "syn_000.nii.gz", "syn_000")
    source, _ = read_label(phantom_cases[0].label, "syn_000")
    assert np.array_equal(label, source)


def test_reexport_is_idempotent_and_follows_changes(phantom_cases, tmp_path):
    raw = tmp_path / "raw"
    first = export_tumor_dataset(phantom_cases, raw)
    labels_dir = first.folder / "labelsTr"
    stamps = {p.name: p.stat().st_mtime_ns for p in labels_dir.iterdir()}

    again = export_tumor_dataset(phantom_cases, raw)
    assert again.written == [] and again.unchanged == ["syn_000", "syn_001", "syn_002"]
    assert again.digest == first.digest == read_export_digest(first.folder)
    assert {p.name: p.stat().st_mtime_ns for p in labels_dir.iterdir()} == stamps

    # A changed label file (new content at a new path) rewrites that case only.
    changed_label = tmp_path / "changed" / "syn_001.nii.gz"
    source, geometry = read_label(phantom_cases[1].label, "syn_001")
    write_volume(np.zeros_like(source), geometry, changed_label)
    changed = [phantom_cases[0], ExportCase("syn_001", phantom_cases[1].image, changed_label)]
    third = export_tumor_dataset(changed, raw)
    assert third.written == ["syn_001"] and third.unchanged == ["syn_000"] and third.removed == ["syn_002"]
    assert third.digest != first.digest
    assert sorted(p.name for p in labels_dir.iterdir()) == ["syn_000.nii.gz", "syn_001.nii.gz"]
    assert sorted(p.name for p in (first.folder / "imagesTr").iterdir()) == \
        ["syn_000_0000.nii.gz", "syn_001_0000.nii.gz"]
    assert json.loads((first.folder / "dataset.json").read_text())["numTraining"] == 2
    assert read_volume(labels_dir / "syn_001.nii.gz", "syn_001")[0].max() == 0


def test_images_are_copied_when_links_fail(phantom_cases, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("links not supported here")

    monkeypatch.setattr(dataset_export.os, "symlink", refuse)
    result = export_tumor_dataset(phantom_cases[:1], tmp_path / "raw")
    image = result.folder / "imagesTr" / "syn_000_0000.nii.gz"
    assert result.image_mode == {"syn_000": "copy"}
    assert not image.is_symlink() and image.read_bytes() == phantom_cases[0].image.read_bytes()
    assert export_tumor_dataset(phantom_cases[:1], tmp_path / "raw").written == []


def test_export_rejects_bad_ids_and_mismatched_labels(phantom_cases, tmp_path):
    with pytest.raises(CaseError, match="path separator"):
        export_tumor_dataset([ExportCase("a/b", phantom_cases[0].image, phantom_cases[0].label)], tmp_path / "raw")
    label, geometry = read_label(phantom_cases[0].label, "syn_000")
    shifted = Geometry(geometry.size, geometry.spacing, tuple(o + 5.0 for o in geometry.origin), geometry.direction)
    moved = write_volume(label, shifted, tmp_path / "moved" / "syn_000.nii.gz")
    with pytest.raises(CaseError, match="geometry differs"):
        export_tumor_dataset([ExportCase("syn_000", phantom_cases[0].image, moved)], tmp_path / "raw2")
    with pytest.raises(ValueError, match="three digits"):
        dataset_folder_name(1000, "X")


def test_labels_take_the_image_geometry_despite_header_noise(phantom_cases, tmp_path):
    label, geometry = read_label(phantom_cases[0].label, "syn_000")
    noisy = Geometry(geometry.size, tuple(s + 1e-6 for s in geometry.spacing), geometry.origin, geometry.direction)
    noisy_label = write_volume(label, noisy, tmp_path / "noisy" / "syn_000.nii.gz")
    result = export_tumor_dataset([ExportCase("syn_000", phantom_cases[0].image, noisy_label)], tmp_path / "raw")
    _, exported = read_volume(result.folder / "labelsTr" / "syn_000.nii.gz", "syn_000")
    _, image_geometry = read_volume(phantom_cases[0].image, "syn_000")
    assert exported.spacing == image_geometry.spacing


def test_moving_the_source_relinks(phantom_cases, tmp_path):
    export_tumor_dataset(phantom_cases[:1], tmp_path / "raw")
    moved_dir = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "inputs", moved_dir)
    moved = ExportCase("syn_000", moved_dir / "images" / "syn_000_0000.nii.gz", moved_dir / "labels" / "syn_000.nii.gz")
    result = export_tumor_dataset([moved], tmp_path / "raw")
    link = result.folder / "imagesTr" / "syn_000_0000.nii.gz"
    assert result.written == ["syn_000"] and os.readlink(link) == str(moved.image.resolve())


def _write_phantom(root, case_id: str, seed: int, flip: bool) -> ExportCase:
    """One phantom case stored LPS-like (identity direction) or RAS-like (diag(-1, -1, 1)).

    The phantom draws its image noise in stored order, so `make_case(...,
    direction_flip=True).image` is a different noise draw; the flipped image
    here is the plain one in mirrored voxel order, i.e. the same scan stored
    the other way round (the labels are the phantom's own flipped labels)."""
    plain = make_case(seed, "tiny", lesions=True, direction_flip=False)
    case = make_case(seed, "tiny", lesions=True, direction_flip=flip)
    image = plain.image[:, ::-1, ::-1] if flip else plain.image
    return ExportCase(case_id, write_volume(image, case.geometry, root / f"{case_id}_0000.nii.gz"),
                      write_volume(case.labels, case.geometry, root / f"{case_id}.nii.gz"))


@pytest.mark.parametrize("export", [export_student_dataset, export_tumor_dataset])
def test_export_writes_one_canonical_orientation_whatever_the_stored_one(tmp_path, export):
    plain = _write_phantom(tmp_path / "inputs", "plain", 3, flip=False)
    flipped = _write_phantom(tmp_path / "inputs", "flip", 3, flip=True)
    assert read_volume(flipped.image, "flip")[1].direction == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    before = tree_hashes(tmp_path / "inputs")
    result = export([plain, flipped], tmp_path / "raw")
    assert result.image_mode == {"plain": "symlink", "flip": "reoriented"}
    meta = json.loads((result.folder / "dataset.json").read_text())
    assert meta[DATASET_JSON_KEY] == CANONICAL_ORIENTATION == "LPS"

    exported = {}
    for case_id in ("plain", "flip"):
        image, image_geometry = read_volume(result.folder / "imagesTr" / f"{case_id}_0000.nii.gz", case_id)
        label, label_geometry = read_volume(result.folder / "labelsTr" / f"{case_id}.nii.gz", case_id)
        assert image_geometry.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        assert label_geometry == image_geometry and label.dtype == np.uint8 and image.dtype == np.int16
        exported[case_id] = image, label, image_geometry
    assert not (result.folder / "imagesTr" / "flip_0000.nii.gz").is_symlink()
    np.testing.assert_array_equal(exported["flip"][0], exported["plain"][0])
    np.testing.assert_array_equal(exported["flip"][1], exported["plain"][1])
    assert exported["flip"][1].any()
    assert exported["flip"][2].differences(exported["plain"][2]) == []  # same physical placement
    assert tree_hashes(tmp_path / "inputs") == before

    again = export([plain, flipped], tmp_path / "raw")
    assert again.written == [] and again.image_mode == result.image_mode and again.digest == result.digest


def test_exports_from_before_orientations_are_redone(phantom_cases, tmp_path):
    first = export_tumor_dataset(phantom_cases, tmp_path / "raw")
    manifest_path = first.folder / dataset_export.MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    assert manifest["transform"] == "tumor_only:v1;orientation=LPS"
    manifest["transform"] = "tumor_only:v1"  # what exports in stored order recorded
    manifest_path.write_text(json.dumps(manifest))
    assert export_tumor_dataset(phantom_cases, tmp_path / "raw").written == ["syn_000", "syn_001", "syn_002"]
