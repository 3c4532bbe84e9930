"""Finding cases under a data root and keeping their ids safe.

Case ids come from file names and become Dagster partition keys and file names
under the work root, so an id that could escape a folder or confuse a shell is
reported, never used.
"""
from __future__ import annotations

import logging
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from flare_core.layout import IMAGE_SUFFIX, DataLayout

log = logging.getLogger(__name__)

CASE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
TRAIN = "train"
INFER = "infer"


def case_id_problem(case_id: str) -> str | None:
    """Why `case_id` is unsafe as a partition key and file name, or None."""
    if not case_id:
        return "empty case id"
    if "/" in case_id or "\\" in case_id:
        return f"case id {case_id!r} contains a path separator"
    if ".." in case_id:
        return f"case id {case_id!r} contains '..'"
    if not CASE_ID_PATTERN.fullmatch(case_id):  # match() with `$` lets a trailing newline through
        return (f"case id {case_id!r} has characters outside letters, digits, '_', '-', '.' "
                "or does not start with a letter or digit (max 128 characters)")
    return None


def file_problem(path: Path, root: Path) -> str | None:
    """Why a case file must not be read, or None. Only regular files inside the
    data root are: a FIFO blocks a reader forever, a link to /dev/zero never
    ends, and a link out of the data root reads what the user did not put there."""
    path = Path(path)
    try:
        facts = path.stat()
    except OSError as error:
        return f"{path.name} cannot be read ({error.strerror})"
    if not stat.S_ISREG(facts.st_mode):
        return f"{path.name} is not a regular file (a FIFO, a device or a folder)"
    if facts.st_size == 0:
        return f"{path.name} is empty (0 bytes)"
    resolved = path.resolve()
    if not resolved.is_relative_to(Path(root).resolve()):
        return f"{path.name} links outside the data root (to {resolved})"
    return None


@dataclass
class Discovery:
    """Result of scanning one image folder: good ids and reported problems."""

    case_ids: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # file name -> problem


def discover_cases(layout: DataLayout, split: str) -> Discovery:
    """Scan `train` or `infer` images; ids are the file names minus `_0000.nii.gz`."""
    folder = layout.folder("train_images" if split == TRAIN else "infer_images")
    found = Discovery()
    if not folder.is_dir():
        log.info("no %s image folder at %s", split, folder)
        return found
    seen: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith("."):
            continue  # temporary files of atomic writers, editor droppings
        unreadable = file_problem(path, layout.root)
        if unreadable:
            found.rejected[name] = unreadable
            continue
        if not name.endswith(IMAGE_SUFFIX):
            found.rejected[name] = f"{name}: not an image named <case>{IMAGE_SUFFIX}"
            continue
        case_id = name[: -len(IMAGE_SUFFIX)]
        problem = case_id_problem(case_id)
        if problem is None and case_id.lower() in seen:
            problem = f"case id {case_id!r} duplicates {seen[case_id.lower()]!r} (ids must differ beyond letter case)"
        if problem:
            found.rejected[name] = problem
            continue
        seen[case_id.lower()] = case_id
        found.case_ids.append(case_id)
    return found


def case_files(layout: DataLayout, split: str, case_id: str) -> dict[str, Path]:
    """The input files of one case that exist on disk, by role."""
    if split == TRAIN:
        candidates = {
            "image": layout.train_image(case_id),
            "label": layout.train_label(case_id),
            "organ_pseudo_label": layout.organ_pseudo_label(case_id),
        }
    else:
        candidates = {"image": layout.infer_image(case_id), "label": layout.infer_label(case_id)}
    return {role: path for role, path in candidates.items() if path.exists()}


def file_signature(path: Path) -> str:
    """Cheap change detector (size and mtime) for sensors; hashes are for manifests."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def case_signature(layout: DataLayout, split: str, case_id: str) -> str:
    """Signature of all input files of a case: changes when any file does."""
    files = case_files(layout, split, case_id)
    return "|".join(f"{role}={file_signature(path)}" for role, path in sorted(files.items()))
