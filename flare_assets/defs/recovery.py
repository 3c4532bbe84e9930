"""A sensor that finds runs whose process died and gives their pool slots back.

Under `dagster dev` nothing else notices a run worker killed by the OOM
killer or `kill -9`: the local run launcher cannot report its workers'
health to the daemon's run monitoring, so the run stays STARTED and keeps the
`gpu` pool slot, and every later model step waits for it. This sensor marks
such runs failed (their work is then due again) and frees the slots they
held (`flare_assets.run_recovery`). The demo does the same before it starts.
"""
from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from flare_assets import settings
from flare_assets.run_recovery import recover_dead_runs


@sensor(
    name="dead_run_sensor",
    minimum_interval_seconds=30,
    default_status=(DefaultSensorStatus.RUNNING if settings.sensors_start_running()
                    else DefaultSensorStatus.STOPPED),
    description="Marks runs whose process died as failed and frees the pool slots they held.",
)
def dead_run_sensor(context: SensorEvaluationContext) -> SkipReason:
    marked = recover_dead_runs(context.instance)
    for run_id in marked:
        context.log.warning("run %s lost its process: marked failed, pool slots freed", run_id)
    if marked:
        return SkipReason(f"marked {len(marked)} runs whose process died as failed: {', '.join(marked)}")
    return SkipReason("every run in progress has a live process")
