"""Label quality against a complete ground truth, when the data has one.

Phantom data ships the full ground truth of every training case; real FLARE23
does not, and there these assets record that they were skipped.
"""
import json

from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue, asset

from flare_core import label_quality as lq
from flare_core.charts import label_quality_rows, score_chart_png
from flare_core.io import Geometry, write_json
from flare_core.layout import LABEL_QUALITY, ORGAN_FUSED_LABELS, PARTIAL_FUSED_LABELS, TUMOR_PSEUDO_LABELS
from flare_assets import metadata as md
from flare_core.registry import require_inventory
from flare_assets import conditions
from flare_assets.batching import run_batch
from flare_assets.partitions import training_cases
from flare_assets.resources import FlareDataRoot, FlareWorkRoot


@asset(
    partitions_def=training_cases,
    deps=["organ_fused_label", "tumor_pseudo_label"],
    group_name="quality",
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=50),
    kinds={"json"},
    automation_condition=conditions.per_case(),
)
def label_quality(context: AssetExecutionContext, data_root: FlareDataRoot,
                  work_root: FlareWorkRoot) -> MaterializeResult:
    """DSC / NSD of the tumor pseudo-label, the partial label alone, the organ
    pseudo-label alone and both fused labels against the case's complete
    ground truth, and the tumor pseudo-label's voxel and lesion precision /
    recall. Skipped (and says so) where no ground truth exists."""
    work, data = work_root.layout, data_root.layout

    def score(case_id: str) -> dict:
        truth = data.ground_truth(case_id)
        path = work.per_case(LABEL_QUALITY, case_id, ".json")
        if not truth.exists():
            write_json({"case_id": case_id, "skipped": "no ground truth"}, path)
            return {"status": "skipped: no complete ground truth for this case"}
        inventory = require_inventory(work, "train", case_id)
        tumor = work.per_case(TUMOR_PSEUDO_LABELS, case_id)
        sources = {
            lq.TUMOR_PSEUDO: tumor if tumor.exists() and not inventory.annotates_tumor else None,
            lq.PARTIAL_ONLY: inventory.label_path,
            lq.ORGAN_PSEUDO_ONLY: inventory.organ_pseudo_label_path,
            lq.PARTIAL_FUSED: work.per_case(PARTIAL_FUSED_LABELS, case_id),
            lq.ORGAN_FUSED: work.per_case(ORGAN_FUSED_LABELS, case_id),
        }
        geometry = Geometry.from_dict(inventory.geometry)
        rows = lq.score_sources(case_id, truth, geometry, sources)
        record, metadata = {"case_id": case_id, "rows": rows}, {"status": "scored"}
        if sources[lq.TUMOR_PSEUDO] is not None:
            detection, breakdown = lq.detect_tumors(case_id, truth, geometry, sources[lq.TUMOR_PSEUDO])
            record["tumor_detection"] = detection.to_dict()
            record["lesion_breakdown"] = breakdown
            metadata["tumor_pseudo_label"] = md.table([detection.to_dict()])
        write_json(record, path)
        return {**metadata, "by_source": md.table(lq.source_table(rows))}

    outcome = run_batch(context, score)
    return MaterializeResult(metadata=outcome.summary)


@asset(deps=[label_quality], group_name="quality", kinds={"json"}, automation_condition=conditions.follows_cases())
def label_quality_summary(context: AssetExecutionContext, work_root: FlareWorkRoot) -> MaterializeResult:
    """Mean label quality per source (and per source and class) over every
    scored training case: the value of fusion at a glance (fused vs
    partial-only vs organ-pseudo-only); and the tumor pseudo-labels' voxel and
    lesion precision / recall, pooled over the cases they were made for."""
    work = work_root.layout
    rows, scored, skipped, detections, breakdowns = [], [], [], [], []
    for case_id in sorted(context.instance.get_dynamic_partitions(training_cases.name)):
        path = work.per_case(LABEL_QUALITY, case_id, ".json")
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        (skipped if "skipped" in record else scored).append(case_id)
        rows += record.get("rows", [])
        if "tumor_detection" in record:
            detections.append(record["tumor_detection"])
            breakdowns.append(record.get("lesion_breakdown", {}))
    table = lq.source_table(rows) if rows else []
    pooled = lq.pool_detections(detections)
    tumor_detection = pooled.to_dict() if pooled else None
    breakdown = lq.pool_breakdowns(breakdowns) if breakdowns else None
    out = write_json({"cases": scored, "skipped": skipped, "by_source": table, "by_class": lq.class_table(rows),
                      "tumor_detection": tumor_detection, "lesion_breakdown": breakdown},
                     work.manifests / "label_quality_summary.json")
    context.log.info("label quality: %d cases scored, %d skipped", len(scored), len(skipped))
    metadata = {
        "cases_scored": len(scored),
        "cases_skipped": len(skipped),
        "by_source": md.table(table) if table else MetadataValue.text("no case has a complete ground truth"),
        "tumor_pseudo_label_detection": (md.table([tumor_detection]) if tumor_detection else
                                         MetadataValue.text("no tumor pseudo-label scored")),
        "path": MetadataValue.path(str(out)),
    }
    if breakdown:
        metadata["tumor_pseudo_label_lesions_by_organ"] = md.table(lq.breakdown_rows(breakdown))
    chart_rows = label_quality_rows(table)
    if chart_rows:
        title = f"mean DSC and NSD per label source over {len(scored)} cases"
        metadata["plot"] = md.image(score_chart_png(chart_rows, title), "label quality per source")
    return MaterializeResult(metadata=metadata)
