"""Planner of the student: the FLARE22 "small nnU-Net" 3d_fullres configuration.

With the `flare23` profile the configuration is fixed entirely by the
settings (METHOD.md step 4): target spacing [4.0, 1.2, 1.2], patch
[32, 128, 192], five stages with 16..256 features, kernels [1,3,3] then
[3,3,3], strides [1,1,1], [1,2,2], [2,2,2] x3, two convs per stage, batch 2;
nnU-Net still decides normalisation, resampling and transposition. Only the
3d_fullres configuration is kept in the plans.
"""
from __future__ import annotations

from flare_core.nnunet.configured_planner import ConfiguredPlanner
from flare_core.nnunet.settings import StudentSettings

STUDENT_PLANS = "FlareStudentPlans"


class FlareStudentPlanner(ConfiguredPlanner):
    def __init__(self, dataset_name_or_id: str | int, settings: StudentSettings, plans_name: str = STUDENT_PLANS,
                 gpu_memory_target_in_gb: float = 8, profile_name: str = ""):
        super().__init__(dataset_name_or_id, settings.effective_plan(), settings.training, plans_name,
                         gpu_memory_target_in_gb=gpu_memory_target_in_gb, profile_name=profile_name)
