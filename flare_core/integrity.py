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
# 512 x 512 x 4096: past any abdominal CT. A header that claims more is refused
# before anything is allocated for it.
MAX_VOXELS = 512 * 512 * 4096
HEADER_SLACK = 1 << 20  # extensions and padding a writer may add beyond the header's size


def verify_whole(path: Path, case_id: str) -> str:
    """The file's sha256, once it is proven a complete NIfTI volume whose
    voxels are all finite; else `CaseError` naming the case and the file.
    (The hash comes from the same read, so registration reads the file once.)"""
    path = Path(path)
    needed = _needed_bytes(path, case_id)  # before reading: a huge claim is refused unallocated
    stored = path.read_bytes()
    raw = _content(path, stored, case_id, limit=needed + HEADER_SLACK)
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


def _needed_bytes(path: Path, case_id: str) -> int:
    """Header plus voxel bytes the header claims; CaseError for an unreadable
    header or a claim past MAX_VOXELS."""
    try:
        header = nibabel.load(path).header  # the header only
    except Exception as error:  # noqa: BLE001 - nibabel raises several kinds for a bad header
        raise CaseError(case_id, f"{path.name} is not a readable NIfTI volume ({_reason(error)})") from None
    problem = size_problem(path, header)
    if problem:
        raise CaseError(case_id, problem)
    return _bytes_needed_by(header)


def _bytes_needed_by(header) -> int:
    voxels = int(np.prod(header.get_data_shape(), dtype=np.int64))
    # Writers may leave vox_offset 0: the data then follow the header and its extension flag.
    return max(int(header.get_data_offset()), int(header.sizeof_hdr) + 4) + voxels * header.get_data_dtype().itemsize


def size_problem(path: Path, header) -> str | None:
    """A header claiming more voxels than any CT of this task has, or None."""
    shape = tuple(int(n) for n in header.get_data_shape())
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels <= MAX_VOXELS:
        return None
    gib = voxels * header.get_data_dtype().itemsize / 2**30
    return (f"{Path(path).name} claims {' x '.join(map(str, shape))} = {voxels:,} voxels ({gib:.1f} GiB), more "
            f"than the {MAX_VOXELS:,} a CT of this task can have: refused before reading")


def _content(path: Path, stored: bytes, case_id: str, limit: int) -> bytes:
    """The file's bytes, decompressed and verified when it is gzip; a stream
    that inflates past `limit` (what the header needs) is refused as it grows."""
    if stored[:2] != b"\x1f\x8b":
        return stored
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(stored), mode="rb") as stream:
            chunks, total = [], 0
            while chunk := stream.read(CHUNK):
                total += len(chunk)
                if total > limit:
                    raise CaseError(case_id, f"{path.name} inflates past the {limit:,} bytes its header needs "
                                             "(a gzip bomb or a wrong header)")
                chunks.append(chunk)
            return b"".join(chunks)
    except EOFError:
        raise CaseError(case_id, f"{path.name} is truncated: its gzip stream ends early") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as error:
        raise CaseError(case_id, f"{path.name} is corrupt: {_reason(error)}") from None


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


def completeness_problem(path: Path) -> str | None:
    """Whether a file holds all the bytes its header needs, judged cheaply
    (the header and the last 4 bytes): a copy still under way does not. A
    header claiming an impossible size is named here too (`size_problem`).

    A gzip file records its uncompressed length (mod 2**32) in its last 4
    bytes, so a stream cut short almost surely ends in other bytes. This is no
    proof (`verify_whole` is); it lets discovery wait for a file that is still
    arriving instead of registering it half-written."""
    path = Path(path)
    if not path.is_file():  # a FIFO or device would block or never end: `file_problem` reports those
        return None
    try:
        header = nibabel.load(path).header
    except Exception:  # noqa: BLE001 - an unreadable header is the header check's to report
        return None
    problem = size_problem(path, header)
    if problem:
        return problem
    needed = _bytes_needed_by(header)
    try:
        with open(path, "rb") as handle:
            compressed = handle.read(2) == b"\x1f\x8b"
            handle.seek(0, io.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4))
            trailer = handle.read(4)
    except OSError:  # removed or replaced while looked at: the next scan sees it again
        return None
    if compressed:
        recorded = int.from_bytes(trailer, "little")
        if recorded != needed % 2 ** 32:
            return (f"{path.name} is incomplete: its gzip stream ends without the {needed} bytes its header "
                    "needs (still being copied, or cut short)")
    elif size < needed:
        return f"{path.name} is incomplete: {size} of the {needed} bytes its header needs"
    return None
