"""Sensors that discover cases under the data root; nothing else.

Each tick adds partitions for new, safely named cases and reports an event of
the case's files for every new or changed case (`flare_assets.case_discovery`).
What is then due (registration, the per-case chain) is the automation
conditions' business. Unsafe names and unreadable headers are logged, once
per change of the file, and never crash the sensor.
"""
from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from flare_core.cases import INFER, TRAIN
from flare_assets import settings
from flare_assets.case_discovery import PARTITIONS, Cursor, discover
from flare_assets.resources import FlareDataRoot, FlareWorkRoot


def _build_discovery_sensor(name: str, split: str):
    @sensor(
        name=name,
        minimum_interval_seconds=30,
        default_status=(DefaultSensorStatus.RUNNING if settings.sensors_start_running()
                        else DefaultSensorStatus.STOPPED),
        description=f"Discovers {split} cases that appear or change under the data root.",
    )
    def _discovery_sensor(context: SensorEvaluationContext, data_root: FlareDataRoot, work_root: FlareWorkRoot):
        previous = Cursor.from_json(context.cursor)
        found = discover(context.instance, data_root.layout, work_root.layout, split, previous,
                         settle_seconds=settings.settle_seconds())
        watermark = previous.watermark if previous else 0.0
        for subject, problem in sorted(found.problems.items()):
            context.log.warning("skipped %s: %s", subject, problem)
        cursor = found.cursor.to_json()
        if not found.events:
            return SensorResult(skip_reason=SkipReason(f"no new or changed {split} cases since {watermark:.0f}"),
                                cursor=cursor)
        context.log.info("%d new and %d changed %s cases", len(found.new), len(found.changed), split)
        return SensorResult(
            dynamic_partitions_requests=[PARTITIONS[split].build_add_request(found.new)] if found.new else [],
            asset_events=found.events,
            cursor=cursor,
        )

    return _discovery_sensor


training_case_sensor = _build_discovery_sensor("training_case_sensor", TRAIN)
inference_case_sensor = _build_discovery_sensor("inference_case_sensor", INFER)
