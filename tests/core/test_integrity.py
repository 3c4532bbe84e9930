"""Corrupt, special and hostile inputs are refused before anything reads them as data:
what SimpleITK alone accepts (a cut gzip, a flipped bit, a wrong CRC, NaN voxels)
and what would hang or mislead a reader (a FIFO, /dev/zero, links out of the root)."""
import gzip
import os
import shutil
import threading

import numpy as np
import pytest
import SimpleITK as sitk

from flare_core.cases import case_id_problem, discover_cases
from flare_core.integrity import verify_whole
from flare_core.inventory import CHECK_READABLE, inspect_case
from flare_core.io import CaseError
from flare_core.layout import DataLayout
from flare_core.nnunet.model_loading import UntrustedCheckpoint, verify_checkpoint


def _nifti(path, array):
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(0)
    return _nifti(tmp_path / "good.nii.gz", rng.integers(-1000, 1000, (8, 16, 16)).astype(np.int16))


def test_a_whole_file_passes_and_its_hash_comes_from_the_same_read(good):
    from flare_core.io import file_sha256

    assert verify_whole(good, "case") == file_sha256(good)


def test_a_gzip_cut_in_half_is_refused_though_simpleitk_may_read_it(good, tmp_path):
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(CaseError, match="case 'case'.*cut.nii.gz is truncated"):
        verify_whole(cut, "case")


def test_a_flipped_bit_in_the_stream_or_the_crc_is_refused(good, tmp_path):
    data = bytearray(good.read_bytes())
    for name, position in (("deflate", len(data) // 2), ("crc", len(data) - 6)):
        bad = bytearray(data)
        bad[position] ^= 0x10
        path = tmp_path / f"{name}.nii.gz"
        path.write_bytes(bytes(bad))
        with pytest.raises(CaseError, match=f"{name}.nii.gz is (corrupt|truncated)"):
            verify_whole(path, "case")


def test_nan_and_inf_voxels_are_found_where_simpleitk_reads_zeros(tmp_path):
    array = np.zeros((4, 8, 8), np.float32)
    array[1, 2, 3], array[2, 3, 4] = np.nan, np.inf
    path = _nifti(tmp_path / "nan.nii.gz", array)
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all(), "SimpleITK hides them"
    with pytest.raises(CaseError, match="2 non-finite voxels"):
        verify_whole(path, "case")


def test_an_uncompressed_file_cut_short_is_refused(good, tmp_path):
    raw = tmp_path / "raw.nii"
    raw.write_bytes(gzip.decompress(good.read_bytes())[:-100])
    with pytest.raises(CaseError, match="raw.nii is truncated"):
        verify_whole(raw, "case")


def test_case_ids_with_a_trailing_newline_are_unsafe():
    assert case_id_problem("FLARE23_0001\n") is not None
    assert case_id_problem("FLARE23_0001") is None


def _one_case_root(tmp_path, good):
    layout = DataLayout(tmp_path / "data")
    for name in ("train_images", "train_labels"):
        layout.folder(name).mkdir(parents=True)
    shutil.copy(good, layout.train_image("case1"))
    return layout


def test_a_fifo_as_label_is_a_check_problem_not_a_hang(tmp_path, good):
    layout = _one_case_root(tmp_path, good)
    os.mkfifo(layout.train_label("case1"))
    result = {}
    worker = threading.Thread(target=lambda: result.update(inventory=inspect_case(layout, "train", "case1")),
                              daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "registration blocked on a FIFO"
    problems = result["inventory"].problems[CHECK_READABLE]
    assert problems and "not a regular file" in problems[0] and "case1" in problems[0]


def test_special_files_and_links_out_of_the_root_are_rejected_by_discovery(tmp_path, good):
    layout = _one_case_root(tmp_path, good)
    outside = shutil.copy(good, tmp_path / "elsewhere.nii.gz")
    os.symlink(outside, layout.train_image("linked"))
    os.symlink("/dev/zero", layout.train_image("zero"))
    found = discover_cases(layout, "train")
    assert found.case_ids == ["case1"]
    assert "outside the data root" in found.rejected["linked_0000.nii.gz"]
    assert "not a regular file" in found.rejected["zero_0000.nii.gz"]


def test_a_checkpoint_is_unpickled_only_when_it_is_the_one_training_recorded(tmp_path):
    work = tmp_path / "work"
    fold = work / "results" / "fold_all"
    fold.mkdir(parents=True)
    checkpoint = fold / "checkpoint_final.pth"
    checkpoint.write_bytes(b"weights")
    import hashlib

    sha = hashlib.sha256(b"weights").hexdigest()
    assert verify_checkpoint(work / "results", sha, work) == checkpoint.resolve()
    checkpoint.write_bytes(b"planted payload")
    with pytest.raises(UntrustedCheckpoint, match="changed since it was trained"):
        verify_checkpoint(work / "results", sha, work)
    foreign = tmp_path / "foreign"
    shutil.copytree(work / "results", foreign)
    with pytest.raises(UntrustedCheckpoint, match="outside the work root"):
        verify_checkpoint(foreign, sha, work)


class _Payload:
    """What a planted checkpoint carries: code that runs when it is unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_checkpoint_with_a_pickled_payload_is_refused_unrun(tmp_path):
    import torch

    from flare_core.nnunet.model_loading import read_checkpoint

    marker = tmp_path / "payload_ran"
    planted = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "current_epoch": 1, "extra": _Payload(marker)}, planted)
    with pytest.raises(Exception, match="(?i)weights only"):
        read_checkpoint(planted)
    assert not marker.exists()
    whole = tmp_path / "whole.pth"  # what nnU-Net writes: tensors, plain values and numpy scalars
    torch.save({"network_weights": {"w": torch.ones(2)}, "_best_ema": np.float64(0.5),
                "logging": {"mean_fg_dice": [np.float32(0.25)]}, "current_epoch": 3}, whole)
    assert read_checkpoint(whole)["_best_ema"] == 0.5


def test_a_huge_claimed_size_is_refused_by_registration_before_any_allocation(tmp_path):
    """A header claiming 4000^3 int16 voxels (119 GiB) over a tiny body: refused
    with the size, from the header alone (a read would need 119 GiB)."""
    import nibabel

    header = nibabel.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)).header
    header.set_data_shape((4000, 4000, 4000))
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 516))
    with pytest.raises(CaseError, match=r"claims 4000 x 4000 x 4000 .*119\.2 GiB.*refused before reading"):
        verify_whole(path, "huge")


def test_a_gzip_bomb_is_refused_as_it_inflates(tmp_path):
    """A valid 8 x 16 x 16 header followed by 128 MiB of zeros that gzip
    squeezes to a few hundred KB: refused once it inflates past what the header
    needs (4 KB plus 1 MiB of slack), long before it is all inflated."""
    import nibabel

    header = nibabel.Nifti1Image(np.zeros((16, 16, 8), np.int16), np.eye(4)).header
    body = header.binaryblock + b"\0" * 4
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb", compresslevel=9) as stream:
        stream.write(body)
        zeros = b"\0" * (1 << 24)
        for _ in range(8):
            stream.write(zeros)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(CaseError, match="inflates past the .* bytes its header needs"):
        verify_whole(path, "bomb")
