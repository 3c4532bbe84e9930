"""A defect matrix: hostile and broken inputs planted next to good cases.

`plant_defects(root)` adds, to a FLARE23-shaped data root, one case per
defect a user or a crashing copy can leave (the good cases are untouched) and
returns what the platform must do with each: refuse it at discovery (never a
partition), at registration (its checks fail, naming the case), or keep it
out of the student's training set; or take it as a case of its own without
disturbing any other. Every file is real: gzip streams cut or with a flipped
bit, NaN / inf voxels, float or misplaced labels, FIFOs, folders, links out of
the root, headers claiming 119 GiB.
"""
from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel
import numpy as np
import SimpleITK as sitk

from flare_core.io import read_volume, write_volume
from flare_core.layout import DataLayout

DISCOVERY, REGISTRATION, NOT_IN_STUDENT, ACCEPTED = "discovery", "registration", "not in student", "accepted"


@dataclass(frozen=True)
class Expected:
    stage: str  # where the platform must stop it
    says: str  # what its message must contain (besides the case id)
    split: str = "train"


def plant_defects(root: Path, outside: Path) -> dict[str, Expected]:
    """Plant every defect under `root` (`outside`: a folder beyond the data root)."""
    layout = DataLayout(root)
    donor_image, donor_label = layout.train_image("FLARE23_0001"), layout.train_label("FLARE23_0001")
    image_bytes = donor_image.read_bytes()
    expected: dict[str, Expected] = {}

    def image_of(case_id: str, data: bytes | None = None, label: bool = True) -> Path:
        path = layout.train_image(case_id)
        path.write_bytes(image_bytes if data is None else data)
        if label:
            shutil.copy(donor_label, layout.train_label(case_id))
        return path

    # Refused by discovery: never a partition.
    image_of("bad name", label=False)
    expected["bad name"] = Expected(DISCOVERY, "characters outside")
    image_of("BAD_NEWLINE\n", label=False)
    expected["BAD_NEWLINE\n"] = Expected(DISCOVERY, "characters outside")
    image_of("BAD_EMPTY", b"", label=False)
    expected["BAD_EMPTY"] = Expected(DISCOVERY, "empty (0 bytes)")
    image_of("BAD_GARBAGE", gzip.compress(b"not a nifti file " * 64), label=False)
    expected["BAD_GARBAGE"] = Expected(DISCOVERY, "unreadable NIfTI header")
    image_of("BAD_HALF", image_bytes[: len(image_bytes) // 2])
    expected["BAD_HALF"] = Expected(DISCOVERY, "incomplete")
    image_of("BAD_HUGE", _huge_header(), label=False)
    expected["BAD_HUGE"] = Expected(DISCOVERY, "GiB")
    _write(layout.train_image("BAD_2D"), np.zeros((32, 32), np.int16))
    expected["BAD_2D"] = Expected(DISCOVERY, "2D")
    _write(layout.train_image("BAD_4D"), np.zeros((2, 4, 16, 16), np.int16))
    expected["BAD_4D"] = Expected(DISCOVERY, "4D")
    elsewhere = shutil.copy(donor_image, outside / "elsewhere_0000.nii.gz")
    os.symlink(elsewhere, layout.train_image("BAD_LINK_OUT"))
    expected["BAD_LINK_OUT"] = Expected(DISCOVERY, "outside the data root")
    os.symlink("/dev/zero", layout.train_image("BAD_ZERO"))
    expected["BAD_ZERO"] = Expected(DISCOVERY, "not a regular file")
    layout.train_image("BAD_FOLDER").mkdir()
    expected["BAD_FOLDER"] = Expected(DISCOVERY, "not a regular file")
    label_bytes = donor_label.read_bytes()
    image_of("BAD_LABEL_HALF", label=False)
    layout.train_label("BAD_LABEL_HALF").write_bytes(label_bytes[: len(label_bytes) // 2])
    expected["BAD_LABEL_HALF"] = Expected(DISCOVERY, "incomplete")

    # Refused by registration: a partition whose blocking checks fail.
    image_of("BAD_FLIPPED_BIT", _flip(image_bytes, len(image_bytes) // 2))
    expected["BAD_FLIPPED_BIT"] = Expected(REGISTRATION, "corrupt")
    image_of("BAD_CRC", _flip(image_bytes, len(image_bytes) - 6))
    expected["BAD_CRC"] = Expected(REGISTRATION, "corrupt")
    image, geometry = read_volume(donor_image, "FLARE23_0001")
    with_nan = image.astype(np.float32)
    with_nan[tuple(s // 2 for s in with_nan.shape)] = np.nan
    write_volume(with_nan, geometry, layout.train_image("BAD_NAN"))
    shutil.copy(donor_label, layout.train_label("BAD_NAN"))
    expected["BAD_NAN"] = Expected(REGISTRATION, "non-finite")
    with_inf = image.astype(np.float32)
    with_inf[tuple(s // 3 for s in with_inf.shape)] = -np.inf
    write_volume(with_inf, geometry, layout.train_image("BAD_INF"))
    shutil.copy(donor_label, layout.train_label("BAD_INF"))
    expected["BAD_INF"] = Expected(REGISTRATION, "non-finite")
    label, _ = read_volume(donor_label, "FLARE23_0001")
    image_of("BAD_LABEL_17", label=False)
    seventeen = label.copy()
    seventeen.flat[0] = 17
    write_volume(seventeen, geometry, layout.train_label("BAD_LABEL_17"))
    expected["BAD_LABEL_17"] = Expected(REGISTRATION, "17")
    image_of("BAD_FLOAT_LABEL", label=False)
    halves = label.astype(np.float32)
    halves.flat[0] = 0.5
    write_volume(halves, geometry, layout.train_label("BAD_FLOAT_LABEL"))
    expected["BAD_FLOAT_LABEL"] = Expected(REGISTRATION, "non-integer")
    image_of("BAD_GEOMETRY", label=False)
    moved = type(geometry)(geometry.size, tuple(s * 1.5 for s in geometry.spacing), geometry.origin, geometry.direction)
    write_volume(label, moved, layout.train_label("BAD_GEOMETRY"))
    expected["BAD_GEOMETRY"] = Expected(REGISTRATION, "geometry")
    image_of("BAD_LABEL_OUT", label=False)
    os.symlink(shutil.copy(donor_label, outside / "elsewhere.nii.gz"), layout.train_label("BAD_LABEL_OUT"))
    expected["BAD_LABEL_OUT"] = Expected(REGISTRATION, "outside the data root")
    image_of("BAD_CT_AS_LABEL", label=False)
    shutil.copy(donor_image, layout.train_label("BAD_CT_AS_LABEL"))
    expected["BAD_CT_AS_LABEL"] = Expected(REGISTRATION, "label")
    image_of("BAD_FIFO", label=False)
    os.mkfifo(layout.train_label("BAD_FIFO"))
    expected["BAD_FIFO"] = Expected(REGISTRATION, "not a regular file")

    # Nothing to learn from: no label and no organ pseudo-label.
    image_of("NO_TARGETS", label=False)
    expected["NO_TARGETS"] = Expected(NOT_IN_STUDENT, "")

    # Names that once collided with other outputs: cases of their own now.
    image_of("FLARE23_0001.error")
    expected["FLARE23_0001.error"] = Expected(ACCEPTED, "")
    image_of("FLARE23_0002.partial_fused")
    expected["FLARE23_0002.partial_fused"] = Expected(ACCEPTED, "")

    # A corrupt scan to predict, and an inference case sharing a training case's id.
    infer_donor = sorted(layout.folder("infer_images").glob("*_0000.nii.gz"))[0]
    infer_bytes = infer_donor.read_bytes()
    (layout.folder("infer_images") / "BADTs_FLIPPED_0000.nii.gz").write_bytes(_flip(infer_bytes, len(infer_bytes) // 2))
    expected["BADTs_FLIPPED"] = Expected(REGISTRATION, "corrupt", split="infer")
    shutil.copy(infer_donor, layout.folder("infer_images") / "FLARE23_0002_0000.nii.gz")
    expected["FLARE23_0002"] = Expected(ACCEPTED, "", split="infer")
    return expected


def _flip(data: bytes, position: int) -> bytes:
    flipped = bytearray(data)
    flipped[position] ^= 0x10
    return bytes(flipped)


def _huge_header() -> bytes:
    """A valid NIfTI header claiming 4000^3 int16 voxels, followed by almost nothing."""
    header = nibabel.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)).header
    header.set_data_shape((4000, 4000, 4000))
    return gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 512)


def _write(path: Path, array: np.ndarray) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=False), str(path))
