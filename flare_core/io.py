"""Reading and writing CT volumes and label maps without losing geometry.

Arrays are numpy in (z, y, x) order, as SimpleITK returns them; the geometry
(size, spacing, origin, direction) travels beside them in `Geometry`. Every
write goes to a temporary file in the target folder and is renamed into place,
so a crash never leaves a half-written output behind.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import SimpleITK as sitk

# Geometry is compared with a tolerance: headers written by other tools carry
# float noise in spacing, origin and direction.
GEOMETRY_ATOL = 1e-4


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class CaseError(ValueError):
    """A problem with one case's files; the message names the case."""

    def __init__(self, case_id: str, problem: str):
        super().__init__(f"case {case_id!r}: {problem}")
        self.case_id = case_id
        self.problem = problem


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a volume: ITK conventions, (x, y, z) order."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(
            size=tuple(int(s) for s in image.GetSize()),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
        )

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(reversed(self.spacing))

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(reversed(self.size))

    def differences(self, other: "Geometry") -> list[str]:
        """Human-readable list of how `other` differs from this geometry."""
        problems = []
        if self.size != other.size:
            problems.append(f"size {other.size} != {self.size}")
        for name in ("spacing", "origin", "direction"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if not np.allclose(mine, theirs, atol=GEOMETRY_ATOL, rtol=0):
                problems.append(f"{name} {_fmt(theirs)} != {_fmt(mine)}")
        return problems

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Geometry":
        return cls(**{key: tuple(data[key]) for key in ("size", "spacing", "origin", "direction")})

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def read_image(path: Path, case_id: str) -> sitk.Image:
    """Read a NIfTI volume, turning every failure into a `CaseError`."""
    path = Path(path)
    if not path.is_file():
        raise CaseError(case_id, f"file not found: {path.name}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown"
        raise CaseError(case_id, f"unreadable or truncated file {path.name} ({reason})") from None
    if image.GetDimension() != 3:
        raise CaseError(case_id, f"{path.name} is {image.GetDimension()}D, expected 3D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(case_id, f"{path.name} has {image.GetNumberOfComponentsPerPixel()} components per voxel, expected 1")
    return image


def read_geometry(path: Path, case_id: str) -> Geometry:
    """Geometry from the file header alone (no voxel data is read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise CaseError(case_id, f"unreadable header in {Path(path).name}") from None
    return Geometry(
        size=tuple(int(s) for s in reader.GetSize()),
        spacing=tuple(float(s) for s in reader.GetSpacing()),
        origin=tuple(float(o) for o in reader.GetOrigin()),
        direction=tuple(float(d) for d in reader.GetDirection()),
    )


def read_volume(path: Path, case_id: str) -> tuple[np.ndarray, Geometry]:
    """Array in (z, y, x) order and its geometry."""
    image = read_image(path, case_id)
    return sitk.GetArrayFromImage(image), Geometry.of(image)


def read_ct(path: Path, case_id: str) -> tuple[np.ndarray, Geometry]:
    """A CT image as float32, rejecting non-finite intensities."""
    array, geometry = read_volume(path, case_id)
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise CaseError(case_id, f"{Path(path).name} has {bad} non-finite voxels (NaN or inf)")
    return array, geometry


def read_label(path: Path, case_id: str, image_geometry: Geometry | None = None,
               max_label: int = 14) -> tuple[np.ndarray, Geometry]:
    """A label map as uint8, checked for integer values in 0..max_label and,
    when `image_geometry` is given, for the image's exact geometry."""
    array, geometry = read_volume(path, case_id)
    name = Path(path).name
    if image_geometry is not None:
        problems = image_geometry.differences(geometry)
        if problems:
            raise CaseError(case_id, f"{name} geometry differs from its image: " + "; ".join(problems))
    return validate_label_values(array, case_id, name, max_label), geometry


def validate_label_values(array: np.ndarray, case_id: str, name: str, max_label: int = 14) -> np.ndarray:
    """Return the label array as uint8 after checking its values."""
    if array.dtype == np.uint8 and int(array.max(initial=0)) <= max_label:
        return array  # the common case, without np.unique's full sort
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise CaseError(case_id, f"{name} has non-integer label values")
    values = np.unique(array)
    bad = [int(v) for v in values if v < 0 or v > max_label]
    if bad:
        raise CaseError(case_id, f"{name} has label values {bad} outside 0..{max_label}")
    return array.astype(np.uint8, copy=False)


def write_volume(array: np.ndarray, geometry: Geometry, path: Path) -> Path:
    """Write `array` (z, y, x) with `geometry`, atomically."""
    if tuple(array.shape) != geometry.shape_zyx:
        raise ValueError(f"array shape {array.shape} does not match geometry {geometry.shape_zyx}")
    image = geometry.apply_to(sitk.GetImageFromArray(array))
    return write_image(image, path)


def write_image(image: sitk.Image, path: Path) -> Path:
    """Write a SimpleITK image atomically (compressed when the name ends in .gz)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=path.name.endswith(".gz"))
    return path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place on success.

    The temporary name keeps the final suffixes (".nii.gz") so writers that
    pick a format by extension behave as they would for the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; outputs get the permissions of a plain open().
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
        _remove_stale_temporaries(path, suffix)
    finally:
        if tmp.exists():
            tmp.unlink()


# A temporary file untouched this long belongs to a writer that died (kill -9
# mid-write); a live writer touches its file every few seconds at most.
STALE_TEMPORARY_SECONDS = 600.0


def _remove_stale_temporaries(path: Path, suffix: str) -> None:
    """Delete what killed writers of `path` left behind (`atomic_path`'s names)."""
    horizon = time.time() - STALE_TEMPORARY_SECONDS
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp{glob.escape(suffix)}"):
        with contextlib.suppress(OSError):  # another writer's cleanup got there first
            if leftover.stat().st_mtime < horizon:
                leftover.unlink()


def write_text(text: str, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(data: Any, path: Path) -> Path:
    return write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", path)


def write_bytes(data: bytes, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Content hash used in manifests to make lineage reproducible."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
