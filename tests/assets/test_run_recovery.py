"""A run killed with its process (kill -9) is marked failed and its `gpu` pool
slot freed - by the dead-run sensor's tick under a daemon, by the same
function before a demo - so later model steps run instead of waiting
forever; live runs are left alone. Real Dagster instance (SQLite), real
processes."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from dagster import DagsterInstance, DagsterRunStatus, asset, build_sensor_context, materialize

from flare_assets.defs.recovery import dead_run_sensor

from flare_assets.run_recovery import process_is_alive, recover_dead_runs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")  # pools: 1 slot each
    return home


def _start_slot_holder(home: Path, marker: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "tests.assets.slot_holder", str(home), str(marker)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert process.poll() is None, "the slot holder exited early"
        assert time.monotonic() < deadline, "the slot holder never started its step"
        time.sleep(0.5)
    return process


def _gpu_slots_in_use(instance: DagsterInstance) -> int:
    return instance.event_log_storage.get_concurrency_info("gpu").active_slot_count


def test_a_killed_run_is_marked_failed_and_its_slot_freed(home, tmp_path):
    holder = _start_slot_holder(home, tmp_path / "holding")
    with DagsterInstance.from_config(str(home)) as instance:
        assert recover_dead_runs(instance) == [], "a live run was judged dead"
        [run] = instance.get_runs()
        assert run.status == DagsterRunStatus.STARTED and _gpu_slots_in_use(instance) == 1
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)

        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED  # what a kill leaves
        # What the daemon does under `dagster dev`: the dead-run sensor's tick.
        skipped = dead_run_sensor(build_sensor_context(instance=instance))
        assert run.run_id in skipped.skip_message and "marked 1 runs" in skipped.skip_message
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
        assert _gpu_slots_in_use(instance) == 0

        @asset(pool="gpu")
        def next_model_step() -> int:
            return 1

        # Would wait for the dead run's slot forever without the recovery.
        assert materialize([next_model_step], instance=instance).success
        assert recover_dead_runs(instance) == []


def test_a_reused_process_id_does_not_keep_a_dead_run_alive():
    me = psutil.Process(os.getpid())
    assert process_is_alive(me.pid, since=time.time())
    # The run's event is older than this process: the pid now belongs to someone else.
    assert not process_is_alive(me.pid, since=me.create_time() - 60)
    assert not process_is_alive(2 ** 22 + 12345, since=time.time())  # above pid_max: no such process
