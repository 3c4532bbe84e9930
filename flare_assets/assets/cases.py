"""Registering cases and forming the tumor subset (step 0 of the method)."""

import json
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from flare_core import labels
from flare_core.cases import INFER, TRAIN, case_signature
from flare_core.grouping import build_tumor_subset
from flare_core.inventory import CHECKS, CaseInventory, inspect_case
from flare_core.io import CaseError, write_bytes, write_json
from flare_core.layout import WorkLayout
from flare_assets import metadata as md
from flare_assets.partitions import inference_cases, training_cases
from flare_assets.resources import FlareDataRoot, FlareWorkRoot

CHECK_DESCRIPTIONS = {
    "label_files_readable": "Label and organ pseudo-label files can be read as 3D volumes.",
    "geometry_matches": "Labels share the image's size, spacing, origin and direction.",
    "label_ids_valid": "Label values are integers in 0..14.",
}


def registration_dir(split: str) -> str:
    return f"cases/{split}"


def inventory_path(work: WorkLayout, split: str, case_id: str) -> Path:
    return work.per_case(registration_dir(split), case_id, ".json")


def error_path(work: WorkLayout, split: str, case_id: str) -> Path:
    return work.per_case(registration_dir(split), case_id, ".error.json")


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


def registration_failure(work: WorkLayout, split: str, case_id: str) -> str | None:
    """The reason the latest registration of a case failed, if it did."""
    path = error_path(work, split, case_id)
    return json.loads(path.read_text())["error"] if path.exists() else None


def _check_specs(asset_name: str) -> list[AssetCheckSpec]:
    return [AssetCheckSpec(name, asset=asset_name, description=CHECK_DESCRIPTIONS[name], blocking=True)
            for name in CHECKS]


def _register(context: AssetExecutionContext, split: str, data_root: FlareDataRoot,
              work_root: FlareWorkRoot) -> MaterializeResult:
    case_id = context.partition_key
    work = work_root.layout
    # Taken before reading, so a file replaced mid-run shows up as changed later.
    signature = case_signature(data_root.layout, split, case_id)
    try:
        inventory = inspect_case(data_root.layout, split, case_id, with_preview=True)
    except CaseError as error:
        # Keep the last good registration, but mark the case so global assets
        # exclude it with this reason instead of using stale hashes.
        write_json({"case_id": case_id, "error": str(error)}, error_path(work, split, case_id))
        raise Failure(description=str(error), metadata={"case_id": case_id}) from None
    write_json(inventory.to_dict(), inventory_path(work, split, case_id))
    preview = work.per_case("previews", case_id, ".png")
    write_bytes(inventory.preview_png, preview)
    error_path(work, split, case_id).unlink(missing_ok=True)
    context.log.info("registered %s case %s (%s)", split, case_id, inventory.label_group)
    return MaterializeResult(
        metadata={**_registration_metadata(inventory, preview), "input_signature": signature},
        check_results=_check_results(inventory),
        data_version=DataVersion(_content_version(inventory)),
    )


def _registration_metadata(inv: CaseInventory, preview: Path) -> dict:
    geometry = inv.geometry
    return {
        "shape_xyz": MetadataValue.text(" x ".join(str(s) for s in geometry["size"])),
        "spacing_mm_xyz": MetadataValue.text(" x ".join(f"{s:.3g}" for s in geometry["spacing"])),
        "annotated_classes": MetadataValue.text(
            "none (unlabelled)" if inv.annotated is None else ", ".join(labels.class_names(inv.annotated)) or "none"),
        "label_group": MetadataValue.text(inv.label_group),
        "image_sha256": MetadataValue.text(inv.image_sha256),
        "label_sha256": MetadataValue.text(inv.label_sha256 or "no label file"),
        "has_organ_pseudo_label": MetadataValue.bool(inv.organ_pseudo_label_path is not None),
        "intensity_hu": MetadataValue.json(inv.intensity),
        "preview": md.image(inv.preview_png, f"{inv.case_id} preview"),
        "preview_path": MetadataValue.path(str(preview)),
    }


def _check_results(inv: CaseInventory) -> list[AssetCheckResult]:
    return [
        AssetCheckResult(
            check_name=name,
            passed=not inv.problems[name],
            severity=AssetCheckSeverity.ERROR,
            description="; ".join(inv.problems[name]) or "ok",
            metadata={"case_id": inv.case_id},
        )
        for name in CHECKS
    ]


def _content_version(inv: CaseInventory) -> str:
    hashes = [inv.image_sha256, inv.label_sha256 or "-", inv.organ_pseudo_label_sha256 or "-"]
    return "-".join(h[:12] for h in hashes)


@asset(
    partitions_def=training_cases,
    group_name="cases",
    check_specs=_check_specs("training_case"),
    code_version="1",
    kinds={"nifti"},
)
def training_case(context: AssetExecutionContext, data_root: FlareDataRoot,
                  work_root: FlareWorkRoot) -> MaterializeResult:
    """A registered training CT: its geometry, intensity statistics, the classes
    its partial label annotates, its label group, content hashes and a preview.
    Checks block downstream work on a case whose labels are unusable."""
    return _register(context, TRAIN, data_root, work_root)


@asset(
    partitions_def=inference_cases,
    group_name="cases",
    check_specs=_check_specs("inference_case"),
    code_version="1",
    kinds={"nifti"},
)
def inference_case(context: AssetExecutionContext, data_root: FlareDataRoot,
                   work_root: FlareWorkRoot) -> MaterializeResult:
    """A registered CT to predict, with its optional ground truth checked."""
    return _register(context, INFER, data_root, work_root)


@asset(deps=[training_case], group_name="cases", code_version="1", kinds={"json"})
def tumor_subset(context: AssetExecutionContext, work_root: FlareWorkRoot) -> MaterializeResult:
    """The tumor sub-dataset: every registered training case whose partial label
    annotates class 14, as a manifest of case ids and file hashes. Cases that
    failed registration or its checks are listed as excluded, with the reason."""
    work = work_root.layout
    inventories, unavailable = collect_inventories(context, work, TRAIN)
    manifest = build_tumor_subset(inventories, unavailable)
    path = manifest.write(work.manifests / "tumor_subset.json")
    counts = manifest.details["group_counts"]
    context.log.info("tumor subset: %d cases, %d excluded", len(manifest.cases), len(manifest.excluded))
    return MaterializeResult(
        metadata={
            "num_cases": len(manifest.cases),
            "num_excluded": len(manifest.excluded),
            "cases_per_label_group": md.table([{"label_group": g, "cases": n} for g, n in counts.items()]),
            "excluded": md.table([{"case_id": c, "reason": r} for c, r in manifest.excluded.items()]),
            "case_ids": MetadataValue.text(", ".join(manifest.cases) or "none"),
            "manifest_digest": manifest.digest,
            "manifest_path": MetadataValue.path(str(path)),
        },
        data_version=DataVersion(manifest.digest),
    )


def collect_inventories(context: AssetExecutionContext, work: WorkLayout,
                        split: str) -> tuple[list[CaseInventory], dict[str, str]]:
    """Inventories of every partition of a split, and why the others are missing."""
    partitions = training_cases if split == TRAIN else inference_cases
    inventories, unavailable = [], {}
    for case_id in sorted(context.instance.get_dynamic_partitions(partitions.name)):
        failure = registration_failure(work, split, case_id)
        inventory = load_inventory(work, split, case_id)
        if failure:
            unavailable[case_id] = failure
        elif inventory is None:
            unavailable[case_id] = f"case {case_id!r}: not registered yet"
        else:
            inventories.append(inventory)
    return inventories, unavailable
