"""Driving the asset graph from Python by Dagster's own automation: the demo and tests.

`run_until_settled` does in one process what `dagster dev`'s daemon does over
time: it records what the discovery sensors would (new partitions, events of
the case files), evaluates the assets' automation conditions
(`flare_assets.conditions`) with Dagster's evaluator, materializes what they
request, and repeats until nothing is requested. Every decision about what is
due is Dagster's; the history it leaves is the one the daemon continues, so a
`dagster dev` started afterwards finds nothing to do.

Each tick runs the requested assets in topological order, one run per case
(a per-case model asset reuses its loaded model across the runs of one
process, see `flare_assets.model_cache`). A case whose step failed, or failed
a blocking check, is not passed on to the later steps of the same tick, as a
blocking check stops the rest of a run under the daemon.

Before anything runs, runs left behind by a killed process are marked failed
and their pool slots freed (`flare_assets.run_recovery`), so their work runs
again instead of waiting forever. Inside `interruption.stopping_on_signals()`
a SIGINT / SIGTERM stops the loop after the interrupted run
(`interruption.StopRequested`).
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator, Sequence

from dagster import (
    AssetKey,
    AssetSelection,
    AssetRecordsFilter,
    AssetsDefinition,
    DagsterInstance,
    Definitions,
    evaluate_automation_conditions,
    execute_job,
    materialize,
)

from flare_core.cases import INFER, TRAIN
from flare_assets import case_discovery, interruption, progress, run_recovery

log = logging.getLogger(__name__)

# Step events at INFO and above: the DEBUG stream drowns the demo's summary.
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
MAX_TICKS = 40
RUN_TAGS = {"flare/trigger": "automation"}


@dataclass
class StageReport:
    """What one step did in one tick: materialized, failed (per case, or "all")."""

    name: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def code_location() -> Definitions:
    from flare_assets.definitions import defs

    return defs


def discover_cases(instance: DagsterInstance, resources: dict) -> dict[str, case_discovery.Discovered]:
    """Record new and changed cases as the discovery sensors would (files complete: no settling)."""
    found = {}
    data, work = resources["data_root"].layout, resources["work_root"].layout
    for split in (TRAIN, INFER):
        found[split] = case_discovery.discover(instance, data, work, split, cursor=None)
        case_discovery.apply(instance, split, found[split])
        for subject, problem in sorted(found[split].problems.items()):
            log.warning("%s: skipped %s: %s", split, subject, problem)
    return found


def refused_at_discovery(found: dict[str, case_discovery.Discovered]) -> list[StageReport]:
    """The files discovery would not take, as a failed stage: they are cases
    (or would-be cases) that a user must hear about."""
    refused = {subject: problem for split in found for subject, problem in sorted(found[split].problems.items())}
    return [StageReport(name="discovery", failed=refused)] if refused else []


def run_until_settled(instance: DagsterInstance, resources: dict, defs: Definitions | None = None,
                      selection: AssetSelection | None = None, max_ticks: int = MAX_TICKS,
                      through_jobs: bool = False) -> list[StageReport]:
    """Discover cases, then evaluate the automation conditions (of `selection`,
    default all) and materialize what they request until nothing is.
    Returns one report per step run.

    By default each step runs in this process with `resources`. With
    `through_jobs` it runs as its step job of the code location
    (`flare_assets.defs.jobs`), with the code location's FLARE_* resources and
    its executor (FLARE_EXECUTOR): with `celery`, on the workers."""
    defs = defs or code_location()
    reports: list[StageReport] = []
    launch = _launch_job if through_jobs else in_process(resources)
    run_recovery.recover_dead_runs(instance)  # a killed earlier run must not hold the `gpu` pool forever
    # A first evaluation starts the automation's history (and requests what a
    # crash or failure left missing); events after it count as new.
    result = evaluate(defs, instance, selection, cursor=None)
    reports += run_requested(instance, launch, defs, result, len(reports))
    reports += refused_at_discovery(discover_cases(instance, resources))
    for _ in range(max_ticks):
        result = evaluate(defs, instance, selection, cursor=result.cursor)
        if result.total_requested == 0:
            return reports
        reports += run_requested(instance, launch, defs, result, len(reports))
    log.warning("automation still requesting work after %d evaluations; stopping", max_ticks)
    return reports


def evaluate(defs: Definitions, instance: DagsterInstance, selection: AssetSelection | None, cursor):
    """One evaluation of the automation conditions, as the daemon's sensor makes it."""
    with _partition_lists_read_once(instance):
        return evaluate_automation_conditions(defs, instance, asset_selection=selection, cursor=cursor)


@contextlib.contextmanager
def _partition_lists_read_once(instance: DagsterInstance) -> Iterator[None]:
    """Dagster's public evaluator asks the instance for a dynamic partition list
    once per condition node while it builds the next cursor (about 1,600
    queries an evaluation here: 5-8 s, where the daemon's own path reads each
    list once). No partition is added during an evaluation, so each list is
    read once and the instance's own method is put back afterwards."""
    read: dict[str, Sequence[str]] = {}
    original = instance.get_dynamic_partitions

    def read_once(partitions_def_name: str) -> Sequence[str]:
        if partitions_def_name not in read:
            read[partitions_def_name] = original(partitions_def_name)
        return read[partitions_def_name]

    instance.get_dynamic_partitions = read_once
    try:
        yield
    finally:
        del instance.get_dynamic_partitions  # the class's method again


def run_requested(instance: DagsterInstance, launch: Callable, defs: Definitions, result,
                  steps_before: int = 0) -> list[StageReport]:
    """Materialize one evaluation's requests, step by step in topological order."""
    graph = defs.resolve_asset_graph()
    requested = {key: result.get_requested_partitions(key) for key in graph.toposorted_asset_keys
                 if result.get_num_requested(key)}
    blocked: dict[str | None, str] = {}  # case -> why its later steps wait
    reports = []
    for assets_def in _steps(defs, requested):
        keys = [k for k in assets_def.keys if k in requested]
        partitions = sorted(set().union(*(requested[k] for k in keys)), key=lambda p: p or "")
        index = steps_before + len(reports) + 1
        reports.append(_run_step(instance, launch, assets_def, partitions, blocked, index))
    return reports


def _steps(defs: Definitions, requested: dict[AssetKey, set]) -> list[AssetsDefinition]:
    """The executable definitions behind the requested keys, in the keys' order.

    Taken as declared (`defs.assets`), not from the resolved graph, whose
    copies carry the code location's resources: the caller's are used."""
    by_key = {key: a for a in defs.assets if isinstance(a, AssetsDefinition) and a.is_executable
              for key in a.keys}
    steps = []
    for key in requested:
        if key in by_key and by_key[key] not in steps:
            steps.append(by_key[key])
    return steps


def in_process(resources: dict) -> Callable:
    """The launcher that runs a step in this process with `resources`."""
    return partial(_materialize, resources=resources)


def _materialize(instance: DagsterInstance, assets_def: AssetsDefinition, partition: str | None, *,
                 resources: dict):
    """One step for one partition, in this process, with the caller's resources."""
    return materialize([assets_def], instance=instance, resources=resources, partition_key=partition,
                       raise_on_error=False, tags=RUN_TAGS, run_config=RUN_CONFIG)


def _launch_job(instance: DagsterInstance, assets_def: AssetsDefinition, partition: str | None):
    """One step for one partition as the code location's step job, on its executor."""
    from flare_assets.stage_jobs import reconstructable_step_job

    tags = {**RUN_TAGS, **({"dagster/partition": partition} if partition is not None else {})}
    job = reconstructable_step_job(f"{assets_def.node_def.name}_job")
    with execute_job(job, instance, run_config=RUN_CONFIG, tags=tags, raise_on_error=False) as result:
        return result


def _run_step(instance: DagsterInstance, launch: Callable, assets_def: AssetsDefinition,
              partitions: list[str | None], blocked: dict, index: int) -> StageReport:
    report = StageReport(name=assets_def.node_def.name)  # "fused_labels" for the two fused assets
    progress.stage_started(report.name, index, 0)
    started = time.perf_counter()
    if partitions != [None]:
        progress.expect(len(partitions), "case")
    for partition in partitions:
        if partition in blocked:
            report.skipped.append(partition)
            continue
        outcome = launch(instance, assets_def, partition)
        interruption.raise_if_stop_requested()
        problem = None if outcome.success else failure_message(outcome)
        problem = problem or _failed_blocking_checks(outcome)
        label = partition or "all"
        if problem:
            report.failed[label] = problem
            blocked[partition] = problem
        else:
            report.done.append(label)
        if partition is not None:
            progress.advance("case")
    report.seconds = time.perf_counter() - started
    progress.stage_finished(report)
    return report


def _failed_blocking_checks(result) -> str | None:
    failed = [e.description or e.check_name for e in result.get_asset_check_evaluations()
              if not e.passed and e.blocking]
    return "; ".join(failed) if failed else None


def failure_message(result) -> str:
    """The failing checks' descriptions, else the step error's last line."""
    failed_checks = [e.description for e in result.get_asset_check_evaluations() if not e.passed]
    if failed_checks:
        return "; ".join(d or "check failed" for d in failed_checks)
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


def latest_metadata(instance: DagsterInstance, key: AssetKey, partition: str | None = None) -> dict | None:
    """Metadata of the latest materialization of an asset (partition), if any."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1)
    if not records.records:
        return None
    materialization = records.records[0].asset_materialization
    return {k: v.value for k, v in materialization.metadata.items()}


def merged_reports(reports: list[StageReport]) -> dict[str, StageReport]:
    """One report per step name, over every tick it ran in."""
    merged: dict[str, StageReport] = {}
    for report in reports:
        into = merged.setdefault(report.name, StageReport(name=report.name))
        into.done += report.done
        into.skipped += report.skipped
        into.failed.update(report.failed)
        into.seconds += report.seconds
    return merged
