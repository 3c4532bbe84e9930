"""The scale-out configuration: the executor is chosen by FLARE_EXECUTOR, model
steps are routed to the `gpu` queue and ask Kubernetes for a GPU, and the
shipped Kubernetes files validate against dagster-k8s's own config schemas."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import Definitions, asset, define_asset_job, validate_run_config

from flare_assets.definitions import defs
from flare_assets.settings import STEP_SETTINGS
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

    values = _values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    snake = set(_snake_case(values["runLauncher"]["config"]["k8sRunLauncher"]))
    assert snake <= set(K8sRunLauncher.config_type()), snake - set(K8sRunLauncher.config_type())
    deployment = _user_deployment()
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "flare_assets.definitions"]


# How dagster-k8s assembles a step pod on a cluster installed from the shipped
# files: the chart hands the user deployment's env, volumes and mounts to the
# runs it launches (includeConfigInLaunchedRuns); the run launcher's own config
# is resolved in the daemon; the k8s executor's config in the run pod. A name
# passed through (`env_vars`, `envVars`) is read from the environment of the
# process that resolves it, and an unset one fails the launch.
def _values() -> dict:
    return yaml.safe_load((REPO / "deploy" / "k8s" / "values.yaml").read_text())


def _user_deployment() -> dict:
    return _values()["dagster-user-deployments"]["deployments"][0]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [tuple(line.split(None, 1)) for line in lines]


def _image_environment() -> dict[str, str]:
    pairs = [word.split("=", 1) for keyword, rest in _dockerfile_instructions() if keyword == "ENV"
             for word in rest.split()]
    return dict(pairs)


def _only_environment(monkeypatch, environment: dict[str, str]) -> None:
    for name in [name for name in os.environ if name.startswith(("FLARE_", "DAGSTER_"))]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)


def _snake_case(config: dict) -> dict:
    return {re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower(): value for key, value in config.items()}


def test_the_run_launcher_reads_nothing_from_the_daemons_environment(monkeypatch):
    from dagster_k8s.container_context import K8sContainerContext

    _only_environment(monkeypatch, {})  # the daemon runs the chart's image, without this project's settings
    launcher = _snake_case(_values()["runLauncher"]["config"]["k8sRunLauncher"])
    launcher["namespace"] = launcher.pop("job_namespace")
    K8sContainerContext.create_from_config({"k8s": launcher})


def test_every_step_pod_gets_the_code_locations_settings_and_volumes(monkeypatch):
    from dagster_k8s.container_context import K8sContainerContext

    deployment = _user_deployment()
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    location = K8sContainerContext.create_from_config({"k8s": {
        "env": deployment["env"], "volumes": deployment["volumes"], "volume_mounts": deployment["volumeMounts"]}})
    deployment_env = {entry["name"]: entry["value"] for entry in deployment["env"]}
    _only_environment(monkeypatch, {**_image_environment(), **deployment_env})  # the run pod's environment
    executor = yaml.safe_load((REPO / "deploy" / "k8s" / "executor.yaml").read_text())["execution"]["config"]
    step = location.merge(K8sContainerContext(
        env_vars=executor.get("env_vars"), volumes=executor.get("volumes"),
        volume_mounts=executor.get("volume_mounts"), namespace=executor.get("job_namespace"),
        resources=executor.get("resources"), image_pull_policy=executor.get("image_pull_policy")))

    container = step.run_k8s_config.container_config
    names = [entry["name"] for entry in container["env"]]
    assert set(STEP_SETTINGS) | {"FLARE_EXECUTOR", "FLARE_K8S_EXECUTOR_CONFIG"} <= set(names)
    assert len(names) == len(set(names))
    assert [volume["name"] for volume in step.run_k8s_config.pod_spec_config["volumes"]] == ["flare-data", "flare-work"]
    mounts = {mount["name"]: mount["mount_path"] for mount in container["volume_mounts"]}
    assert mounts == {"flare-data": deployment_env["FLARE_DATA_ROOT"], "flare-work": deployment_env["FLARE_WORK_ROOT"]}
    assert step.namespace == "flare"


def test_the_image_holds_the_step_executor_config_that_the_deployment_names():
    instructions = _dockerfile_instructions()
    workdir = Path([rest for keyword, rest in instructions if keyword == "WORKDIR"][-1])
    copied = {str(workdir / rest.split()[-1]): rest.split()[0] for keyword, rest in instructions if keyword == "COPY"}
    named = {entry["name"]: entry["value"] for entry in _user_deployment()["env"]}["FLARE_K8S_EXECUTOR_CONFIG"]
    assert copied.get(named) == "deploy/k8s/executor.yaml", copied
