"""Finding new and changed cases under the data root, cheaply and compactly.

What was seen is kept as one watermark (a time), not as a signature per case,
so the record stays the same size at 10,000 cases. A case counts as changed
when one of its files was written or replaced after the watermark: the file's
change time (ctime) moves on every write, rename into place or copy, even
when a copy keeps the original modification time. A case whose files changed
less than `settle_seconds` ago is left for a later scan, so a file still
being copied is not picked up half-written. A removed file leaves no time behind: a case folder holding fewer
entries than before makes each known case's registered files be compared
with those on disk.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from flare_core.cases import INFER, TRAIN, case_files, discover_cases
from flare_core.layout import DataLayout

log = logging.getLogger(__name__)

# Folders that hold one file per case, per split (their times reveal deletions).
CASE_FOLDERS = {TRAIN: ("train_images", "train_labels", "organ_pseudo_labels"),
                INFER: ("infer_images", "infer_labels")}


@dataclass
class Scan:
    """One look at a split of the data root."""

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)  # written too recently: next time
    rejected: dict[str, str] = field(default_factory=dict)  # unsafe names: reported, never registered
    watermark: float = 0.0  # everything written up to here has been seen
    folder_counts: dict[str, int] = field(default_factory=dict)  # files per case folder


def changed_at(path: Path) -> float:
    """When a file was last written or put in place (the later of mtime and ctime)."""
    stat = path.stat()
    return max(stat.st_mtime, stat.st_ctime)


def case_changed_at(layout: DataLayout, split: str, case_id: str) -> float:
    """The latest write to any of a case's input files."""
    return max((changed_at(p) for p in case_files(layout, split, case_id).values()), default=0.0)


def folder_counts(layout: DataLayout, split: str) -> dict[str, int]:
    """How many entries each case folder of the split holds."""
    counts = {}
    for name in CASE_FOLDERS[split]:
        folder = layout.folder(name)
        counts[name] = sum(1 for _ in os.scandir(folder)) if folder.is_dir() else 0
    return counts


def scan(layout: DataLayout, split: str, known: set[str], watermark: float, *,
         previous_counts: dict[str, int] | None = None, settle_seconds: float = 0.0,
         registered_roles: Callable[[str], Iterable[str] | None] | None = None, now: float | None = None) -> Scan:
    """New cases (not in `known`) and known cases changed after `watermark`.

    A removed file leaves no newer time behind; it shows as a case folder
    holding fewer entries than `previous_counts` (or, without counts, as any
    folder at all). Then `registered_roles(case_id)`, the files a case was
    registered with ("image", "label", ...; None if not registered), is compared
    with the disk for every known case, and a case whose files differ counts
    as changed."""
    now = time.time() if now is None else now
    settled_before = now - settle_seconds
    discovery = discover_cases(layout, split)
    counts = folder_counts(layout, split)
    result = Scan(rejected=_written_after(discovery.rejected, layout, split, watermark), watermark=watermark,
                  folder_counts=counts)
    shrunk = previous_counts is None or any(counts[f] < previous_counts.get(f, 0) for f in counts)
    check_roles = registered_roles is not None and shrunk
    for case_id in discovery.case_ids:
        try:
            written = case_changed_at(layout, split, case_id)
        except OSError:  # removed between the listing and the stat
            continue
        if written > settled_before:
            result.unsettled.append(case_id)
            continue
        if case_id not in known:
            result.new.append(case_id)
        elif written > watermark or (check_roles and _roles_differ(layout, split, case_id, registered_roles)):
            result.changed.append(case_id)
    # Every write up to the settling horizon has now been seen; later ones
    # (the unsettled cases included) are after it, so the next scan finds them.
    result.watermark = max(watermark, settled_before)
    return result


def _written_after(rejected: dict[str, str], layout: DataLayout, split: str, watermark: float) -> dict[str, str]:
    """The rejected files written after the watermark: each is reported once per change."""
    folder = layout.folder(CASE_FOLDERS[split][0])
    fresh = {}
    for name, problem in rejected.items():
        try:
            if changed_at(folder / name) > watermark:
                fresh[name] = problem
        except OSError:
            continue
    return fresh


def _roles_differ(layout: DataLayout, split: str, case_id: str, registered_roles) -> bool:
    registered = registered_roles(case_id)
    return registered is not None and set(case_files(layout, split, case_id)) != set(registered)
