"""Predictions of the student on the cases to predict (step 5) and their
evaluation by the official FLARE23 rules."""
import json
import math
import time

from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, MetadataValue, asset

from flare_core import labels
from flare_core.io import Geometry, read_ct, read_label, write_bytes, write_json, write_volume
from flare_core.layout import EVALUATIONS, PREDICTIONS
from flare_core.metrics import evaluate_case, summarize
from flare_core.charts import evaluation_rows, score_chart_png
from flare_core.preview import preview_png
from flare_assets import metadata as md
from flare_core.registry import require_inventory
from flare_assets import conditions, model_cache
from flare_assets.defs.student import student_weights, trained_student
from flare_assets.batching import run_batch
from flare_assets.partitions import inference_cases
from flare_assets.resources import FlareDataRoot, FlareWorkRoot, RunProfile
from flare_assets.executors import MODEL_STEP_TAGS


@asset(
    partitions_def=inference_cases,
    deps=["inference_case", student_weights],
    group_name="inference",
    pool="gpu", op_tags=MODEL_STEP_TAGS,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=100),
    kinds={"nifti"},
    automation_condition=conditions.per_case(),
)
def prediction(context: AssetExecutionContext, work_root: FlareWorkRoot,
               run_profile: RunProfile) -> MaterializeResult:
    """The student's label map (uint8 0..14, the image's exact geometry) from the
    configured inference mode; the model is loaded once per run."""
    work = work_root.layout
    student = trained_student(work)
    predictor = model_cache.student(str(student.model_folder), student.checkpoint_sha256,
                                    run_profile.inference_mode, run_profile.device, str(work.root),
                                    run_profile.inference_backend, run_profile.inference_precision)

    def predict(case_id: str) -> dict:
        inventory = require_inventory(work, "infer", case_id)
        started = time.perf_counter()
        image, geometry = read_ct(inventory.image_path, case_id)  # read once: prediction and preview
        result = predictor.predict_array(image, geometry)
        path = write_volume(result.label, geometry, work.per_case(PREDICTIONS, case_id))
        seconds = time.perf_counter() - started
        png = preview_png(image, result.label, geometry, f"{case_id} · prediction ({result.mode})")
        write_bytes(png, work.preview("prediction", case_id))
        voxel_ml = math.prod(result.geometry.spacing) / 1000.0
        counts = [{"class": labels.CLASS_NAMES[c], "voxels": n, "volume_ml": round(n * voxel_ml, 2)}
                  for c, n in sorted(result.class_voxel_counts.items()) if c in labels.FOREGROUND]
        return {
            "path": MetadataValue.path(str(path)),
            "mode": result.mode,
            "backend": result.backend,
            "precision": result.precision,
            "seconds": round(seconds, 2),
            "peak_memory_mb": round((result.peak_memory_bytes or 0) / 2**20, 1),
            "windows_evaluated": result.windows_evaluated,
            "windows_skipped": result.windows_skipped,
            "region_fraction": round(result.region_fraction, 3),
            "class_voxels": md.table(counts),
            "preview": md.image(png, f"{case_id} prediction"),
            "model_sha256": student.checkpoint_sha256,
        }

    outcome = run_batch(context, predict)
    return MaterializeResult(metadata={**outcome.summary, "mode": run_profile.inference_mode,
                                       "backend": predictor.backend, "precision": predictor.precision,
                                       "model_load_seconds": round(predictor.model.load_seconds, 2)})


@asset(
    partitions_def=inference_cases,
    deps=[prediction],
    group_name="inference",
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=100),
    kinds={"json"},
    automation_condition=conditions.per_case(),
)
def evaluation(context: AssetExecutionContext, data_root: FlareDataRoot,
               work_root: FlareWorkRoot) -> MaterializeResult:
    """Per-class DSC and NSD of the prediction against the case's ground truth by
    the official FLARE23 rules; skipped (and says so) without ground truth."""
    work, data = work_root.layout, data_root.layout

    def evaluate(case_id: str) -> dict:
        truth_path = data.infer_label(case_id)
        out = work.per_case(EVALUATIONS, case_id, ".json")
        if not truth_path.exists():
            write_json({"case_id": case_id, "skipped": "no ground truth"}, out)
            return {"status": "skipped: no ground truth for this case"}
        inventory = require_inventory(work, "infer", case_id)
        geometry = Geometry.from_dict(inventory.geometry)
        truth, _ = read_label(truth_path, case_id, image_geometry=geometry)
        predicted, _ = read_label(work.per_case(PREDICTIONS, case_id), case_id, image_geometry=geometry)
        scores = [vars(s) for s in evaluate_case(predicted, truth, geometry.spacing_zyx)]
        write_json({"case_id": case_id, "scores": scores}, out)
        table = summarize(scores)
        return {"status": "evaluated", "scores": md.table([{k: _round(v) for k, v in s.items()} for s in scores]),
                "organ_dsc": _round(table.loc["organs mean", "dsc"]), "tumor_dsc": _round(table.loc["tumor", "dsc"])}

    outcome = run_batch(context, evaluate)
    return MaterializeResult(metadata=outcome.summary)


@asset(deps=[evaluation], group_name="inference", kinds={"json"}, automation_condition=conditions.follows_cases())
def evaluation_summary(context: AssetExecutionContext, work_root: FlareWorkRoot) -> MaterializeResult:
    """Mean DSC / NSD per class, organs, tumor and all classes over every
    evaluated case: the numbers a FLARE participant reports, with a plot."""
    work = work_root.layout
    rows, evaluated = [], []
    for case_id in sorted(context.instance.get_dynamic_partitions(inference_cases.name)):
        path = work.per_case(EVALUATIONS, case_id, ".json")
        record = json.loads(path.read_text()) if path.exists() else {}
        if record.get("scores"):
            evaluated.append(case_id)
            rows += record["scores"]
    if not rows:
        return MaterializeResult(metadata={"cases_evaluated": 0,
                                           "note": "no inference case has ground truth"})
    summary = summarize(rows)
    table = summary.reset_index()
    records = [{k: _round(v) for k, v in r.items()} for r in table.to_dict("records")]
    write_json({"cases": evaluated, "summary": records}, work.manifests / "evaluation_summary.json")
    png = score_chart_png(evaluation_rows(summary), f"mean DSC and NSD per class over {len(evaluated)} cases")
    overall = table.set_index("row")
    context.log.info("evaluation over %d cases: organ DSC %.4f", len(evaluated), overall.loc["organs mean", "dsc"])
    return MaterializeResult(metadata={
        "cases_evaluated": len(evaluated),
        "summary": md.table(records),
        "organ_dsc": _round(overall.loc["organs mean", "dsc"]),
        "organ_nsd": _round(overall.loc["organs mean", "nsd"]),
        "tumor_dsc": _round(overall.loc["tumor", "dsc"]) if "tumor" in overall.index else None,
        "all_dsc": _round(overall.loc["all", "dsc"]),
        "plot": md.image(png, "per-class DSC and NSD"),
        "path": MetadataValue.path(str(work.manifests / "evaluation_summary.json")),
    })


def _round(value):
    if isinstance(value, float):  # numpy floats too: Dagster serializes only plain ones
        return None if math.isnan(value) else round(float(value), 4)
    if hasattr(value, "item"):
        return _round(value.item())
    return value
