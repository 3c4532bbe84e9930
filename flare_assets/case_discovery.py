"""Discovering cases for Dagster: new partitions and events of the case files.

Discovery is all a sensor does: it adds a partition for each new, safely
named case with a readable header and complete files (a file still being
copied waits for a later tick), and reports an event of the case's files
asset (`training_case_files` / `inference_case_files`) for each new or
changed case. Registration, and everything after it, is then due by the
assets' automation conditions (`flare_assets.conditions`). The demo calls the
same code, so both record the same history.

The cursor is one watermark and a few folder counts (`flare_core.discovery`),
a few dozen bytes at any number of cases. A fresh cursor starts from the
newest files event already recorded, so cases registered before it are not
reported again.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import SimpleITK as sitk
from dagster import AssetKey, AssetMaterialization, DagsterInstance, MetadataValue

from flare_core import discovery, registry
from flare_core.cases import INFER, TRAIN, case_files
from flare_core.integrity import completeness_problem
from flare_core.layout import DataLayout, WorkLayout
from flare_assets.partitions import inference_cases, training_cases

log = logging.getLogger(__name__)

CASE_FILES = {TRAIN: AssetKey("training_case_files"), INFER: AssetKey("inference_case_files")}
PARTITIONS = {TRAIN: training_cases, INFER: inference_cases}


@dataclass
class Cursor:
    watermark: float = 0.0
    folder_counts: dict[str, int] | None = None

    def to_json(self) -> str:
        return json.dumps({"watermark": round(self.watermark, 6), "folder_counts": self.folder_counts},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> "Cursor | None":
        if not text:
            return None
        data = json.loads(text)
        return cls(watermark=float(data.get("watermark", 0.0)), folder_counts=data.get("folder_counts"))


@dataclass
class Discovered:
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # reported, neither added nor registered
    events: list[AssetMaterialization] = field(default_factory=list)
    cursor: Cursor = field(default_factory=Cursor)


def header_problem(path) -> str | None:
    """Read only the NIfTI header: cheap enough for every new or changed file."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return f"{path.name}: unreadable NIfTI header (corrupt or not NIfTI)"
    if reader.GetDimension() != 3:
        return f"{path.name}: {reader.GetDimension()}D, expected 3D"
    return None


def fresh_cursor(instance: DagsterInstance, split: str) -> Cursor:
    """Start after the newest files event on record (0 on an empty instance)."""
    records = instance.fetch_materializations(CASE_FILES[split], limit=1).records
    return Cursor(watermark=records[0].timestamp if records else 0.0)


def discover(instance: DagsterInstance, data: DataLayout, work: WorkLayout, split: str,
             cursor: Cursor | None, settle_seconds: float = 0.0) -> Discovered:
    """What is new or changed under the data root since `cursor`."""
    cursor = cursor or fresh_cursor(instance, split)
    known = set(instance.get_dynamic_partitions(PARTITIONS[split].name))
    scan = discovery.scan(data, split, known, cursor.watermark, previous_counts=cursor.folder_counts,
                          settle_seconds=settle_seconds, registered_roles=lambda c: _registered_roles(work, split, c))
    found = Discovered(problems=dict(scan.rejected), cursor=Cursor(scan.watermark, scan.folder_counts))
    for case_id in scan.new + scan.changed:
        why = "new" if case_id in scan.new else "changed"
        try:
            problem = _look_at(data, split, case_id, why, cursor)
            event = None if problem is not None else _files_event(data, split, case_id, why)
        except OSError as error:  # a file removed or replaced mid-tick: one case, never the tick
            problem = f"{type(error).__name__}: {error}"
        if problem:
            found.problems[case_id] = f"case {case_id!r}: {problem}"
        elif problem is None:
            (found.new if why == "new" else found.changed).append(case_id)
            found.events.append(event)
    return found


def _look_at(data: DataLayout, split: str, case_id: str, why: str, cursor: Cursor) -> str | None:
    """None when the case can be registered; else why not, or "" for a case
    left alone quietly (its problem was reported at an earlier tick)."""
    files = case_files(data, split, case_id)
    # A file still arriving is left alone (new or changed): its next write
    # moves its time past the watermark and brings it back, whole.
    incomplete = next(filter(None, map(completeness_problem, files.values())), None)
    problem = incomplete or header_problem(files["image"])
    if incomplete or (problem and why == "new"):
        if discovery.case_changed_at(data, split, case_id) > cursor.watermark:  # once per change
            return problem
        return ""
    return None


def apply(instance: DagsterInstance, split: str, found: Discovered) -> None:
    """Record a discovery directly (what the sensor's result does through the daemon)."""
    if found.new:
        instance.add_dynamic_partitions(PARTITIONS[split].name, found.new)
    for event in found.events:
        instance.report_runless_asset_event(event)


def _registered_roles(work: WorkLayout, split: str, case_id: str) -> set[str] | None:
    inventory = registry.load_inventory(work, split, case_id)
    if inventory is None:
        return None  # not registered yet: its registration is due anyway
    roles = {"image"} | ({"label"} if inventory.label_path else set())
    return roles | ({"organ_pseudo_label"} if inventory.organ_pseudo_label_path else set())


def _files_event(data: DataLayout, split: str, case_id: str, why: str) -> AssetMaterialization:
    files = case_files(data, split, case_id)
    return AssetMaterialization(
        asset_key=CASE_FILES[split], partition=case_id,
        description=f"{why} case files under the data root",
        metadata={"files": MetadataValue.json({role: str(path) for role, path in sorted(files.items())}),
                  "discovered_as": why})
