"""The Celery worker's supervisor with real child processes: a worker killed
mid-step has its steps reported failed and is replaced; a clean exit, a stop
request and a start-up failure are not restarted."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from flare_assets.worker_supervisor import exit_description, supervise

# A stand-in worker: each start appends to `starts`; the first start records a
# running step and dies by SIGKILL, later starts exit cleanly (or wait).
FAKE_WORKER = """
import json, os, signal, sys, time
from pathlib import Path
state, starts, then = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
count = len(starts.read_text().split()) if starts.exists() else 0
starts.write_text(starts.read_text() + f"{os.getpid()} " if starts.exists() else f"{os.getpid()} ")
if count == 0:
    state.write_text(json.dumps(["task-of-the-teacher"]))
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGKILL)
if then == "wait":
    time.sleep(60)
sys.exit(0 if then != "fail" else 3)
"""


def _command(tmp_path: Path, then: str) -> list[str]:
    return [sys.executable, "-c", FAKE_WORKER, str(tmp_path / "state.json"), str(tmp_path / "starts"), then]


def _supervise(tmp_path: Path, then: str, reports: list) -> int:
    return supervise(_command(tmp_path, then), {}, tmp_path / "state.json", {"broker": "b", "backend": "b"},
                     "gpu-worker", report=lambda ids, settings, reason: reports.append((ids, reason)))


def test_a_worker_killed_mid_step_has_its_step_reported_and_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setattr("flare_assets.worker_supervisor.RESTART_PAUSE_SECONDS", 0.0)
    reports: list = []
    assert _supervise(tmp_path, "exit", reports) == 0
    first, second = (int(p) for p in (tmp_path / "starts").read_text().split())
    assert first != second, "a new worker process took over"
    assert reports == [(["task-of-the-teacher"],
                        f"Celery worker gpu-worker (pid {first}) was killed by SIGKILL while running this step")]
    assert json.loads((tmp_path / "state.json").read_text()) == [], "the new worker starts with no running step"


def test_a_worker_that_fails_at_start_up_is_not_restarted(tmp_path):
    (tmp_path / "starts").write_text("1 ")  # not the first start: no step is running
    reports: list = []
    assert _supervise(tmp_path, "fail", reports) == 3
    assert reports == [] and len((tmp_path / "starts").read_text().split()) == 2


def test_sigterm_is_passed_on_and_ends_supervision(tmp_path):
    (tmp_path / "starts").write_text("1 ")
    supervisor = subprocess.Popen([sys.executable, "-c", (
        "import sys; from flare_assets.worker_supervisor import supervise; from pathlib import Path; "
        f"sys.exit(supervise({_command(tmp_path, 'wait')!r}, {{}}, Path({str(tmp_path / 'state.json')!r}), "
        "{'broker': 'b', 'backend': 'b'}, 'w', report=lambda *a: sys.exit(9)))")])
    deadline = time.monotonic() + 30
    while len((tmp_path / "starts").read_text().split()) < 2:
        assert time.monotonic() < deadline and supervisor.poll() is None
        time.sleep(0.05)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 128 + signal.SIGTERM  # the worker's own answer to SIGTERM
    assert len((tmp_path / "starts").read_text().split()) == 2, "not restarted after a stop request"


def test_exit_descriptions_name_the_signal():
    assert exit_description(-9) == "was killed by SIGKILL" and exit_description(2) == "exited with status 2"


def test_the_worker_hooks_list_the_steps_running_now(tmp_path, monkeypatch):
    from celery.signals import task_postrun, task_prerun

    from flare_assets.worker_hooks import STATE_VARIABLE, running_tasks

    state = tmp_path / "running.json"
    monkeypatch.setenv(STATE_VARIABLE, str(state))
    task_prerun.send(sender=None, task_id="teacher-step")
    task_prerun.send(sender=None, task_id="prediction-step")
    assert running_tasks(state) == ["teacher-step", "prediction-step"]
    task_postrun.send(sender=None, task_id="teacher-step")
    assert running_tasks(state) == ["prediction-step"]
    assert running_tasks(tmp_path / "missing.json") == []
