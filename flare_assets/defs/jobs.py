"""One job per step of the method (`training_case_job`, `teacher_weights_job`, ...).

What `dagster job execute -j <step>_job --partition <case>`, a launchpad run
or a distributed driver launches: a step by name, with the code location's
executor (FLARE_EXECUTOR) and resources. `flare_assets.stage_jobs` rebuilds
them by name in another process, which Celery and Kubernetes steps need.
"""
from dagster import AssetsDefinition, AssetSelection, define_asset_job

from flare_assets.defs import cases, fusion, inference, quality, student, teacher


def _steps() -> list[AssetsDefinition]:
    found = []
    for module in (cases, teacher, fusion, quality, student, inference):
        for value in vars(module).values():
            if isinstance(value, AssetsDefinition) and value.is_executable and value not in found:
                found.append(value)
    return found


def job_name(step: AssetsDefinition) -> str:
    return f"{step.node_def.name}_job"


STEP_JOBS = [define_asset_job(job_name(step), selection=AssetSelection.assets(*step.keys),
                              partitions_def=step.partitions_def)
             for step in _steps()]
