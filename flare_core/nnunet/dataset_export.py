"""Export of nnU-Net v2 raw datasets (the teacher's tumor task and the student's 15 classes).

Layout written under `<nnUNet_raw>/DatasetXXX_Name/`:

    dataset.json                 channel_names {"0": "CT"}, labels, numTraining, file_ending,
                                 flare_orientation (the canonical orientation, "LPS")
    imagesTr/<case>_0000.nii.gz  the image in the canonical orientation: a symbolic link to the
                                 original when it is stored that way already (copy if links fail),
                                 else the original reoriented (`flare_core.orientation`)
    labelsTr/<case>.nii.gz       the transformed label array, reoriented, with the exported image's geometry
    flare_export_manifest.json   what each exported case was made from (content hashes)

nnU-Net reads voxels in stored order, so every case is exported in one
orientation; nnU-Net copies dataset.json into the model's results folder,
where the predictors read the orientation back.

Inputs are never modified. Exporting again is idempotent: a case whose image
and label are unchanged (content hash; size + mtime avoid rehashing) and whose
exported files are present is not rewritten, and cases that are no longer
requested are removed. `ExportResult.digest` identifies the exported content;
training uses it to decide whether an existing model is still current.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from flare_core import labels as flare_labels
from flare_core.cases import case_id_problem
from flare_core.io import (
    CaseError, atomic_path, file_sha256, read_geometry, read_image, read_label, write_image, write_json,
    write_text, write_volume,
)
from flare_core.layout import IMAGE_SUFFIX, LABEL_SUFFIX
from flare_core.orientation import (
    CANONICAL_ORIENTATION, DATASET_JSON_KEY, check_orientation_code, is_oriented, reorient_array, reorient_image,
)

log = logging.getLogger(__name__)

MANIFEST_NAME = "flare_export_manifest.json"
TEACHER_DATASET = (501, "FLARE23Tumor")
STUDENT_DATASET = (502, "FLARE23Student")

LabelTransform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ExportCase:
    """One training case: its original image and the label file to train on."""

    case_id: str
    image: Path
    label: Path


@dataclass
class ExportResult:
    dataset_name: str
    folder: Path
    cases: list[str]
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    digest: str = ""
    image_mode: dict[str, str] = field(default_factory=dict)  # case -> "symlink" | "copy" | "reoriented"


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name, e.g. Dataset501_FLARE23Tumor."""
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"nnU-Net dataset ids have three digits, got {dataset_id}")
    if not name or "/" in name or name.startswith("Dataset"):
        raise ValueError(f"bad dataset name {name!r}: give the part after DatasetXXX_")
    return f"Dataset{dataset_id:03d}_{name}"


def tumor_only(label: np.ndarray) -> np.ndarray:
    """Binary teacher target: tumor (14) -> 1, every other class -> 0."""
    return (label == flare_labels.TUMOR).astype(np.uint8)


def all_classes(label: np.ndarray) -> np.ndarray:
    """Student target: the organ-fused label as it is (already checked to be 0..14)."""
    return label.astype(np.uint8, copy=False)


TUMOR_LABELS: dict[str, int] = {"background": 0, "tumor": 1}
STUDENT_LABELS: dict[str, int] = {flare_labels.CLASS_NAMES[i]: i for i in range(flare_labels.MAX_LABEL + 1)}


def export_tumor_dataset(cases: Iterable[ExportCase], raw_root: Path, dataset_id: int = TEACHER_DATASET[0],
                         name: str = TEACHER_DATASET[1]) -> ExportResult:
    """The teacher's binary task from the partial labels of the tumor-subset cases."""
    return export_dataset(cases, raw_root, dataset_folder_name(dataset_id, name), TUMOR_LABELS, tumor_only,
                          transform_tag="tumor_only:v1", description="FLARE23 tumor subset, 14 -> 1")


def export_student_dataset(cases: Iterable[ExportCase], raw_root: Path, dataset_id: int = STUDENT_DATASET[0],
                           name: str = STUDENT_DATASET[1]) -> ExportResult:
    """The student's 15-class task from the organ-fused labels of all training cases."""
    return export_dataset(cases, raw_root, dataset_folder_name(dataset_id, name), STUDENT_LABELS, all_classes,
                          transform_tag="all_classes:v1", description="FLARE23 organ-fused labels, 15 classes")


def export_dataset(cases: Iterable[ExportCase], raw_root: Path, dataset_name: str, labels: Mapping[str, int],
                   label_transform: LabelTransform, transform_tag: str, description: str = "",
                   orientation: str = CANONICAL_ORIENTATION) -> ExportResult:
    """Export `cases` as the nnU-Net raw dataset `dataset_name` under `raw_root`,
    images and labels in `orientation`.

    `transform_tag` names the label transform; changing it (or the orientation)
    re-exports every case.
    """
    cases = _checked_cases(cases)
    orientation = check_orientation_code(orientation)
    # The orientation is part of what was exported: exports made before it was
    # recorded (tag without it, stored order) are redone, not trusted.
    transform_tag = f"{transform_tag};orientation={orientation}"
    folder = Path(raw_root) / dataset_name
    images_dir, labels_dir = folder / "imagesTr", folder / "labelsTr"
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    old = _read_manifest(folder)
    old_cases = old.get("cases", {}) if old.get("transform") == transform_tag else {}

    result = ExportResult(dataset_name=dataset_name, folder=folder, cases=[c.case_id for c in cases])
    entries: dict[str, Any] = {}
    for case in cases:
        entry, changed = _export_case(case, images_dir, labels_dir, old_cases.get(case.case_id), label_transform,
                                      orientation)
        entries[case.case_id] = entry
        result.image_mode[case.case_id] = entry["image_mode"]
        (result.written if changed else result.unchanged).append(case.case_id)

    result.removed = _remove_stale(images_dir, labels_dir, set(entries))
    _write_dataset_json(folder, dataset_name, labels, [c.case_id for c in cases], description, orientation)
    manifest = {"transform": transform_tag, "labels": dict(labels), "cases": entries}
    result.digest = _digest(manifest)
    write_json({**manifest, "digest": result.digest}, folder / MANIFEST_NAME)
    log.info("exported %s: %d cases (%d written, %d unchanged, %d removed)", dataset_name, len(cases),
             len(result.written), len(result.unchanged), len(result.removed))
    return result


def read_export_digest(dataset_folder: Path) -> str | None:
    """Digest of the last export into `dataset_folder`, or None if it was not exported here."""
    return _read_manifest(Path(dataset_folder)).get("digest")


def _checked_cases(cases: Iterable[ExportCase]) -> list[ExportCase]:
    checked: dict[str, ExportCase] = {}
    for case in cases:
        problem = case_id_problem(case.case_id)
        if problem:
            raise CaseError(case.case_id, problem)
        if case.case_id in checked:
            raise CaseError(case.case_id, "requested twice in one export")
        checked[case.case_id] = case
    if not checked:
        raise ValueError("an nnU-Net dataset needs at least one training case")
    return [checked[k] for k in sorted(checked)]


def _export_case(case: ExportCase, images_dir: Path, labels_dir: Path, old: Mapping[str, Any] | None,
                 label_transform: LabelTransform, orientation: str) -> tuple[dict[str, Any], bool]:
    """Export one case unless its sources and outputs are unchanged; returns (entry, written)."""
    image_out = images_dir / f"{case.case_id}{IMAGE_SUFFIX}"
    label_out = labels_dir / f"{case.case_id}{LABEL_SUFFIX}"
    old = old or {}
    image_src = _source_record(Path(case.image), case.case_id, old.get("image"))
    label_src = _source_record(Path(case.label), case.case_id, old.get("label"))
    entry = {"image": image_src, "label": label_src, "image_mode": old.get("image_mode", "")}

    image_ok = (old.get("image", {}).get("sha256") == image_src["sha256"]
                and _image_export_present(image_out, Path(case.image), old.get("image_mode")))
    label_ok = old.get("label", {}).get("sha256") == label_src["sha256"] and label_out.is_file()
    if image_ok and label_ok:
        return entry, False

    geometry = read_geometry(Path(case.image), case.case_id)  # header only: images can be large
    if not image_ok:
        if is_oriented(geometry, orientation):
            entry["image_mode"] = _link_or_copy(Path(case.image), image_out)
        else:
            entry["image_mode"] = _write_reoriented(Path(case.image), case.case_id, image_out, orientation)
    if not label_ok or not image_ok:
        label, _ = read_label(Path(case.label), case.case_id, image_geometry=geometry)
        # Placed with the image's geometry and reoriented exactly as the image
        # is, so nnU-Net sees identical headers even where the label file
        # carried float noise in its own.
        write_volume(*reorient_array(label_transform(label), geometry, orientation), label_out)
    return entry, True


def _source_record(path: Path, case_id: str, old: Mapping[str, Any] | None) -> dict[str, Any]:
    """Path, size, mtime and content hash; the hash is reused while size and mtime are unchanged."""
    if not path.is_file():
        raise CaseError(case_id, f"file not found: {path}")
    stat = path.stat()
    record = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if old and all(old.get(k) == record[k] for k in ("path", "size", "mtime_ns")) and old.get("sha256"):
        record["sha256"] = old["sha256"]
    else:
        record["sha256"] = file_sha256(path)
    return record


def _image_export_present(exported: Path, source: Path, mode: str | None) -> bool:
    if mode == "symlink":
        return exported.is_symlink() and Path(os.readlink(exported)) == source.resolve()
    if mode in ("copy", "reoriented"):
        return exported.is_file() and not exported.is_symlink()
    return False


def _write_reoriented(source: Path, case_id: str, target: Path, orientation: str) -> str:
    """Write the image reoriented to `orientation` (voxel type kept), atomically."""
    write_image(reorient_image(read_image(source, case_id), orientation), target)
    return "reoriented"


def _link_or_copy(source: Path, target: Path) -> str:
    """Symlink `target` -> `source` atomically; copy when the filesystem refuses links."""
    source = source.resolve()
    tmp = target.with_name(f".{target.name}.link.tmp")
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(source, tmp)
        os.replace(tmp, target)
        return "symlink"
    except OSError as error:
        log.warning("cannot symlink %s (%s); copying it instead", target.name, error)
        if tmp.is_symlink():
            tmp.unlink()
    with atomic_path(target) as copy:
        shutil.copyfile(source, copy)
    return "copy"


def _remove_stale(images_dir: Path, labels_dir: Path, keep: set[str]) -> list[str]:
    removed = set()
    for folder, suffix in ((images_dir, IMAGE_SUFFIX), (labels_dir, LABEL_SUFFIX)):
        for path in folder.iterdir():
            case_id = path.name[: -len(suffix)] if path.name.endswith(suffix) else None
            if case_id in keep:
                continue
            path.unlink()
            if case_id:
                removed.add(case_id)
    return sorted(removed)


def _write_dataset_json(folder: Path, dataset_name: str, labels: Mapping[str, int], case_ids: list[str],
                        description: str, orientation: str) -> None:
    content = {
        "name": dataset_name,
        "description": description,
        "channel_names": {"0": "CT"},
        "labels": dict(labels),
        "numTraining": len(case_ids),
        "file_ending": LABEL_SUFFIX,
        # nnU-Net ignores keys it does not know and copies dataset.json into
        # the results folder: the model folder records how inputs must look.
        DATASET_JSON_KEY: orientation,
        # An explicit case list: without it nnU-Net lists the folder with a
        # fork-based Pool, which can deadlock in a process that already runs
        # threads (torch, Dagster's event log), as it did here in a demo run.
        "dataset": {c: {"images": [f"imagesTr/{c}{IMAGE_SUFFIX}"], "label": f"labelsTr/{c}{LABEL_SUFFIX}"}
                    for c in sorted(case_ids)},
    }
    text = json.dumps(content, indent=2) + "\n"  # label order kept: background first
    path = folder / "dataset.json"
    if not path.is_file() or path.read_text() != text:
        write_text(text, path)


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _digest(manifest: Mapping[str, Any]) -> str:
    """Content identity: case ids, source hashes, label transform and label names (no paths or times)."""
    cases = {k: [v["image"]["sha256"], v["label"]["sha256"]] for k, v in manifest["cases"].items()}
    payload = json.dumps({"t": manifest["transform"], "l": manifest["labels"], "c": cases}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
