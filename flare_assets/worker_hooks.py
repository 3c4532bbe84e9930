"""Inside a Celery worker: the ids of the tasks it is running, in a file its
supervisor reads (`flare_assets.worker_supervisor`).

The worker's generated config module imports this module when the path is set
(FLARE_WORKER_STATE). A task id is added when its step starts and removed when
it ends, so after a kill the file names exactly the steps that were cut short.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from celery.signals import task_postrun, task_prerun

STATE_VARIABLE = "FLARE_WORKER_STATE"
_lock = threading.Lock()  # `--concurrency N` runs tasks in threads


def running_tasks(path: Path) -> list[str]:
    """The task ids the file lists (none when it is missing or unreadable)."""
    try:
        return list(json.loads(Path(path).read_text()))
    except (OSError, ValueError):
        return []


def _update(add: str | None = None, remove: str | None = None) -> None:
    path = Path(os.environ[STATE_VARIABLE])
    with _lock:
        tasks = [t for t in running_tasks(path) if t != remove] + ([add] if add else [])
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(tasks))
        os.replace(partial, path)  # the supervisor never reads half a list


@task_prerun.connect
def _step_started(task_id: str = "", **_) -> None:
    _update(add=task_id)


@task_postrun.connect
def _step_ended(task_id: str = "", **_) -> None:
    _update(remove=task_id)
