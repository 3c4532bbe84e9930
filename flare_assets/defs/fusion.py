"""Multi-label fusion per training case (step 3 of the method).

One multi-asset writes both labels of a case in one pass over its inputs:
`partial_fused_label` (partial annotation + tumor pseudo-label) and
`organ_fused_label` (+ organ pseudo-label for the classes the case does not
annotate). Blocking checks verify both against the case's annotation.
"""
from pathlib import Path

import numpy as np
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from flare_core import fused_case as fc
from flare_core.io import Geometry, read_ct, write_bytes, write_volume
from flare_core.layout import ORGAN_FUSED_LABELS, PARTIAL_FUSED_LABELS, TUMOR_PSEUDO_LABELS
from flare_core.preview import preview_png
from flare_assets import metadata as md
from flare_core.registry import require_inventory
from flare_assets import conditions
from flare_assets.batching import check_result, log_case_checks, run_batch
from flare_assets.partitions import training_cases
from flare_assets.resources import FlareWorkRoot

PARTIAL = AssetKey("partial_fused_label")
ORGAN = AssetKey("organ_fused_label")
OUTPUTS = {"partial_fused": (PARTIAL, PARTIAL_FUSED_LABELS, fc.PARTIAL_CHECKS),
           "organ_fused": (ORGAN, ORGAN_FUSED_LABELS, fc.ORGAN_CHECKS)}

CHECK_DESCRIPTIONS = {
    fc.CHECK_VALUES: "Every voxel is a class id in 0..14 (uint8).",
    fc.CHECK_GEOMETRY: "The written file has the image's size, spacing, origin and direction.",
    fc.CHECK_AGREES: "Annotated organ voxels keep their class (or become tumor); unannotated voxels never take "
                     "an annotated class.",
    fc.CHECK_TUMOR_KEPT: "No annotated tumor voxel is lost.",
    fc.CHECK_ORGAN_RULES: "Every partial-fused voxel is kept; organ pseudo-labels fill only unannotated classes, "
                          "never tumor.",
}


def _check_specs() -> list[AssetCheckSpec]:
    return [AssetCheckSpec(name, asset=key, description=CHECK_DESCRIPTIONS[name], blocking=True,
                           partitions_def=training_cases)
            for key, _, names in OUTPUTS.values() for name in names]


@multi_asset(
    specs=[
        AssetSpec(PARTIAL, deps=["training_case", "tumor_pseudo_label"], group_name="fusion",
                  description="Partial annotation with every tumor pseudo-label voxel set to 14 (an annotated "
                              "tumor is never replaced). uint8 NIfTI on the image's grid.", kinds={"nifti"},
                  automation_condition=conditions.per_case()),
        AssetSpec(ORGAN, deps=[PARTIAL], group_name="fusion",
                  description="Partial-fused label with remaining background filled from the organ pseudo-label, "
                              "only for classes the case does not annotate; the student's training label.",
                  kinds={"nifti"}, automation_condition=conditions.per_case()),
    ],
    partitions_def=training_cases,
    check_specs=_check_specs(),
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=50),
    can_subset=False,
)
def fused_labels(context: AssetExecutionContext, work_root: FlareWorkRoot):
    work = work_root.layout
    checks: dict[tuple[AssetKey, str], dict[str, list[str]]] = {}

    def fuse(case_id: str) -> dict:
        inventory = require_inventory(work, "train", case_id)
        geometry = Geometry.from_dict(inventory.geometry)
        tumor = None if inventory.annotates_tumor else work.per_case(TUMOR_PSEUDO_LABELS, case_id)
        fused = fc.fuse_and_verify(case_id, geometry, inventory.label_path, tumor,
                                   inventory.organ_pseudo_label_path, inventory.annotated)
        return _write_outputs(work, case_id, geometry, fused, inventory.image_path, checks)

    def log_checks(outcome) -> None:
        for key, _, names in OUTPUTS.values():
            for name in names:
                log_case_checks(context, key, name, checks.get((key, name), {}), outcome.metadata)

    outcome = run_batch(context, fuse, before_settling=log_checks)
    for key, _, names in OUTPUTS.values():
        yield MaterializeResult(asset_key=key, metadata={**outcome.summary})
        for name in names:
            yield check_result(context, key, name, checks.get((key, name), {}))


def _write_outputs(work, case_id: str, geometry: Geometry, fused: fc.FusedCase, image_path: str,
                   checks: dict) -> dict:
    image, _ = read_ct(Path(image_path), case_id)
    per_asset = {}
    for name, (key, folder, names) in OUTPUTS.items():
        label = getattr(fused, name)
        path = write_volume(label, geometry, work.per_case(folder, case_id))
        problems = {**fused.problems[name], fc.CHECK_GEOMETRY: fc.written_geometry_problems(path, case_id, geometry)}
        for check, found in problems.items():
            checks.setdefault((key, check), {}).setdefault(case_id, []).extend(f"case {case_id!r}: {p}" for p in found)
        per_asset[key] = _label_metadata(case_id, work, name, key, label, image, geometry, path, fused)
    return per_asset


def _label_metadata(case_id: str, work, name: str, key: AssetKey, label: np.ndarray, image: np.ndarray,
                    geometry: Geometry, path: Path, fused: fc.FusedCase) -> dict:
    png = preview_png(image, label, geometry, f"{case_id} · {key.to_user_string()}")
    write_bytes(png, work.preview(name, case_id))
    account = fused.accounts[name]
    return {
        "path": MetadataValue.path(str(path)),
        "sources": md.table(account.to_rows()),
        "voxels_from_annotation": int(account.annotation.sum()),
        "voxels_from_tumor_pseudo_label": int(account.tumor_pseudo_label.sum()),
        "voxels_from_organ_pseudo_label": int(account.organ_pseudo_label.sum()),
        "preview": md.image(png, f"{case_id} {name}"),
    }

