"""Trainer of the teacher (2D Attention nnU-Net on the tumor subset).

Everything that differs from nnU-Net's trainer comes from the plans written by
`FlareTeacherPlanner` (see `configured_trainer.py`): with the `flare23`
profile, initial learning rate 5e-4, elastic deformation with probability 0.2,
1000 epochs x 250 iterations, SGD Nesterov 0.99, Dice + CE, poly schedule,
deep supervision. The network is built by nnU-Net itself from the plans'
dotted class path (`flare_core.nnunet.attention_unet.AttentionUNet`).
"""
from __future__ import annotations

from flare_core.nnunet.configured_trainer import ConfiguredTrainer


class FlareTeacherTrainer(ConfiguredTrainer):
    """Named separately so results folders read FlareTeacherTrainer__<plans>__2d."""
