"""Retraining as the pool grows, and refreshing what became stale.

Each tick compares what the current models were trained on with what they
would be trained on now (manifest digests of case ids and file hashes), and
what each per-case output was made with (the model's checkpoint hash) with the
current model. It requests only the next step that is due, so the pipeline
converges over a few ticks; when nothing changed nothing runs.
"""
import json

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from flare_core.grouping import build_tumor_subset
from flare_assets.assets.cases import collect_inventories
from flare_assets.assets.student import fused_label_manifest
from flare_assets.pipeline import latest_metadata
from flare_assets.partitions import inference_cases, partition_range_tags, training_cases
from flare_assets.resources import FlareWorkRoot

TEACHER_CHAIN = [AssetKey("tumor_subset"), AssetKey("teacher_plans"), AssetKey("teacher_weights")]
STUDENT_CHAIN = [AssetKey("student_plans"), AssetKey("student_weights")]
CASE_CHAIN = [AssetKey("tumor_pseudo_label"), AssetKey("partial_fused_label"), AssetKey("organ_fused_label"),
              AssetKey("label_quality")]
INFER_CHAIN = [AssetKey("prediction"), AssetKey("evaluation")]


def _trained_digest(work, state: str) -> tuple[str | None, str | None]:
    path = work.manifests / f"{state}.json"
    if not path.exists():
        return None, None
    data = json.loads(path.read_text())
    return data.get("manifest_digest"), data.get("checkpoint_sha256")


def _stale_partitions(instance, asset: str, partitions, model_sha: str) -> list[str]:
    stale = []
    for case_id in instance.get_dynamic_partitions(partitions.name):
        meta = latest_metadata(instance, AssetKey(asset), case_id)
        if meta is None or meta.get("model_sha256") not in (model_sha, "not needed"):
            stale.append(case_id)
    return stale


def _ranged(keys: list[str], selection: list[AssetKey], order: list[str], label: str) -> list[RunRequest]:
    """One run over the partition range from the first to the last stale case:
    one model load; the up-to-date cases in between cost little (a case that
    annotates tumors needs no prediction)."""
    positions = sorted(order.index(k) for k in keys)
    first, last = order[positions[0]], order[positions[-1]]
    tags = {**partition_range_tags(first, last), "flare/trigger": label}
    return [RunRequest(run_key=f"{label}:{first}:{last}", asset_selection=selection, tags=tags)]


def _model_step(instance, work, model: str, wanted, chain: list[AssetKey], per_case_asset: str, partitions,
                per_case_chain: list[AssetKey]) -> list[RunRequest] | None:
    """Retrain `model` if what it would train on changed; else redo the per-case
    outputs made with an older checkpoint; else None."""
    trained_digest, checkpoint = _trained_digest(work, f"{model}_weights")
    if wanted.cases and wanted.digest != trained_digest:
        return [RunRequest(run_key=f"{model}:{wanted.digest}", asset_selection=chain,
                           tags={"flare/trigger": f"retrain-{model}"})]
    stale = _stale_partitions(instance, per_case_asset, partitions, checkpoint) if checkpoint else []
    if stale:
        order = instance.get_dynamic_partitions(partitions.name)
        return _ranged(stale, per_case_chain, order, f"refresh-{per_case_asset}-{checkpoint[:8]}")
    return None


def refresh_requests(context: ScheduleEvaluationContext, work_root: FlareWorkRoot) -> list[RunRequest] | SkipReason:
    """The next step that is due, or a skip reason saying that nothing is."""
    instance, work = context.instance, work_root.layout
    inventories, unavailable = collect_inventories(context, work, "train")
    due = _model_step(instance, work, "teacher", build_tumor_subset(inventories, unavailable), TEACHER_CHAIN,
                      "tumor_pseudo_label", training_cases, CASE_CHAIN)
    # The student's manifest hashes every fused label: computed only when the teacher side is settled.
    due = due or _model_step(instance, work, "student", fused_label_manifest(context, work), STUDENT_CHAIN,
                             "prediction", inference_cases, INFER_CHAIN)
    return due or SkipReason("models and per-case outputs are up to date with the registered cases")


def _build_schedule(name: str, chain: list[AssetKey], cron: str, what: str):
    # Dagster runs a schedule's requests as one asset job, whose assets must
    # share a partitions definition: hence one schedule per kind of step.
    @schedule(name=name, cron_schedule=cron, target=chain, default_status=DefaultScheduleStatus.STOPPED,
              description=what)
    def _schedule(context: ScheduleEvaluationContext, work_root: FlareWorkRoot):
        due = refresh_requests(context, work_root)
        if isinstance(due, SkipReason):
            return due
        if all(set(r.asset_selection) <= set(chain) for r in due):
            return due
        return SkipReason(f"the next due step ({[k.to_user_string() for k in due[0].asset_selection]}) "
                          "belongs to another schedule")

    return _schedule


retrain_schedule = _build_schedule(
    "retrain_schedule", TEACHER_CHAIN + STUDENT_CHAIN, "0 * * * *",
    "Hourly: retrain the teacher or the student when the cases they would train on changed.")
refresh_labels_schedule = _build_schedule(
    "refresh_labels_schedule", CASE_CHAIN, "20 * * * *",
    "Hourly: redo tumor pseudo-labels, fused labels and label quality made with an older teacher.")
refresh_predictions_schedule = _build_schedule(
    "refresh_predictions_schedule", INFER_CHAIN, "40 * * * *",
    "Hourly: redo predictions and evaluations made with an older student.")
SCHEDULES = [retrain_schedule, refresh_labels_schedule, refresh_predictions_schedule]
