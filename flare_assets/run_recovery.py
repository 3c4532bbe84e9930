"""Runs whose process died: marked failed, and their pool slots given back.

A run killed together with its process (kill -9, the OOM killer, a power cut)
stays STARTED in Dagster's storage and keeps the `gpu` pool slot its step had
claimed, so every later step of that pool waits for it forever. Dagster's run
monitoring frees the slots of runs that *ended*, but it can only tell that a
run's process died for launchers that check their workers, which the local
`DefaultRunLauncher` does not; and without a daemon (the demo) nothing runs it.

Every Dagster run records the id of the process that executes it (an engine
event with a `pid` entry: "Started process for run" from a launcher, "Executing
steps in process" from `materialize`). A run is dead when that process no
longer exists, is a zombie, or was started after the run (the id was reused).
This is judged only on instances whose runs are local processes (the default
run launcher: `dagster dev`, the demo, the tests); a run whose process is on
another machine cannot be judged by pid, and a launcher that runs elsewhere
(Docker, Kubernetes) has its own health checks for run monitoring to use.
"""
from __future__ import annotations

import logging
import time

import psutil
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, DefaultRunLauncher, RunsFilter

log = logging.getLogger(__name__)

IN_PROGRESS = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
# A process's start time and the run's first event are read from different
# clocks' roundings; a process started this long after the event is another one.
PID_REUSE_MARGIN_SECONDS = 2.0
DEFAULT_SLOT_GRACE_SECONDS = 300


def recover_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark the runs whose process died as failed and free every pool slot
    still held by a run that is over. Returns the ids of the runs marked."""
    if not isinstance(instance.run_launcher, DefaultRunLauncher):
        return []
    marked = []
    for record in instance.get_run_records(RunsFilter(statuses=IN_PROGRESS)):
        run = record.dagster_run
        processes = run_processes(instance, run.run_id)
        if not processes or any(process_is_alive(pid, since) for pid, since in processes):
            continue
        pids = ", ".join(str(pid) for pid, _ in processes)
        instance.report_run_failed(run, f"the processes running this run (pid {pids}) are gone: killed or "
                                        "crashed; marked failed so that its work can run again")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log.warning("run %s (%s): its processes (%s) died; marked failed, pool slots freed", run.run_id[:8],
                    run.job_name, pids)
        marked.append(run.run_id)
    free_slots_of_finished_runs(instance)
    return marked


def run_processes(instance: DagsterInstance, run_id: str) -> list[tuple[int, float]]:
    """(pid, time of the event) of every process that said it executes the run
    (the run worker and, with the multiprocess executor, each step's process)."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=500).records
    processes = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event is not None else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None:
            processes.setdefault(int(pid.value), record.timestamp)
    return sorted(processes.items())


def process_is_alive(pid: int, since: float) -> bool:
    """Whether process `pid`, known to be running at time `since`, still is."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return process.create_time() <= since + PID_REUSE_MARGIN_SECONDS
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process: alive, and not ours to judge
        return True


def free_slots_of_finished_runs(instance: DagsterInstance) -> int:
    """Give back the pool slots (and pending claims) still held by runs that
    ended a while ago (the instance's `free_slots_after_run_end_seconds`, as
    the daemon's run monitoring does, for when no daemon runs)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return 0
    holding = list(storage.get_concurrency_run_ids())
    if not holding:
        return 0
    grace = instance.run_monitoring_settings.get("free_slots_after_run_end_seconds") or DEFAULT_SLOT_GRACE_SECONDS
    ended_before = time.time() - grace
    freed = 0
    for record in instance.get_run_records(RunsFilter(run_ids=holding, statuses=FINISHED)):
        if record.end_time is not None and record.end_time < ended_before:
            storage.free_concurrency_slots_for_run(record.dagster_run.run_id)
            log.info("freed the pool slots of run %s (%s)", record.dagster_run.run_id[:8],
                     record.dagster_run.status.value)
            freed += 1
    return freed
