"""Planner of the teacher: nnU-Net's 2D configuration with the Attention U-Net.

Differences from default nnU-Net 2D planning (METHOD.md step 1) come from
`TeacherSettings`: the network class (`AttentionUNet` with its attention
options in `arch_kwargs`), base features, batch size, and, in small profiles,
fewer stages and features. Only the 2d configuration is kept in the plans.
"""
from __future__ import annotations

from flare_core.nnunet.configured_planner import ConfiguredPlanner
from flare_core.nnunet.settings import TeacherSettings

TEACHER_PLANS = "FlareTeacherPlans"


class FlareTeacherPlanner(ConfiguredPlanner):
    def __init__(self, dataset_name_or_id: str | int, settings: TeacherSettings, plans_name: str = TEACHER_PLANS,
                 gpu_memory_target_in_gb: float = 8, profile_name: str = ""):
        super().__init__(dataset_name_or_id, settings.effective_plan(), settings.training, plans_name,
                         gpu_memory_target_in_gb=gpu_memory_target_in_gb, profile_name=profile_name)
