"""Dagster's automation sensor: the only scheduler of the platform.

It evaluates every asset's automation condition (`flare_assets.conditions`)
and launches what is due. Where many partitions of one asset are due at once
(a new teacher refreshes every tumor pseudo-label), it launches a backfill,
which runs them in batches by the asset's backfill policy: one model load per
batch, not per case.
"""
from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from flare_assets import settings

automation_sensor = AutomationConditionSensorDefinition(
    "flare_automation",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING if settings.sensors_start_running() else DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=30,
    emit_backfills=True,
    description="Registers new and changed cases, runs their per-case chains, retrains on the cron tick "
                "when the training data changed, and refreshes outputs of an older model.",
)
