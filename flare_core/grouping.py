"""Step 0 of the method: group training cases by what they annotate and form
the tumor sub-dataset (the cases whose partial label annotates class 14)."""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from flare_core import labels
from flare_core.inventory import CaseInventory
from flare_core.manifest import Manifest


def group_counts(inventories: Iterable[CaseInventory]) -> dict[str, int]:
    """Cases per label group, every group listed (zero where empty)."""
    counts = Counter(inv.label_group for inv in inventories)
    return {group: counts.get(group, 0) for group in labels.LABEL_GROUPS}


def build_tumor_subset(inventories: Iterable[CaseInventory], unavailable: dict[str, str]) -> Manifest:
    """Manifest of tumor-annotating cases.

    `unavailable` maps case ids that could not be registered to the reason;
    they and any case whose checks failed are listed as excluded, never
    silently dropped.
    """
    inventories = list(inventories)
    manifest = Manifest(name="tumor_subset", excluded=dict(unavailable))
    for inv in sorted(inventories, key=lambda i: i.case_id):
        if not inv.ok:
            problems = [p for plist in inv.problems.values() for p in plist]
            manifest.excluded[inv.case_id] = "; ".join(problems)
        elif inv.annotates_tumor:
            manifest.cases[inv.case_id] = {"image": inv.image_sha256, "label": inv.label_sha256}
    manifest.details = {
        "group_counts": group_counts(i for i in inventories if i.ok),
        "registered_cases": len(inventories),
    }
    return manifest
