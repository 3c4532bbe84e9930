"""Re-export of the FLARE trainers for nnU-Net's lookup by name (see __init__.py)."""
from flare_core.nnunet.student_trainer import FlareStudentTrainer
from flare_core.nnunet.teacher_trainer import FlareTeacherTrainer

__all__ = ["FlareStudentTrainer", "FlareTeacherTrainer"]
