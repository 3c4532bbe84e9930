"""The code location: every asset, check, sensor and resource of the platform.

Loaded as an installed module (`workspace.yaml`), so step processes can import
project classes by dotted path, as nnU-Net does with its network classes.
"""
from __future__ import annotations

from dagster import Definitions, load_assets_from_modules

from flare_assets import settings
from flare_assets.assets import cases, fusion, inference, quality, student, teacher
from flare_assets.resources import FlareDataRoot, FlareWorkRoot, RunProfile
from flare_assets.schedules import SCHEDULES
from flare_assets.sensors import inference_case_sensor, training_case_sensor


def build_resources() -> dict:
    """Resources configured from FLARE_* environment variables (see settings)."""
    return {
        "data_root": FlareDataRoot(path=str(settings.data_root())),
        "work_root": FlareWorkRoot(path=str(settings.work_root())),
        "run_profile": RunProfile(name=settings.profile(), device=settings.device(),
                                  inference_mode=settings.inference_mode()),
    }


ALL_ASSETS = load_assets_from_modules([cases, teacher, fusion, quality, student, inference])
SENSORS = [training_case_sensor, inference_case_sensor]

defs = Definitions(assets=ALL_ASSETS, sensors=SENSORS, schedules=SCHEDULES, resources=build_resources())
