"""The scale-out profile for real: Postgres storage from deploy/dagster-postgres.yaml,
the Celery executor chosen by FLARE_EXECUTOR, a Redis broker, and a worker per
queue started with the project's own command. The whole tiny graph runs
through the workers; model steps run on the `gpu` worker only."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from dagster import DagsterEventType, DagsterInstance

from tests.e2e.graph_checks import assert_every_asset_materialized
from tests.e2e.services import celery_worker, postgres_server, redis_server

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


def test_the_whole_graph_runs_on_postgres_through_celery_workers(cluster):
    driver = subprocess.run([sys.executable, "-c", DRIVER], cwd=REPO, env=dict(os.environ), capture_output=True,
                            text=True, timeout=1500)
    assert driver.returncode == 0, driver.stderr[-4000:]
    failed = json.loads(driver.stdout.strip().splitlines()[-1])
    assert not any(failed.values()), failed
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
