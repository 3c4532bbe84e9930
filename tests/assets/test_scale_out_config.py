"""The scale-out configuration: the executor is chosen by FLARE_EXECUTOR, model
steps are routed to the `gpu` queue and ask Kubernetes for a GPU, and the
shipped Kubernetes files validate against dagster-k8s's own config schemas."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import Definitions, asset, define_asset_job, validate_run_config

from flare_assets.definitions import defs
from flare_assets.executors import EXECUTORS, MODEL_STEP_TAGS, configured_executor
from flare_assets.worker import write_config_module

REPO = Path(__file__).resolve().parents[2]
MODEL_STEPS = {"teacher_weights", "tumor_pseudo_label", "student_weights", "prediction"}


@pytest.mark.parametrize("name", EXECUTORS)
def test_the_executor_is_the_one_flare_executor_names(monkeypatch, name):
    monkeypatch.setenv("FLARE_EXECUTOR", name)
    monkeypatch.setenv("FLARE_K8S_EXECUTOR_CONFIG", str(REPO / "deploy" / "k8s" / "executor.yaml"))
    assert configured_executor().name == name


def test_an_unknown_executor_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv("FLARE_EXECUTOR", "spark")
    with pytest.raises(ValueError, match="in_process.*celery"):
        configured_executor()


def test_the_code_location_takes_its_executor_from_the_environment():
    code = "from flare_assets.definitions import defs; print(defs.executor.name)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "FLARE_EXECUTOR": "celery"})
    assert done.stdout.strip().splitlines()[-1] == "celery", done.stderr[-2000:]


def test_model_steps_go_to_the_gpu_queue_and_everything_else_to_the_default():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if not node.is_executable:
            continue
        step = node.assets_def.node_def.name
        tags = node.assets_def.node_def.tags
        if step in MODEL_STEPS:
            assert tags.get("dagster-celery/queue") == "gpu", step
            assert "nvidia.com/gpu" in str(tags.get("dagster-k8s/config")), step
            assert node.pools == {"gpu"}, step
        else:
            assert "dagster-celery/queue" not in tags, step


def test_every_step_has_a_job_to_launch_it_by_name():
    names = {job.name for job in defs.jobs}
    for step in MODEL_STEPS | {"training_case", "fused_labels", "evaluation_summary"}:
        assert f"{step}_job" in names


def test_the_worker_serves_the_executors_broker_and_records_its_running_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("FLARE_CELERY_BROKER", "redis://broker.example:6379/3")
    text = write_config_module(tmp_path).read_text()
    assert "broker_url = 'redis://broker.example:6379/3'" in text
    assert "import flare_assets.worker_hooks" in text  # the supervisor learns which steps a dead worker lost
    assert "task_acks_late = False" in text  # a lost step is retried by its run, not handed out twice
    assert "task_default_queue = 'default'" in text


def test_the_k8s_executor_config_validates_against_dagster_k8s():
    from dagster_k8s import k8s_job_executor

    @asset
    def probe() -> None:
        return None

    job = Definitions(assets=[probe], jobs=[define_asset_job("probe_job", executor_def=k8s_job_executor)]) \
        .resolve_job_def("probe_job")
    run_config = yaml.safe_load((REPO / "deploy" / "k8s" / "executor.yaml").read_text())
    assert validate_run_config(job, run_config)["execution"]["k8s"]["job_namespace"] == "flare"
    broken = {"execution": {"config": {**run_config["execution"]["config"], "volumes": "not a list"}}}
    with pytest.raises(Exception, match="volumes"):
        validate_run_config(job, broken)


def test_the_helm_values_use_only_k8s_run_launcher_fields():
    from dagster_k8s import K8sRunLauncher

    values = yaml.safe_load((REPO / "deploy" / "k8s" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    camel = values["runLauncher"]["config"]["k8sRunLauncher"]
    snake = {re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower() for key in camel}
    assert snake <= set(K8sRunLauncher.config_type()), snake - set(K8sRunLauncher.config_type())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "flare_assets.definitions"]
