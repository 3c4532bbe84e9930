"""Keep a Celery worker running, and tell Dagster about the step a dead one lost.

A Celery worker killed mid-step (the OOM killer, a GPU fault, `kill -9`) takes
the step's task with it: nothing ever answers the run that waits for it, so
the run stays "started" and Dagster's run retries never fire. The supervisor
runs the worker as its child. When the child dies while it was running steps
(`flare_assets.worker_hooks` lists them), the supervisor marks each of those
tasks failed in the result backend, so the run's executor sees the step fail,
the run fails, and the instance's `run_retries` launch it again from the
failure; then it starts a new worker for the retry to land on.

A worker that exits cleanly, or that the supervisor was asked to stop
(SIGTERM / SIGINT are passed on, for Celery's warm shutdown), is not
restarted; nor is one that dies at start-up (a wrong broker URL must be seen,
not retried forever).
"""
from __future__ import annotations

import logging
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from flare_assets.worker_hooks import running_tasks

log = logging.getLogger(__name__)

START_UP_SECONDS = 60.0  # a worker that dies sooner without a step is a configuration problem
RESTART_PAUSE_SECONDS = 1.0


def exit_description(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


def _shell_status(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def report_lost_steps(task_ids: list[str], settings: dict, reason: str) -> None:
    """Mark each task failed in the result backend the executor polls."""
    from celery import Celery
    from celery.exceptions import WorkerLostError

    app = Celery(broker=settings["broker"], backend=settings["backend"])
    for task_id in task_ids:
        app.backend.mark_as_failure(task_id, WorkerLostError(reason))
        log.warning("reported step task %s as failed: %s", task_id, reason)


def supervise(command: list[str], env: dict[str, str], state: Path, settings: dict, name: str,
              report: Callable[[list[str], dict, str], None] = report_lost_steps) -> int:
    """Run `command` until it exits cleanly or is stopped; returns its exit
    status as a shell reports it (128 + N for death by signal N)."""
    stopping: list[int] = []
    child: subprocess.Popen | None = None

    def pass_on(signum, _frame) -> None:
        stopping.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, pass_on)
    while True:
        state.write_text("[]")
        started = time.monotonic()
        child = subprocess.Popen(command, env=env)
        returncode = child.wait()
        lost = running_tasks(state)
        if stopping or returncode == 0:
            return _shell_status(returncode)
        reason = f"Celery worker {name} (pid {child.pid}) {exit_description(returncode)}"
        if lost:
            report(lost, settings, f"{reason} while running this step")
        elif time.monotonic() - started < START_UP_SECONDS:
            log.error("%s during start-up; not restarting it", reason)
            return _shell_status(returncode)
        log.warning("%s; starting a new worker", reason)
        time.sleep(RESTART_PAUSE_SECONDS)
