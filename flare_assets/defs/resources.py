"""The resources every asset uses and the executor, configured from FLARE_* environment variables."""
from dagster import Definitions, definitions

from flare_assets import settings
from flare_assets.executors import configured_executor
from flare_assets.resources import FlareDataRoot, FlareWorkRoot, RunProfile


def run_profile_settings() -> dict:
    """The run profile's fields from FLARE_* environment variables (see settings)."""
    return {"name": settings.profile(), "device": settings.device(),
            "inference_mode": settings.inference_mode(), "inference_backend": settings.inference_backend(),
            "inference_precision": settings.inference_precision(),
            "teacher_epochs": settings.teacher_epochs(), "student_epochs": settings.student_epochs()}


def build_resources() -> dict:
    """Resources configured from FLARE_* environment variables (see settings)."""
    return {
        "data_root": FlareDataRoot(path=str(settings.data_root())),
        "work_root": FlareWorkRoot(path=str(settings.work_root())),
        "run_profile": RunProfile(**run_profile_settings()),
    }


def code_location_resources() -> dict:
    """build_resources(), with a run profile that a run's config changes field by field.

    A fully configured resource takes a run's config for it as a whole: a launchpad
    entry `student_epochs: 300` would train the class defaults' `cpu` profile, not
    FLARE_PROFILE's. Bound with configure_at_launch, the environment's values stay
    the defaults of each field and a run overrides only the fields it names. The
    roots stay fully configured: the discovery sensors, which have no run config,
    need them resolved.
    """
    return {**build_resources(), "run_profile": RunProfile.configure_at_launch(**run_profile_settings())}


@definitions
def defs() -> Definitions:
    return Definitions(resources=code_location_resources(), executor=configured_executor())
