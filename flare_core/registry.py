"""The case registry: what registration recorded about each case, on disk.

A registered case has an inventory (`flare_core.inventory.CaseInventory`) in
`cases/<split>/<case>.json`; a case whose latest registration failed also has
a failure record in `cases/<split>-failures/<case>.json`. The last good
inventory is kept beside a failure, and every consumer asks
`require_inventory`, which refuses the case while the failure stands, so a
case is never used with hashes older than its files.

Failures live in their own folder so that no case id can collide with
another case's failure record (a case named `<other>.error` once did).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from flare_core.inventory import CaseInventory
from flare_core.io import CaseError, write_json
from flare_core.layout import WorkLayout


def inventory_path(work: WorkLayout, split: str, case_id: str) -> Path:
    return work.per_case(f"cases/{split}", case_id, ".json")


def failure_path(work: WorkLayout, split: str, case_id: str) -> Path:
    return work.per_case(f"cases/{split}-failures", case_id, ".json")


def record_inventory(work: WorkLayout, split: str, inventory: CaseInventory) -> Path:
    """Store a successful registration; it supersedes an earlier failure."""
    path = write_json(inventory.to_dict(), inventory_path(work, split, inventory.case_id))
    failure_path(work, split, inventory.case_id).unlink(missing_ok=True)
    return path


def record_failure(work: WorkLayout, split: str, case_id: str, reason: str) -> Path:
    """Mark the case unusable with `reason`, keeping its last good inventory."""
    return write_json({"case_id": case_id, "error": reason}, failure_path(work, split, case_id))


def registration_failure(work: WorkLayout, split: str, case_id: str) -> str | None:
    """The reason the latest registration of a case failed, if it did."""
    path = failure_path(work, split, case_id)
    return json.loads(path.read_text())["error"] if path.exists() else None


def load_inventory(work: WorkLayout, split: str, case_id: str) -> CaseInventory | None:
    path = inventory_path(work, split, case_id)
    return CaseInventory.from_dict(json.loads(path.read_text())) if path.exists() else None


def require_inventory(work: WorkLayout, split: str, case_id: str) -> CaseInventory:
    """The registered, check-passing inventory of a case, or a `CaseError`."""
    failure = registration_failure(work, split, case_id)
    if failure:
        raise CaseError(case_id, f"registration failed: {failure}")
    inventory = load_inventory(work, split, case_id)
    if inventory is None:
        raise CaseError(case_id, "not registered yet (materialize its registration first)")
    if not inventory.ok:
        problems = "; ".join(p for plist in inventory.problems.values() for p in plist)
        raise CaseError(case_id, f"registration checks failed: {problems}")
    return inventory


def collect_inventories(work: WorkLayout, split: str,
                        case_ids: Iterable[str]) -> tuple[list[CaseInventory], dict[str, str]]:
    """Inventories of `case_ids` (sorted), and why each of the others is missing."""
    inventories, unavailable = [], {}
    for case_id in sorted(case_ids):
        failure = registration_failure(work, split, case_id)
        inventory = load_inventory(work, split, case_id)
        if failure:
            unavailable[case_id] = failure
        elif inventory is None:
            unavailable[case_id] = f"case {case_id!r}: not registered yet"
        else:
            inventories.append(inventory)
    return inventories, unavailable

