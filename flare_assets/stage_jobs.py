"""A step's job rebuilt by name, in any process: the pointer Celery workers
and Kubernetes step pods follow (`dagster.build_reconstructable_job`)."""
from __future__ import annotations

from dagster import JobDefinition, build_reconstructable_job


def step_job(name: str) -> JobDefinition:
    from flare_assets.definitions import defs

    return defs.resolve_job_def(name)


def reconstructable_step_job(name: str):
    return build_reconstructable_job("flare_assets.stage_jobs", "step_job", reconstructable_args=(name,))
