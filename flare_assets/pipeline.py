"""Driving the asset graph from Python: what the demo command and tests use.

The same definitions the UI shows are materialized here against a real
Dagster instance, so everything the demo does appears in `dagster dev` with
its lineage. Work that is already up to date is skipped.
"""
import logging
import time
from dataclasses import dataclass, field

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    DagsterInstance,
    materialize,
)

from flare_core.cases import INFER, TRAIN, case_signature, discover_cases
from flare_assets import progress
from flare_assets.assets import cases
from flare_assets.partitions import inference_cases, partition_range_tags, training_cases
from flare_assets.resources import FlareDataRoot

log = logging.getLogger(__name__)

# Step events at INFO and above: the DEBUG stream drowns the demo's summary.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass
class StageReport:
    """What one stage did: materialized, skipped as up to date, failed."""

    name: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def sync_partitions(instance: DagsterInstance, data_root: FlareDataRoot) -> dict[str, list[str]]:
    """Add a partition for every new, safely named case; return the rejected files."""
    rejected = {}
    for split, partitions in ((TRAIN, training_cases), (INFER, inference_cases)):
        found = discover_cases(data_root.layout, split)
        known = set(instance.get_dynamic_partitions(partitions.name))
        new = [c for c in found.case_ids if c not in known]
        if new:
            instance.add_dynamic_partitions(partitions.name, new)
        for name, problem in found.rejected.items():
            log.warning("%s: %s", split, problem)
        rejected[split] = sorted(found.rejected.values())
    return rejected


def latest_metadata(instance: DagsterInstance, key: AssetKey, partition: str | None = None) -> dict | None:
    """Metadata of the latest materialization of an asset (partition), if any."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1)
    if not records.records:
        return None
    materialization = records.records[0].asset_materialization
    return {k: v.value for k, v in materialization.metadata.items()}


def register_cases(instance: DagsterInstance, resources: dict, split: str) -> StageReport:
    """Materialize the registration of every case whose files changed since."""
    asset: AssetsDefinition = cases.training_case if split == TRAIN else cases.inference_case
    partitions = training_cases if split == TRAIN else inference_cases
    report = StageReport(name=asset.key.to_user_string())
    layout = resources["data_root"].layout
    changed = []
    for case_id in sorted(instance.get_dynamic_partitions(partitions.name)):
        previous = latest_metadata(instance, asset.key, case_id)
        if previous and previous.get("input_signature") == case_signature(layout, split, case_id):
            report.skipped.append(case_id)
        else:
            changed.append(case_id)
    progress.expect(len(changed), "case")
    for case_id in changed:
        _materialize_partition(instance, resources, asset, case_id, report)
        progress.advance("case")
    return report


def materialize_cases(instance: DagsterInstance, resources: dict, asset: AssetsDefinition,
                      case_ids: list[str], report: StageReport | None = None) -> StageReport:
    """Materialize a per-case asset for `case_ids` in as few runs as possible.

    Runs cover contiguous ranges of the partition order (what Dagster's batched
    backfills do), so a model is loaded once per range, not once per case."""
    report = report or StageReport(name=_name(asset))
    progress.expect(len(case_ids), "case")  # the assets' batches advance it, case by case
    partitions = asset.partitions_def
    order = partitions.get_partition_keys(dynamic_partitions_store=instance)
    for first, last in _contiguous_ranges(order, set(case_ids)):
        tags = {**partition_range_tags(first, last),
                "flare/trigger": "pipeline"}
        result = materialize([asset], instance=instance, resources=resources, raise_on_error=False, tags=tags,
                             run_config=RUN_CONFIG)
        cases_in_range = order[order.index(first): order.index(last) + 1]
        failed = _failed_cases(result, cases_in_range) if not result.success else {}
        report.failed.update(failed)
        report.done += [c for c in cases_in_range if c not in failed]
    return report


def latest_timestamp(instance: DagsterInstance, key: AssetKey, partition: str | None = None) -> float | None:
    """When an asset (partition) was last materialized; any partition if None."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1)
    return records.records[0].timestamp if records.records else None


def is_stale(instance: DagsterInstance, asset: AssetsDefinition, partition: str | None = None) -> bool:
    """The make rule on materialization events: missing, or older than a parent.

    A per-case parent counts for the same case; a global parent counts as is;
    for a global asset, a per-case parent counts through its newest partition."""
    graph = _asset_graph()
    for key in asset.keys:
        own = latest_timestamp(instance, key, partition)
        if own is None:
            return True
        for parent in graph.get(key).parent_keys:
            if parent in asset.keys:
                continue
            parent_partition = partition if graph.get(parent).is_partitioned else None
            newest = latest_timestamp(instance, parent, parent_partition)
            if newest is not None and newest > own:
                return True
    return False


def _asset_graph():
    from flare_assets.definitions import defs

    return defs.resolve_asset_graph()


def materialize_if_stale(instance: DagsterInstance, resources: dict, asset: AssetsDefinition) -> StageReport:
    if is_stale(instance, asset):
        return materialize_global(instance, resources, asset)
    return StageReport(name=_name(asset), skipped=["all"])


def materialize_stale_cases(instance: DagsterInstance, resources: dict, asset: AssetsDefinition,
                            case_ids: list[str]) -> StageReport:
    stale = [c for c in case_ids if is_stale(instance, asset, c)]
    report = StageReport(name=_name(asset), skipped=[c for c in case_ids if c not in stale])
    return materialize_cases(instance, resources, asset, stale, report) if stale else report


def materialize_global(instance: DagsterInstance, resources: dict, asset: AssetsDefinition) -> StageReport:
    report = StageReport(name=_name(asset))
    result = materialize([asset], instance=instance, resources=resources, raise_on_error=False,
                         run_config=RUN_CONFIG)
    if result.success:
        report.done.append("all")
    else:
        report.failed["all"] = _failure_message(result)
    return report


def _name(asset: AssetsDefinition) -> str:
    return asset.node_def.name  # the op: "fused_labels" for the two fused assets


def _contiguous_ranges(order: list[str], wanted: set[str]) -> list[tuple[str, str]]:
    ranges, start, previous = [], None, None
    for key in order + [None]:
        if key in wanted:
            start = start or key
            previous = key
        elif start is not None:
            ranges.append((start, previous))
            start = None
    return ranges


def _failed_cases(result, cases_in_range: list[str]) -> dict[str, str]:
    """Cases named by a batch failure (see flare_assets.batching), else all."""
    message = _failure_message(result)
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.user_failure_data:
            named = event.step_failure_data.user_failure_data.metadata.get("failed_cases")
            if named is not None:
                return {c: message for c in named.value.split(", ") if c}
    return {c: message for c in cases_in_range}


def _materialize_partition(instance, resources, asset, case_id, report: StageReport) -> None:
    result = materialize([asset], partition_key=case_id, instance=instance, resources=resources,
                         raise_on_error=False, tags={"flare/trigger": "pipeline"}, run_config=RUN_CONFIG)
    if result.success:
        report.done.append(case_id)
    else:
        report.failed[case_id] = _failure_message(result)


def _failure_message(result) -> str:
    """The failing checks' descriptions, else the step error's last line."""
    failed_checks = [e.description for e in result.get_asset_check_evaluations() if not e.passed]
    if failed_checks:
        return "; ".join(failed_checks)
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None:  # the user's exception, not Dagster's wrapper
                error = error.cause
            if not error.message:
                return "failed"
            message = error.message.strip().splitlines()[-1]
            if error.cls_name == "Failure":  # an asset's own explanation: its words, not the class path
                message = message.split(": ", 1)[-1]
            return message
    return "failed"


def run_all(instance: DagsterInstance, resources: dict) -> list[StageReport]:
    """Every stage of the method in order, as the demo runs it; work that is up
    to date (materialized after all its inputs) is skipped. Stages and their
    units of work are announced through `flare_assets.progress`."""
    from flare_assets.assets import fusion, inference, quality, student, teacher

    sync_partitions(instance, resources["data_root"])

    def usable_cases(split: str = TRAIN) -> list[str]:  # asked per stage: registration may change the answer
        return usable_case_ids(instance, resources, split)

    stages = [
        ("training_case", lambda: register_cases(instance, resources, TRAIN)),
        ("inference_case", lambda: register_cases(instance, resources, INFER)),
        ("tumor_subset", lambda: materialize_if_stale(instance, resources, cases.tumor_subset)),
        ("teacher_plans", lambda: materialize_if_stale(instance, resources, teacher.teacher_plans)),
        ("teacher_weights", lambda: materialize_if_stale(instance, resources, teacher.teacher_weights)),
        ("tumor_pseudo_label",
         lambda: materialize_stale_cases(instance, resources, teacher.tumor_pseudo_label, usable_cases())),
        ("fused_labels", lambda: materialize_stale_cases(instance, resources, fusion.fused_labels, usable_cases())),
        ("label_quality",
         lambda: materialize_stale_cases(instance, resources, quality.label_quality, usable_cases())),
        ("label_quality_summary", lambda: materialize_if_stale(instance, resources, quality.label_quality_summary)),
        ("student_plans", lambda: materialize_if_stale(instance, resources, student.student_plans)),
        ("student_weights", lambda: materialize_if_stale(instance, resources, student.student_weights)),
        ("prediction",
         lambda: materialize_stale_cases(instance, resources, inference.prediction, usable_cases(INFER))),
        ("evaluation",
         lambda: materialize_stale_cases(instance, resources, inference.evaluation, usable_cases(INFER))),
        ("evaluation_summary", lambda: materialize_if_stale(instance, resources, inference.evaluation_summary)),
    ]
    reports = []
    for index, (name, stage) in enumerate(stages, start=1):
        progress.stage_started(name, index, len(stages))
        started = time.perf_counter()
        report = stage()
        report.seconds = time.perf_counter() - started
        reports.append(report)
        progress.stage_finished(report)
        if "all" in report.failed:
            log.error("%s failed: %s; later stages need it, stopping", report.name, report.failed["all"])
            break
    return reports


def usable_case_ids(instance: DagsterInstance, resources: dict, split: str = TRAIN) -> list[str]:
    """Cases whose latest registration succeeded with passing checks."""
    work = resources["work_root"].layout
    partitions = training_cases if split == TRAIN else inference_cases
    return [c for c in instance.get_dynamic_partitions(partitions.name)
            if cases.registration_failure(work, split, c) is None
            and (inventory := cases.load_inventory(work, split, c)) is not None and inventory.ok]
