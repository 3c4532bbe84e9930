"""Small synthetic data for the nnU-Net tests.

`write_cases`: phantom cases (complete labels, every case with lesions), for
export and planning. `write_sphere_cases`: bright spherical "tumors" inside a
soft-tissue "organ" in noise, a task a tiny network learns within seconds, so
that training tests are reliable and quick.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from flare_core.io import Geometry, write_volume
from flare_core.nnunet.dataset_export import ExportCase
from flare_core.phantom import make_case


def write_cases(root: Path, seeds: list[int]) -> list[ExportCase]:
    """Tiny phantom cases as `<root>/images/<id>_0000.nii.gz` + `<root>/labels/<id>.nii.gz`."""
    cases = []
    for seed in seeds:
        case = make_case(seed, size="tiny", lesions=True)
        case_id = f"syn_{seed:03d}"
        image = write_volume(case.image, case.geometry, root / "images" / f"{case_id}_0000.nii.gz")
        label = write_volume(case.labels, case.geometry, root / "labels" / f"{case_id}.nii.gz")
        cases.append(ExportCase(case_id, image, label))
    return cases


def tree_hashes(root: Path) -> dict[str, str]:
    """Content hash of every file below `root` (inputs must never change)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    p, t = prediction.astype(bool), truth.astype(bool)
    denominator = p.sum() + t.sum()
    return 1.0 if denominator == 0 else float(2 * (p & t).sum() / denominator)


IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # LPS-like
RAS_LIKE = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def stored_ras_like(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry]:
    """The same volume, given with the identity direction, stored RAS-like:
    x and y voxel order reversed, direction diag(-1, -1, 1), the origin at the
    opposite corner, so that every voxel keeps its physical position. Written
    by hand, independently of `flare_core.orientation`."""
    assert geometry.direction == IDENTITY, geometry.direction
    (nx, ny, _), (sx, sy, _), (ox, oy, oz) = geometry.size, geometry.spacing, geometry.origin
    origin = (ox + (nx - 1) * sx, oy + (ny - 1) * sy, oz)
    return np.ascontiguousarray(array[:, ::-1, ::-1]), Geometry(geometry.size, geometry.spacing, origin, RAS_LIKE)


SPHERE_SHAPE = (20, 48, 48)  # z, y, x
SPHERE_SPACING_XYZ = (3.0, 3.0, 5.0)


def sphere_case(seed: int, flip: bool = False) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """(int16 image, uint8 labels with liver 1 and tumor 14, geometry)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SPHERE_SHAPE)
    image = np.full(SPHERE_SHAPE, -900.0)
    labels = np.zeros(SPHERE_SHAPE, np.uint8)
    body = ((y - 24) / 21) ** 2 + ((x - 24) / 22) ** 2 <= 1
    organ = body & (((y - 22) / 12) ** 2 + ((x - 20) / 14) ** 2 <= 1)
    image[body], image[organ], labels[organ] = 20.0, 60.0, 1
    for _ in range(int(rng.integers(1, 3))):
        cz, cy, cx = rng.integers(5, 15), rng.integers(14, 30), rng.integers(10, 32)
        radius = rng.uniform(3.0, 5.0)
        sphere = (((z - cz) * 5.0 / 3.0) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius ** 2) & body
        image[sphere], labels[sphere] = 180.0, 14
    image += rng.normal(0, 15, SPHERE_SHAPE)
    sign = -1.0 if flip else 1.0
    geometry = Geometry(size=SPHERE_SHAPE[::-1], spacing=SPHERE_SPACING_XYZ, origin=(10.0 * seed, -5.0, 100.0),
                        direction=(sign, 0.0, 0.0, 0.0, sign, 0.0, 0.0, 0.0, 1.0))
    return np.rint(image).astype(np.int16), labels, geometry


def write_sphere_cases(root: Path, seeds: list[int], flip_seeds: tuple[int, ...] = ()) -> list[ExportCase]:
    cases = []
    for seed in seeds:
        image, labels, geometry = sphere_case(seed, flip=seed in flip_seeds)
        case_id = f"sph_{seed:03d}"
        image_path = write_volume(image, geometry, root / "images" / f"{case_id}_0000.nii.gz")
        label_path = write_volume(labels, geometry, root / "labels" / f"{case_id}.nii.gz")
        cases.append(ExportCase(case_id, image_path, label_path))
    return cases
