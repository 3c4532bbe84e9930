"""Registering cases and forming the tumor subset (step 0 of the method).

The data root's files are external assets (`training_case_files`,
`inference_case_files`) whose events the discovery sensor reports; a case's
registration follows them and records its inventory in the case registry
(`flare_core.registry`), with partitioned blocking checks per case."""

from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSpec,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from flare_core import labels, registry
from flare_core.cases import INFER, TRAIN, case_signature
from flare_core.grouping import build_tumor_subset
from flare_core.inventory import CHECKS, CaseInventory, inspect_case
from flare_core.io import CaseError, write_bytes
from flare_core.layout import WorkLayout
from flare_assets import conditions, metadata as md
from flare_assets.case_discovery import CASE_FILES
from flare_assets.partitions import inference_cases, training_cases
from flare_assets.resources import FlareDataRoot, FlareWorkRoot

CHECK_DESCRIPTIONS = {
    "label_files_readable": "Label and organ pseudo-label files can be read as 3D volumes.",
    "geometry_matches": "Labels share the image's size, spacing, origin and direction.",
    "label_ids_valid": "Label values are integers in 0..14.",
}


def _check_specs(asset_name: str, partitions) -> list[AssetCheckSpec]:
    return [AssetCheckSpec(name, asset=asset_name, description=CHECK_DESCRIPTIONS[name], blocking=True,
                           partitions_def=partitions)
            for name in CHECKS]


def _case_files_spec(split: str, partitions) -> AssetSpec:
    what = "training case (image, partial label, organ pseudo-label)" if split == TRAIN else "case to predict"
    return AssetSpec(CASE_FILES[split], partitions_def=partitions, group_name="cases", kinds={"nifti"},
                     description=f"The files of a {what} under the data root, as the discovery sensor last "
                                 "saw them: an event per new or changed case. Read only; never written.")


training_case_files = _case_files_spec(TRAIN, training_cases)
inference_case_files = _case_files_spec(INFER, inference_cases)


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
        registry.record_failure(work, split, case_id, str(error))
        raise Failure(description=str(error), metadata={"case_id": case_id}) from None
    preview = work.preview(f"{split}_case", case_id)
    write_bytes(inventory.preview_png, preview)
    registry.record_inventory(work, split, inventory)
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
    deps=[training_case_files],
    group_name="cases",
    check_specs=_check_specs("training_case", training_cases),
    code_version="1",
    kinds={"nifti"},
    automation_condition=conditions.registration(),
)
def training_case(context: AssetExecutionContext, data_root: FlareDataRoot,
                  work_root: FlareWorkRoot) -> MaterializeResult:
    """A registered training CT: its geometry, intensity statistics, the classes
    its partial label annotates, its label group, content hashes and a preview.
    Checks block downstream work on a case whose labels are unusable."""
    return _register(context, TRAIN, data_root, work_root)


@asset(
    partitions_def=inference_cases,
    deps=[inference_case_files],
    group_name="cases",
    check_specs=_check_specs("inference_case", inference_cases),
    code_version="1",
    kinds={"nifti"},
    automation_condition=conditions.registration(),
)
def inference_case(context: AssetExecutionContext, data_root: FlareDataRoot,
                   work_root: FlareWorkRoot) -> MaterializeResult:
    """A registered CT to predict, with its optional ground truth checked."""
    return _register(context, INFER, data_root, work_root)


@asset(deps=[training_case], group_name="cases", code_version="1", kinds={"json"},
       automation_condition=conditions.follows_cases())
def tumor_subset(context: AssetExecutionContext, work_root: FlareWorkRoot) -> MaterializeResult:
    """The tumor sub-dataset: every registered training case whose partial label
    annotates class 14, as a manifest of case ids and file hashes. Cases that
    failed registration or its checks are listed as excluded, with the reason."""
    work = work_root.layout
    inventories, unavailable = registered_cases(context, work, TRAIN)
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


def registered_cases(context: AssetExecutionContext, work: WorkLayout,
                     split: str) -> tuple[list[CaseInventory], dict[str, str]]:
    """Inventories of every partition of a split, and why the others are missing."""
    partitions = training_cases if split == TRAIN else inference_cases
    return registry.collect_inventories(work, split, context.instance.get_dynamic_partitions(partitions.name))
