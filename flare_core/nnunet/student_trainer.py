"""Trainer of the student (the FLARE22 small 3D nnU-Net on organ-fused labels).

Settings come from the plans written by `FlareStudentPlanner` (see
`configured_trainer.py`): with the `flare23` profile, 1500 epochs x 250
iterations, SGD lr 0.01 Nesterov momentum 0.99, weight decay 3e-5, poly
schedule, deep supervision, no mirroring (neither in training nor as
test-time augmentation: `inference_allowed_mirroring_axes` is None in the
checkpoint) and elastic deformation with probability 0.2.
"""
from __future__ import annotations

from flare_core.nnunet.configured_trainer import ConfiguredTrainer


class FlareStudentTrainer(ConfiguredTrainer):
    """Named separately so results folders read FlareStudentTrainer__<plans>__3d_fullres."""
