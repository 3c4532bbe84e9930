"""Volume I/O keeps geometry, writes atomically and names the case in errors."""
import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from flare_core.io import CaseError, Geometry, atomic_path, read_ct, read_label, read_volume, write_volume

GEOMETRY = Geometry(size=(6, 5, 4), spacing=(0.8, 0.7, 3.0), origin=(-120.0, 35.5, 900.0),
                    direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))


def _label(values=(0, 1, 14)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.choice(values, size=GEOMETRY.shape_zyx).astype(np.uint8)


def test_round_trip_preserves_array_and_geometry(tmp_path):
    array = _label()
    path = write_volume(array, GEOMETRY, tmp_path / "case.nii.gz")
    loaded, geometry = read_volume(path, "case")
    assert np.array_equal(loaded, array)
    assert geometry.differences(GEOMETRY) == []
    assert geometry.spacing_zyx == pytest.approx((3.0, 0.7, 0.8))


def test_write_leaves_no_temporary_files(tmp_path):
    write_volume(_label(), GEOMETRY, tmp_path / "a.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["a.nii.gz"]


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_the_next_write_removes_what_a_killed_writer_left_behind(tmp_path):
    """kill -9 mid-write leaves atomic_path's temporary file; the next write of
    the same output deletes it once it is stale, and leaves fresh ones (a live
    writer's) and other outputs' alone."""
    import os
    import time

    from flare_core.io import STALE_TEMPORARY_SECONDS

    dead = tmp_path / ".a.nii.gz.k1ll3d.tmp.nii.gz"
    live = tmp_path / ".a.nii.gz.w0rk1n.tmp.nii.gz"
    other = tmp_path / ".b.nii.gz.k1ll3d.tmp.nii.gz"
    for path in (dead, live, other):
        path.write_bytes(b"half a volume")
    old = time.time() - STALE_TEMPORARY_SECONDS - 5
    for path in (dead, other):
        os.utime(path, (old, old))
    write_volume(_label(), GEOMETRY, tmp_path / "a.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "a.nii.gz"])


def test_write_rejects_shape_that_does_not_match_geometry(tmp_path):
    with pytest.raises(ValueError, match="does not match"):
        write_volume(np.zeros((2, 2, 2), np.uint8), GEOMETRY, tmp_path / "bad.nii.gz")


def test_truncated_gzip_is_a_case_error(tmp_path):
    path = write_volume(_label(), GEOMETRY, tmp_path / "c.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CaseError, match=r"case 'c'.*unreadable or truncated"):
        read_volume(path, "c")


def test_garbage_file_is_a_case_error(tmp_path):
    path = tmp_path / "g.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti file at all" * 20))
    with pytest.raises(CaseError, match="case 'g'"):
        read_volume(path, "g")


def test_missing_file_is_a_case_error(tmp_path):
    with pytest.raises(CaseError, match="file not found"):
        read_volume(tmp_path / "nope.nii.gz", "nope")


def test_2d_image_is_rejected(tmp_path):
    path = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4), np.int16)), str(path))
    with pytest.raises(CaseError, match="2D, expected 3D"):
        read_volume(path, "flat")


def test_non_finite_ct_is_rejected(tmp_path):
    image = np.zeros(GEOMETRY.shape_zyx, np.float32)
    image[0, 0, 0] = np.nan
    # MetaImage keeps NaN (the NIfTI writer here turns it into 0).
    path = write_volume(image, GEOMETRY, tmp_path / "nan_0000.mha")
    with pytest.raises(CaseError, match="1 non-finite voxels"):
        read_ct(path, "nan")


def test_label_value_outside_range_is_rejected(tmp_path):
    path = write_volume(_label((0, 3, 17)), GEOMETRY, tmp_path / "l.nii.gz")
    with pytest.raises(CaseError, match=r"label values \[17\] outside 0..14"):
        read_label(path, "l")


def test_fractional_label_is_rejected(tmp_path):
    path = write_volume(np.full(GEOMETRY.shape_zyx, 0.5, np.float32), GEOMETRY, tmp_path / "f.nii.gz")
    with pytest.raises(CaseError, match="non-integer"):
        read_label(path, "f")


def test_label_geometry_must_match_image(tmp_path):
    shifted = Geometry(GEOMETRY.size, GEOMETRY.spacing, (0.0, 0.0, 0.0), GEOMETRY.direction)
    path = write_volume(_label(), shifted, tmp_path / "m.nii.gz")
    with pytest.raises(CaseError, match=r"case 'm'.*geometry differs.*origin"):
        read_label(path, "m", image_geometry=GEOMETRY)
    labels, _ = read_label(path, "m")
    assert labels.dtype == np.uint8
