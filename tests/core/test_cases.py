"""Case ids are validated before they become partition keys and file names."""
import pytest

from flare_core.cases import TRAIN, case_id_problem, discover_cases
from flare_core.layout import DataLayout


@pytest.mark.parametrize("case_id", ["FLARE23_0001", "case-7", "a.b_c"])
def test_safe_ids_pass(case_id):
    assert case_id_problem(case_id) is None


@pytest.mark.parametrize("case_id, problem", [
    ("", "empty"), ("a/b", "path separator"), ("a\\b", "path separator"), ("x..y", "'..'"),
    ("bad name", "characters"), ("-lead", "characters"), ("caf\u00e9", "characters"),
])
def test_unsafe_ids_are_reported(case_id, problem):
    assert problem in case_id_problem(case_id)


def test_discovery_sorts_good_and_rejects_bad_names(tmp_path):
    layout = DataLayout(tmp_path)
    images = layout.folder("train_images")
    images.mkdir(parents=True)
    for name in ["B_0000.nii.gz", "A_0000.nii.gz", "a_0000.nii.gz", "bad name_0000.nii.gz",
                 "notes.txt", ".A_0000.nii.gz.tmp"]:
        (images / name).write_bytes(b"x")
    found = discover_cases(layout, TRAIN)
    assert found.case_ids == ["A", "B"]
    assert "duplicates 'A'" in found.rejected["a_0000.nii.gz"]
    assert "characters" in found.rejected["bad name_0000.nii.gz"]
    assert "not an image" in found.rejected["notes.txt"]
    assert len(found.rejected) == 3


def test_missing_folder_means_no_cases(tmp_path):
    assert discover_cases(DataLayout(tmp_path), TRAIN).case_ids == []
