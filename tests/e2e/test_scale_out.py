"""The scale-out profile for real: Postgres storage from deploy/dagster-postgres.yaml,
the Celery executor chosen by FLARE_EXECUTOR, a Redis broker, and a worker per
queue started with the project's own command. The whole tiny graph runs
through the workers; model steps run on the `gpu` worker only. A `gpu` worker
killed mid-step fails its run, and the instance's run retries finish it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from tests.e2e.graph_checks import assert_every_asset_materialized
from tests.e2e.services import celery_worker, dagster_daemon, postgres_server, redis_server

REPO = Path(__file__).resolve().parents[2]
MODEL_STEPS = {"teacher_weights", "tumor_pseudo_label", "student_weights", "prediction"}
KEEP = ("FLARE23_0001", "FLARE23_0002", "FLARE23_0004", "FLARE23_0006", "FLARE23_0009", "FLARE23Ts_0001")


def _keep_cases(root: Path, keep: tuple[str, ...]) -> None:
    for path in root.rglob("*.nii.gz"):
        if path.name.removesuffix(".nii.gz").removesuffix("_0000") not in keep:
            path.unlink()


@pytest.fixture(scope="module")
def cluster(tiny_data_root, tmp_path_factory):
    """Postgres + Redis + a `gpu` and a `default` worker, and the environment
    every process of the deployment shares (roots, instance, executor)."""
    base = tmp_path_factory.mktemp("scale_out")
    home = base / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    data = base / "data"
    shutil.copytree(tiny_data_root, data)
    _keep_cases(data, KEEP)  # every label group, fewer runs: the distribution is the point here
    mp = pytest.MonkeyPatch()
    with postgres_server() as pg_env, redis_server() as broker:
        env = {**pg_env, "DAGSTER_HOME": str(home), "FLARE_EXECUTOR": "celery", "FLARE_CELERY_BROKER": broker,
               "FLARE_DATA_ROOT": str(data), "FLARE_WORK_ROOT": str(base / "work"), "FLARE_PROFILE": "test",
               "FLARE_DEVICE": "cpu", "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1"}
        for name, value in env.items():
            mp.setenv(name, value)
        worker_env = dict(os.environ)
        with celery_worker("gpu", worker_env, base / "gpu-worker.log") as gpu, \
                celery_worker("default", worker_env, base / "default-worker.log") as default:
            yield dict(home=home, base=base, gpu=gpu, default=default)
    mp.undo()


def _worker_pids(worker) -> set[int]:
    process = psutil.Process(worker.pid)
    return {process.pid} | {child.pid for child in process.children(recursive=True)}


# The driver: a process of its own, as on a head node, so that the code
# location is loaded with the deployment's environment (FLARE_EXECUTOR=celery).
DRIVER = """
import json
from dagster import DagsterInstance
from flare_assets import pipeline
from flare_assets.definitions import build_resources, defs
assert defs.executor.name == "celery", defs.executor.name
with DagsterInstance.get() as instance:
    reports = pipeline.merged_reports(pipeline.run_until_settled(instance, build_resources(), through_jobs=True))
print(json.dumps({name: report.failed for name, report in reports.items()}))
"""


@pytest.fixture(scope="module")
def graph(cluster) -> dict[str, dict]:
    """The whole graph, driven once through the workers: the failures by step."""
    driver = subprocess.run([sys.executable, "-c", DRIVER], cwd=REPO, env=dict(os.environ), capture_output=True,
                            text=True, timeout=1500)
    assert driver.returncode == 0, driver.stderr[-4000:]
    return json.loads(driver.stdout.strip().splitlines()[-1])


def test_the_whole_graph_runs_on_postgres_through_celery_workers(cluster, graph):
    assert not any(graph.values()), graph
    with DagsterInstance.from_config(str(cluster["home"])) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert_every_asset_materialized(instance)

        gpu_pids, default_pids = _worker_pids(cluster["gpu"]), _worker_pids(cluster["default"])
        ran_on: dict[str, set[str]] = {}
        for run in instance.get_runs():
            for record in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_START).records:
                event = record.event_log_entry.dagster_event  # `pid`: the process that started the step
                worker = "gpu" if event.pid in gpu_pids else "default" if event.pid in default_pids else "?"
                ran_on.setdefault(event.step_key, set()).add(worker)
        assert ran_on, "no step started"
        for step, workers in ran_on.items():
            expected = "gpu" if step in MODEL_STEPS else "default"
            assert workers == {expected}, (step, workers)
        assert MODEL_STEPS <= set(ran_on), ran_on


def test_a_gpu_worker_killed_mid_step_is_retried_by_the_runs_retry_policy(cluster, graph):
    """kill -9 of the `gpu` worker while it trains the teacher: its supervisor
    reports the step lost, the run fails, the daemon's run retry re-executes it
    from the failure on the worker the supervisor started in its place."""
    shutil.rmtree(next((cluster["base"] / "work" / "nnUNet_results").glob("Dataset501_*")))  # train again
    env = {**os.environ, "FLARE_SENSORS": "off"}  # only the run this test launches
    with dagster_daemon(env, cluster["base"] / "daemon.log"), \
            DagsterInstance.from_config(str(cluster["home"])) as instance:
        earlier = {r.run_id for r in _runs(instance, "teacher_weights_job", parent=None)}  # the graph's
        launched = subprocess.run([str(Path(sys.executable).with_name("dagster")), "job", "launch", "-w",
                                   str(REPO / "workspace.yaml"), "-j", "teacher_weights_job"],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert launched.returncode == 0, launched.stderr[-3000:]
        first = _wait_for(lambda: [r for r in _runs(instance, "teacher_weights_job", parent=None)
                                   if r.run_id not in earlier], "the launched run", 300)[0]
        _wait_for(lambda: _step_started(instance, first.run_id, "teacher_weights"), "the step's start", 300)
        worker = psutil.Process(cluster["gpu"].pid).children()[0]  # the Celery worker under its supervisor
        worker.kill()
        retry = _wait_for(lambda: [r for r in _runs(instance, "teacher_weights_job", parent=first.run_id)
                                   if r.is_finished], "the retried run's end", 600)[0]
        failed = instance.get_run_by_id(first.run_id)
        assert failed.status == DagsterRunStatus.FAILURE, failed.status
        logged = " ".join(f"{e.message} {e.dagster_event.event_specific_data if e.dagster_event else ''}"
                          for e in instance.all_logs(first.run_id))
        assert "killed by SIGKILL while running this step" in logged, logged[-3000:]
        assert retry.status == DagsterRunStatus.SUCCESS, _tail(cluster["base"] / "gpu-worker.log")
    assert next((cluster["base"] / "work" / "nnUNet_results").rglob("fold_all/checkpoint_final.pth"))
    replacement = psutil.Process(cluster["gpu"].pid).children()
    assert replacement and replacement[0].pid != worker.pid, "the supervisor started a new worker"


def _runs(instance, job: str, parent: str | None) -> list:
    runs = instance.get_runs(RunsFilter(job_name=job))
    return [r for r in runs if r.tags.get("dagster/parent_run_id") == parent]


def _step_started(instance, run_id: str, step: str) -> bool:
    return any(r.event_log_entry.dagster_event.step_key == step for r in instance.get_records_for_run(
        run_id, of_type=DagsterEventType.STEP_START).records)


def _wait_for(found, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while not (result := found()):
        assert time.monotonic() < deadline, f"{what} did not come within {timeout} s"
        time.sleep(0.5)
    return result


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text()[-chars:] if path.exists() else ""
