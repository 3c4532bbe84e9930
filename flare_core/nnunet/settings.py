"""Settings of the two nnU-Net models of the method, as plain dataclasses.

A profile (see `profiles.py`) is a set of these values. The planners write
them into nnU-Net's plans JSON and the trainers read them back from there, so
the faithful FLARE23 run and the small CPU demo use the same classes and differ
only in configuration.

Axis order follows nnU-Net's arrays: (z, y, x) for 3D, (y, x) for 2D.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
ATTENTION_UNET = "flare_core.nnunet.attention_unet.AttentionUNet"

# Key of the training settings inside plans["configurations"][cfg].
TRAINING_KEY = "flare_training"

Pair = tuple[float, float]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class PlanSettings:
    """What the planner keeps or overrides after nnU-Net's own planning.

    `None` always means "keep nnU-Net's choice". When `patch_size` is given and
    `kernel_sizes`/`strides` are not, the topology is derived from the patch
    and spacing with nnU-Net's own rule, then cut to `n_stages`.
    """

    configuration: str
    network_class: str = PLAIN_UNET
    spacing: tuple[float, ...] | None = None  # full 3D target spacing (z, y, x)
    patch_size: Shape | None = None
    n_stages: int | None = None
    base_features: int = 32
    max_features: int | None = None
    features_per_stage: Shape | None = None
    kernel_sizes: tuple[Shape, ...] | None = None
    strides: tuple[Shape, ...] | None = None
    n_conv_per_stage: int = 2
    n_conv_per_stage_decoder: int = 2
    batch_size: int | None = None
    # Extra keyword arguments of the network class (plain JSON values).
    extra_arch_kwargs: Mapping[str, Any] = field(default_factory=dict)


_FOCUS_KEYS = ("focus_class", "focus_share", "focus_per_lesion")


@dataclass(frozen=True)
class TrainingSettings:
    """What the trainer reads from the plans; nnU-Net defaults unless noted."""

    num_epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    initial_lr: float = 1e-2
    weight_decay: float = 3e-5
    momentum: float = 0.99
    nesterov: bool = True
    oversample_foreground: float = 0.33
    # Of those foreground patches, this share is centred on `focus_class`
    # whenever the case holds it (nnU-Net picks a present class uniformly:
    # about 1 in 14 for the tumor). See focused_sampling.py.
    focus_class: int | None = None
    focus_share: float = 0.0
    # ... on one of the case's lesions (connected regions) drawn uniformly,
    # not on a voxel: otherwise a large liver lesion takes nearly every draw.
    focus_per_lesion: bool = False
    mirroring: bool = True
    deep_supervision: bool = True
    # "sgd": nnU-Net's SGD with Nesterov momentum; "adamw": AdamW (momentum
    # unused), which finds every class within a few hundred iterations where
    # SGD finds only the largest (see profiles.CPU).
    optimizer: str = "sgd"
    # Cross-entropy class weights w_c ~ frequency_c ** -power (0 = nnU-Net's
    # unweighted CE). Unweighted, a class's share of the CE gradient is its
    # share of the voxels, so small organs are learned one after another in
    # order of size; 0.5 lets them all start together.
    ce_class_weight_power: float = 0.0
    # Lower that power linearly to 0 over the epochs, so that the last epochs
    # train on nnU-Net's plain cross-entropy. Weighted CE moves every decision
    # boundary towards the rarer class: a net that ends weighted over-segments
    # small organs and marks stray tumor voxels, and under FLARE's rules one
    # stray tumor voxel in a tumor-free case scores that case 0.
    ce_class_weight_anneal: bool = False
    # Train in bfloat16 autocast on CPUs with native bfloat16 (AVX-512 BF16 or
    # AMX): about half the seconds per iteration. Ignored on other devices,
    # where nnU-Net's own mixed precision applies.
    cpu_bfloat16: bool = False
    # Elastic deformation in the spirit of nnU-Net v1 (alpha 0..900, sigma
    # 9..13 px): smoothing width and largest displacement, both in pixels.
    elastic_probability: float = 0.0
    elastic_sigma_px: Pair = (9.0, 13.0)
    elastic_magnitude_px: Pair = (0.0, 30.0)
    # nnU-Net writes checkpoint_latest.pth every `save_every` epochs; resuming
    # an interrupted run restarts from there.
    save_every: int = 50
    # progress.png is a large matplotlib figure; drawing it every epoch costs
    # more than a whole tiny epoch on a CPU.
    plot_every: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The plans block. Focused sampling is left out while it is off, so the
        plans - and with them the identity of a model trained before the
        setting existed - stay as they were."""
        values = _jsonable(asdict(self))
        if self.focus_class is None:
            for key in _FOCUS_KEYS:
                values.pop(key)
        return values

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "TrainingSettings":
        """Settings from a plans block; unknown keys are ignored, missing ones default."""
        known = {f.name for f in fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (data or {}).items() if k in known}
        return cls(**values)


@dataclass(frozen=True)
class AttentionSettings:
    """Decoder attention of the teacher (see attention_unet.py)."""

    gated_skips: int | None = 3  # deepest skips with a grid attention gate; None = all
    channel_attention: bool = True
    channel_reduction: int = 4
    non_local: bool = True

    def arch_kwargs(self) -> dict[str, Any]:
        return {
            "gated_skips": self.gated_skips,
            "channel_attention": self.channel_attention,
            "channel_reduction": self.channel_reduction,
            "non_local": self.non_local,
        }


@dataclass(frozen=True)
class TeacherSettings:
    """The 2D Attention nnU-Net that makes tumor pseudo-labels (METHOD.md step 1)."""

    plan: PlanSettings
    training: TrainingSettings
    attention: AttentionSettings = AttentionSettings()
    role: str = "teacher"

    def effective_plan(self) -> PlanSettings:
        """Plan settings with the attention options merged into the network kwargs."""
        extra = {**self.attention.arch_kwargs(), **dict(self.plan.extra_arch_kwargs)}
        return replace(self.plan, extra_arch_kwargs=extra)


@dataclass(frozen=True)
class StudentSettings:
    """The small 3D nnU-Net trained on the organ-fused labels (METHOD.md step 4)."""

    plan: PlanSettings
    training: TrainingSettings
    role: str = "student"

    def effective_plan(self) -> PlanSettings:
        return self.plan


def with_training(settings: TeacherSettings | StudentSettings, **changes: Any) -> TeacherSettings | StudentSettings:
    """Copy of `settings` with some training values replaced (None values are ignored)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    return replace(settings, training=replace(settings.training, **changes)) if changes else settings


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
