"""Proof that a NIfTI file is whole before anything is trained on it.

SimpleITK (ITK's NIfTI reader) reads a gzip stream cut short, a flipped bit
in the deflate stream or a wrong CRC trailer without an error, the missing
voxels becoming 0, and it turns NaN and inf voxels into 0 as well (measured:
a float32 file with NaN reads back as 0.0). So registration first reads each
file through Python's gzip, which checks the stream's end, CRC-32 and length,
and parses it with nibabel, which keeps non-finite values and fails on a
data block shorter than the header promises.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from pathlib import Path

import nibabel
import numpy as np

from flare_core.io import CaseError

# Decompressed in slices, joined once.
CHUNK = 1 << 22


def verify_whole(path: Path, case_id: str) -> str:
    """The file's sha256, once it is proven a complete NIfTI volume whose
    voxels are all finite; else `CaseError` naming the case and the file.
    (The hash comes from the same read, so registration reads the file once.)"""
    path = Path(path)
    stored = path.read_bytes()
    raw = _content(path, stored, case_id)
    try:
        image = nibabel.Nifti1Image.from_bytes(raw)
    except Exception as error:  # noqa: BLE001 - nibabel raises several kinds for a bad header
        raise CaseError(case_id, f"{path.name} is not a readable NIfTI volume ({_reason(error)})") from None
    try:
        voxels = image.dataobj.get_unscaled()
    except Exception as error:  # noqa: BLE001 - a data block shorter than the header promises
        raise CaseError(case_id, f"{path.name} is truncated: its voxel data is incomplete ({_reason(error)})") from None
    if np.issubdtype(voxels.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(voxels)))
        if bad:
            raise CaseError(case_id, f"{path.name} has {bad} non-finite voxels (NaN or inf)")
    return hashlib.sha256(stored).hexdigest()


def _content(path: Path, stored: bytes, case_id: str) -> bytes:
    """The file's bytes, decompressed and verified when it is gzip."""
    if stored[:2] != b"\x1f\x8b":
        return stored
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(stored), mode="rb") as stream:
            return b"".join(iter(lambda: stream.read(CHUNK), b""))
    except EOFError:
        raise CaseError(case_id, f"{path.name} is truncated: its gzip stream ends early") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as error:
        raise CaseError(case_id, f"{path.name} is corrupt: {_reason(error)}") from None


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__
