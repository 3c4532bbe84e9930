"""Where steps run, chosen by configuration: FLARE_EXECUTOR.

- `multiprocess` (Dagster's default): each step of a run in its own process
  on the machine that runs the run;
- `in_process`: every step in the run's process (least overhead, one core);
- `celery`: each step is a Celery task, picked up by workers on any machine
  that shares the data and work roots (`python -m flare_assets.worker`).
  Model steps (training, teacher inference, prediction) go to the `gpu`
  queue, everything else to `default`, so GPU machines run only model steps;
- `k8s`: each step in its own Kubernetes pod (dagster-k8s's
  `k8s_job_executor`), configured by the run config file that
  FLARE_K8S_EXECUTOR_CONFIG names (deploy/k8s/executor.yaml).

Model steps also carry a Kubernetes resource request (one `nvidia.com/gpu`)
that `dagster-k8s`'s run launcher and `k8s_job_executor` apply to their pods.
The integrations are optional installs (`.[celery]`, `.[k8s]`), imported
only when chosen.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml
from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

EXECUTORS = ("multiprocess", "in_process", "celery", "k8s")
GPU_QUEUE, DEFAULT_QUEUE = "gpu", "default"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"

# Op tags of every step that runs a model: the Celery queue, and one GPU for
# its Kubernetes pod. (The `gpu` pool caps how many run at once.)
MODEL_STEP_TAGS = {
    "dagster-celery/queue": GPU_QUEUE,
    "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}},
}


def executor_name() -> str:
    name = os.environ.get("FLARE_EXECUTOR", "multiprocess")
    if name not in EXECUTORS:
        raise ValueError(f"FLARE_EXECUTOR={name!r}: choose one of {', '.join(EXECUTORS)}")
    return name


def celery_settings() -> dict:
    """The Celery app's settings, shared by the executor and the workers."""
    broker = os.environ.get("FLARE_CELERY_BROKER", DEFAULT_BROKER)
    return {
        "broker": broker,
        "backend": os.environ.get("FLARE_CELERY_BACKEND", broker),
        "config_source": {
            "task_default_queue": DEFAULT_QUEUE,
            # A task is acknowledged when a worker takes it. A worker that dies
            # mid-step is reported by its supervisor (flare_assets.worker): the
            # run fails and Dagster's run retries re-execute the step. A late
            # acknowledgement would also hand the task back to the queue, and
            # run the step a second time beside the retry.
            "task_acks_late": False,
            "worker_prefetch_multiplier": 1,
            "broker_connection_retry_on_startup": True,
        },
    }


def configured_executor() -> ExecutorDefinition:
    """The executor FLARE_EXECUTOR names, configured from the environment."""
    name = executor_name()
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor
    if name == "k8s":
        return k8s_executor()
    from dagster_celery import celery_executor  # optional: pip install -e ".[celery]"

    return celery_executor.configured(celery_settings(), name="celery")


def k8s_executor() -> ExecutorDefinition:
    from dagster_k8s import k8s_job_executor  # optional: pip install -e ".[k8s]"

    path = os.environ.get("FLARE_K8S_EXECUTOR_CONFIG")
    if not path:
        return k8s_job_executor
    config = yaml.safe_load(Path(path).read_text())["execution"]["config"]
    return k8s_job_executor.configured(config, name="k8s")
