"""The resources every asset uses and the executor, configured from FLARE_* environment variables."""
from dagster import Definitions, definitions

from flare_assets import settings
from flare_assets.executors import configured_executor
from flare_assets.resources import FlareDataRoot, FlareWorkRoot, RunProfile


def build_resources() -> dict:
    """Resources configured from FLARE_* environment variables (see settings)."""
    return {
        "data_root": FlareDataRoot(path=str(settings.data_root())),
        "work_root": FlareWorkRoot(path=str(settings.work_root())),
        "run_profile": RunProfile(name=settings.profile(), device=settings.device(),
                                  inference_mode=settings.inference_mode(),
                                  inference_backend=settings.inference_backend(),
                                  inference_precision=settings.inference_precision(),
                                  teacher_epochs=settings.teacher_epochs(),
                                  student_epochs=settings.student_epochs()),
    }


@definitions
def defs() -> Definitions:
    return Definitions(resources=build_resources(), executor=configured_executor())
