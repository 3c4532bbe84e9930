"""Synthetic FLARE23-like abdominal CT cases and data roots, deterministic by seed.

`make_case` builds one contrast CT with its complete ground truth (13 organs
and lesions); `generate_dataset` writes a data root in `DataLayout`'s shape
with FLARE23's mix of partially labelled, fully labelled and unlabelled
training cases, imperfect organ pseudo-labels, and inference cases with ground
truth. The anatomy itself lives in `phantom_anatomy`.

Every case draws from its own generator seeded by (dataset seed, role, index),
so adding cases never changes the ones already generated.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from flare_core import labels as L
from flare_core import phantom_anatomy as anatomy
from flare_core.io import Geometry, write_json, write_volume
from flare_core.layout import DataLayout

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
MANIFEST_NAME = "phantom.json"
TRAIN_ROLE, INFER_ROLE = 0, 1


@dataclass(frozen=True)
class GridSpec:
    in_plane: int
    in_plane_mm: tuple[float, float]
    slices: tuple[int, int]
    slice_mm: tuple[float, float]
    centre_w: tuple[float, float]  # where the field of view is centred along w (mm)


SIZES: dict[str, GridSpec] = {
    # ~64x64x37 voxels: a 350 mm abdomen at ~6 mm in-plane, 7-8 mm slices. Slices
    # thicker than the in-plane spacing, as in FLARE, so nnU-Net keeps axial
    # slices as the 2D teacher's planes.
    "tiny": GridSpec(64, (5.8, 6.2), (34, 40), (7.0, 8.0), (-5.0, 5.0)),
    # ~96x96x54 voxels: the same abdomen at ~4 mm in-plane and ~5 mm slices, the
    # demo's default. At 6 mm an adrenal gland or the esophagus is 1-2 voxels
    # wide and a small lesion a handful of voxels, so one voxel of boundary error
    # costs a thin organ most of its Dice; at 4 mm it costs a third less.
    "small": GridSpec(96, (3.8, 4.2), (50, 58), (4.8, 5.4), (-5.0, 5.0)),
    # FLARE-like: 512x512, 0.7-0.9 mm in-plane, 2.5-3 mm slices, 250-420 mm long.
    "full": GridSpec(512, (0.7, 0.9), (100, 140), (2.5, 3.0), (-30.0, 10.0)),
}


@dataclass
class PhantomCase:
    """One synthetic CT: int16 HU image and uint8 complete labels, both (z, y, x)."""

    image: np.ndarray
    labels: np.ndarray
    geometry: Geometry
    lesions: list[dict] = field(default_factory=list)


def make_case(seed: int, size: str = "tiny", lesions: bool | None = None,
              direction_flip: bool = False) -> PhantomCase:
    """One case. `lesions`: True 1-3 lesions, False none, None 0-3 at random.

    Anatomy, lesions and noise draw from separate streams, so the same seed
    with `lesions=False` gives the same organs minus the lesions, and
    `direction_flip` (direction diag(-1, -1, 1)) changes only the voxel order.
    """
    if size not in SIZES:
        raise ValueError(f"unknown phantom size {size!r}; expected one of {sorted(SIZES)}")
    anatomy_rng, lesion_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    grid, geometry = _sample_grid(SIZES[size], anatomy_rng, direction_flip)
    canvas = anatomy.Canvas(grid)
    body = anatomy.sample_body(anatomy_rng)
    place = anatomy.Placement.for_body(body, anatomy_rng)
    anatomy.paint_body(canvas, body)
    anatomy.paint_surroundings(canvas, place, anatomy_rng)
    organ_hu = anatomy.paint_organs(canvas, place, anatomy_rng)
    found = anatomy.add_lesions(canvas, organ_hu, _lesion_count(lesions, lesion_rng), lesion_rng)
    image = _to_ct(canvas.hu, noise_rng)
    return PhantomCase(image=image, labels=canvas.labels, geometry=geometry, lesions=found)


def _sample_grid(spec: GridSpec, rng: np.random.Generator, flip: bool) -> tuple[anatomy.Grid, Geometry]:
    n = spec.in_plane
    sxy = round(float(rng.uniform(*spec.in_plane_mm)), 5)
    nz = int(rng.integers(spec.slices[0], spec.slices[1] + 1))
    sz = round(float(rng.uniform(*spec.slice_mm)), 5)
    angle = float(np.deg2rad(rng.uniform(-8, 8)))
    # Scanner-like physical placement: body off the isocentre, table anywhere.
    body_x, body_y, w_zero = rng.uniform(-25, 25), rng.uniform(-60, 10), rng.uniform(-650, -150)
    fov_x, fov_y = body_x + rng.uniform(-4, 4), body_y + rng.uniform(-4, 4)
    fov_z = w_zero + rng.uniform(*spec.centre_w)
    sign = -1.0 if flip else 1.0
    # Centred index offsets keep a flipped grid the exact mirror of an unflipped one.
    x = fov_x + sign * (np.arange(n) - (n - 1) / 2) * sxy
    y = fov_y + sign * (np.arange(n) - (n - 1) / 2) * sxy
    z = fov_z + (np.arange(nz) - (nz - 1) / 2) * sz
    grid = anatomy.Grid(x, y, z, (body_x, body_y, w_zero), angle, (sz, sxy, sxy))
    geometry = Geometry(size=(n, n, nz), spacing=(sxy, sxy, sz),
                        origin=(float(x[0]), float(y[0]), float(z[0])),
                        direction=(sign, 0.0, 0.0, 0.0, sign, 0.0, 0.0, 0.0, 1.0))
    return grid, geometry


def _lesion_count(lesions: bool | None, rng: np.random.Generator) -> int:
    if lesions is None:
        return int(rng.choice(4, p=[0.35, 0.35, 0.2, 0.1]))
    return int(rng.integers(1, 4)) if lesions else 0


def _to_ct(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = rng.uniform(8, 16)
    noisy = hu + rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(np.rint(noisy), -1024, 3071).astype(np.int16)


# --- label derivations ------------------------------------------------------

def partial_label(full: np.ndarray, annotated: Iterable[int]) -> np.ndarray:
    """The label file of a case that annotates only `annotated`: every other
    class is 0. Tumor voxels stay 14 only when 14 is annotated; otherwise they
    are 0 even inside an annotated organ (organ annotations exclude tumors)."""
    keep = np.isin(full, sorted(set(annotated) - {L.BACKGROUND}))
    return np.where(keep, full, 0).astype(np.uint8)


# Organs thin enough that a one-voxel erosion would erase them.
_THIN = (L.RIGHT_ADRENAL, L.LEFT_ADRENAL, L.GALLBLADDER, L.AORTA, L.IVC, L.ESOPHAGUS)
_MISSABLE = (L.RIGHT_ADRENAL, L.LEFT_ADRENAL, L.GALLBLADDER)
_MISS_PROBABILITY = 0.15


def organ_pseudo_label(full: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An imperfect 13-organ prediction of `full`, like the FLARE22 model's.

    Tumors become the surrounding organ (or 0); each organ's boundary is
    randomly eroded, dilated or shifted by a voxel; a small organ is sometimes
    missed. The liver is always perturbed, so the result never equals `full`.
    """
    out = _without_tumor(full, rng)
    boxes = ndimage.find_objects(out, max_label=L.MAX_LABEL)
    for organ in L.ORGANS:
        box = boxes[organ - 1]
        if box is None:
            continue
        box = _pad(box, 2, out.shape)
        if organ in _MISSABLE and rng.random() < _MISS_PROBABILITY:
            view = out[box]
            view[view == organ] = 0
            continue
        ops = ("dilate", "shift", "none") if organ in _THIN else ("erode", "dilate", "shift", "none")
        if organ == L.LIVER:
            ops = ops[:-1]
        _perturb(out[box], organ, str(rng.choice(ops)), rng)
    return out


def _without_tumor(full: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tumor voxels take the nearest non-tumor label, or 0 for a missed lesion."""
    out = full.astype(np.uint8, copy=True)
    components, count = ndimage.label(out == L.TUMOR)
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        box = _pad(box, 3, out.shape)
        region, lesion = out[box], components[box] == index
        if rng.random() < 0.3:
            region[lesion] = 0
            continue
        _, nearest = ndimage.distance_transform_edt(region == L.TUMOR, return_indices=True)
        region[lesion] = region[tuple(nearest)][lesion]
    return out


def _pad(box: tuple[slice, ...], margin: int, shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape))


def _perturb(region: np.ndarray, organ: int, op: str, rng: np.random.Generator) -> None:
    """Edit `region` (a view) in place; changes only this organ and background."""
    mask = region == organ
    if op == "erode":
        # Drop a random share of the boundary: a ragged, slightly small outline.
        rim = mask & ~ndimage.binary_erosion(mask)
        region[rim & (rng.random(mask.shape) < rng.uniform(0.3, 0.6))] = 0
    elif op == "dilate":
        shell = ndimage.binary_dilation(mask) & ~mask & (region == 0)
        region[shell & (rng.random(mask.shape) < rng.uniform(0.3, 0.6))] = organ
    elif op == "shift":
        axis = int(rng.integers(0, 3))
        moved = np.roll(mask, int(rng.choice([-1, 1])), axis=axis)
        region[mask & ~moved] = 0
        region[moved & (region == 0)] = organ


# --- data roots -------------------------------------------------------------

_FIRST_GROUPS = (L.GROUP_ALL_ORGANS_TUMOR, L.GROUP_ALL_ORGANS, L.GROUP_TUMOR_PARTIAL_ORGANS,
                 L.GROUP_PARTIAL_ORGANS, L.GROUP_TUMOR_ONLY, L.GROUP_TUMOR_PARTIAL_ORGANS)
# After the first block, groups are drawn with roughly FLARE23's proportions.
_LATER_GROUPS = {L.GROUP_ALL_ORGANS_TUMOR: 0.15, L.GROUP_ALL_ORGANS: 0.1, L.GROUP_TUMOR_PARTIAL_ORGANS: 0.35,
                 L.GROUP_TUMOR_ONLY: 0.1, L.GROUP_PARTIAL_ORGANS: 0.3}
_ORGAN_SUBSETS = (  # typical public-dataset subsets (MSD, KiTS, LiTS-like)
    {L.LIVER}, {L.RIGHT_KIDNEY, L.LEFT_KIDNEY}, {L.PANCREAS},
    {L.LIVER, L.SPLEEN, L.RIGHT_KIDNEY, L.LEFT_KIDNEY, L.PANCREAS},
)


def train_case_id(index: int) -> str:
    return f"FLARE23_{index + 1:04d}"


def infer_case_id(index: int) -> str:
    return f"FLARE23Ts_{index + 1:04d}"


def case_seed(seed: int, role: int, index: int) -> int:
    """Independent seed for one case of a data root."""
    return int(np.random.SeedSequence([seed, role, index]).generate_state(1)[0])


def plan_groups(seed: int, n_train: int, n_unlabelled: int | None = None) -> list[str]:
    """Label group of every training index: labelled cases first, unlabelled last.

    The first six labelled cases are a seed-shuffled block that holds three
    tumor-annotating groups, all-organs-no-tumor and partial organs, so any
    root with at least 6 labelled cases has the mix the tests and demos need.
    """
    if n_unlabelled is None:
        n_unlabelled = min(n_train, max(1, round(0.2 * n_train)))
    if not 0 <= n_unlabelled <= n_train:
        raise ValueError(f"n_unlabelled={n_unlabelled} must lie in 0..n_train={n_train}")
    n_labelled = n_train - n_unlabelled
    order = np.random.default_rng([seed, 7]).permutation(len(_FIRST_GROUPS))
    groups = [_FIRST_GROUPS[i] for i in order][:n_labelled]
    groups += [_later_group(seed, index) for index in range(len(groups), n_labelled)]
    if n_labelled < len(_FIRST_GROUPS):
        log.warning("only %d labelled training cases: the FLARE group mix is incomplete", n_labelled)
    return groups + [L.GROUP_UNLABELLED] * n_unlabelled


def _later_group(seed: int, index: int) -> str:
    rng = np.random.default_rng([seed, 7, index])
    return str(rng.choice(list(_LATER_GROUPS), p=list(_LATER_GROUPS.values())))


def annotated_classes(group: str, rng: np.random.Generator) -> set[int] | None:
    """A class set that `flare_core.labels.label_group` maps back to `group`."""
    organs = set(L.ORGANS)
    if group == L.GROUP_UNLABELLED:
        return None
    if group in (L.GROUP_ALL_ORGANS_TUMOR, L.GROUP_ALL_ORGANS):
        return organs | ({L.TUMOR} if group == L.GROUP_ALL_ORGANS_TUMOR else set())
    if group == L.GROUP_TUMOR_ONLY:
        return {L.TUMOR}
    pick = int(rng.integers(0, len(_ORGAN_SUBSETS) + 1))
    if pick < len(_ORGAN_SUBSETS):
        subset = set(_ORGAN_SUBSETS[pick])
    else:
        subset = {int(c) for c in rng.choice(L.ORGANS, size=int(rng.integers(1, 13)), replace=False)}
    return subset | ({L.TUMOR} if group == L.GROUP_TUMOR_PARTIAL_ORGANS else set())


def _write_train_case(layout: DataLayout, seed: int, size: str, index: int, group: str) -> dict:
    case_id = train_case_id(index)
    annotated = annotated_classes(group, np.random.default_rng([seed, TRAIN_ROLE, index, 1]))
    tumor_annotated = annotated is not None and L.TUMOR in annotated
    case = make_case(case_seed(seed, TRAIN_ROLE, index), size,
                     lesions=True if tumor_annotated else None, direction_flip=index % 3 == 1)
    write_volume(case.image, case.geometry, layout.train_image(case_id))
    write_volume(case.labels, case.geometry, layout.ground_truth(case_id))
    pseudo = organ_pseudo_label(case.labels, np.random.default_rng([seed, TRAIN_ROLE, index, 2]))
    write_volume(pseudo, case.geometry, layout.organ_pseudo_label(case_id))
    if annotated is not None:
        write_volume(partial_label(case.labels, annotated), case.geometry, layout.train_label(case_id))
    log.info("train case %s: %s, %d lesion(s)", case_id, group, len(case.lesions))
    return {**_entry(index, case), "group": group,
            "annotated": None if annotated is None else sorted(annotated)}


def _write_infer_case(layout: DataLayout, seed: int, size: str, index: int) -> dict:
    case_id = infer_case_id(index)
    case = make_case(case_seed(seed, INFER_ROLE, index), size, direction_flip=index % 3 == 1)
    write_volume(case.image, case.geometry, layout.infer_image(case_id))
    write_volume(case.labels, case.geometry, layout.infer_label(case_id))
    log.info("infer case %s: %d lesion(s)", case_id, len(case.lesions))
    return _entry(index, case)


def _entry(index: int, case: PhantomCase) -> dict:
    return {"index": index, "lesions": len(case.lesions),
            "lesion_hosts": [L.CLASS_NAMES[x["host"]] for x in case.lesions],
            "direction_flip": case.geometry.direction[0] < 0, "geometry": case.geometry.to_dict()}


def generate_dataset(out: Path, size: str = "tiny", seed: int = 0, n_train: int = 10, n_infer: int = 2,
                     n_unlabelled: int | None = None, start_index: int = 0) -> dict:
    """Write a FLARE23-shaped data root; returns `summarize` of its manifest.

    With `start_index` k only training and inference cases k.. are written and
    existing files are left alone (cases < k are assumed to be there already).
    """
    layout = DataLayout(Path(out))
    manifest = _load_manifest(Path(out), seed, size) if start_index else _new_manifest(seed, size)
    started = time.perf_counter()
    groups = plan_groups(seed, n_train, n_unlabelled)
    for index in range(start_index, n_train):
        manifest["train"][train_case_id(index)] = _write_train_case(layout, seed, size, index, groups[index])
    for index in range(start_index, n_infer):
        manifest["infer"][infer_case_id(index)] = _write_infer_case(layout, seed, size, index)
    write_json(manifest, Path(out) / MANIFEST_NAME)
    log.info("phantom data root %s written in %.1f s", out, time.perf_counter() - started)
    return summarize(manifest, Path(out))


def add_cases(out: Path, n_train: int = 0, n_infer: int = 0, unlabelled: bool = True) -> dict:
    """Append cases to an existing phantom data root without touching its files.

    New training cases are unlabelled (like new scans arriving) unless
    `unlabelled` is False, when their groups are drawn like later cases.
    """
    manifest = _load_manifest(Path(out))
    seed, size, layout = manifest["seed"], manifest["size"], DataLayout(Path(out))
    first_train, first_infer = _next_index(manifest["train"]), _next_index(manifest["infer"])
    for index in range(first_train, first_train + n_train):
        group = L.GROUP_UNLABELLED if unlabelled else _later_group(seed, index)
        manifest["train"][train_case_id(index)] = _write_train_case(layout, seed, size, index, group)
    for index in range(first_infer, first_infer + n_infer):
        manifest["infer"][infer_case_id(index)] = _write_infer_case(layout, seed, size, index)
    write_json(manifest, Path(out) / MANIFEST_NAME)
    return summarize(manifest, Path(out))


def _next_index(entries: dict) -> int:
    return max((e["index"] for e in entries.values()), default=-1) + 1


def _new_manifest(seed: int, size: str) -> dict:
    return {"generator": "flare_core.phantom", "version": GENERATOR_VERSION, "seed": seed, "size": size,
            "train": {}, "infer": {}}


def _load_manifest(root: Path, seed: int | None = None, size: str | None = None) -> dict:
    path = root / MANIFEST_NAME
    if not path.is_file():
        if seed is None:
            raise FileNotFoundError(f"{path} not found: not a phantom data root")
        return _new_manifest(seed, size)
    manifest = json.loads(path.read_text())
    for key, wanted in (("seed", seed), ("size", size)):
        if wanted is not None and manifest[key] != wanted:
            raise ValueError(f"{path} has {key}={manifest[key]!r}, asked for {wanted!r}")
    return manifest


def summarize(manifest: dict, root: Path) -> dict:
    """Case ids per role and label group, and which cases hold lesions."""
    train, infer = manifest["train"], manifest["infer"]
    groups: dict[str, list[str]] = {g: [] for g in L.LABEL_GROUPS}
    for case_id, entry in sorted(train.items()):
        groups[entry["group"]].append(case_id)
    return {
        "root": str(root), "seed": manifest["seed"], "size": manifest["size"],
        "train": sorted(train), "infer": sorted(infer), "groups": groups,
        "tumor_annotated_with_lesions": sorted(
            c for c, e in train.items() if e["annotated"] and L.TUMOR in e["annotated"] and e["lesions"]),
        "with_lesions": sorted(c for c, e in {**train, **infer}.items() if e["lesions"]),
        "direction_flipped": sorted(c for c, e in {**train, **infer}.items() if e["direction_flip"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flare_core.phantom", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="data root to write")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=10, help="training cases, unlabelled included")
    parser.add_argument("--infer", type=int, default=2, help="inference cases (with ground truth)")
    parser.add_argument("--unlabelled", type=int, default=None, help="unlabelled among --train (default ~20%%)")
    parser.add_argument("--start-index", type=int, default=0, help="write only cases from this index on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = generate_dataset(args.out, args.size, args.seed, args.train, args.infer, args.unlabelled,
                               args.start_index)
    log.info("groups: %s", {g: len(ids) for g, ids in summary["groups"].items() if ids})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
