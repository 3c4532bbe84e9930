"""Dagster orchestration of the FLARE platform: partitions, resources, assets,
checks, sensors and schedules. The science lives in `flare_core`."""
