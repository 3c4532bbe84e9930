"""Driving the asset graph from Python: what the demo command and tests use.

The same definitions the UI shows are materialized here against a real
Dagster instance, so everything the demo does appears in `dagster dev` with
its lineage. Work that is already up to date is skipped.
"""
import logging
from dataclasses import dataclass, field

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    DagsterInstance,
    materialize,
)

from flare_core.cases import INFER, TRAIN, case_signature, discover_cases
from flare_assets.assets import cases
from flare_assets.partitions import inference_cases, training_cases
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
    for case_id in sorted(instance.get_dynamic_partitions(partitions.name)):
        previous = latest_metadata(instance, asset.key, case_id)
        if previous and previous.get("input_signature") == case_signature(layout, split, case_id):
            report.skipped.append(case_id)
            continue
        _materialize_partition(instance, resources, asset, case_id, report)
    return report


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
            return error.message.strip().splitlines()[-1] if error.message else "failed"
    return "failed"
