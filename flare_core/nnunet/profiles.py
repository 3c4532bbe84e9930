"""Run profiles: the faithful FLARE23 values, a CPU demo, and unit-test sizes.

`flare23` reproduces METHOD.md (teacher: 2D Attention nnU-Net, base 32,
batch 4, lr 5e-4, elastic deformation, 1000 x 250; student: the FLARE22 small
nnU-Net, 1500 x 250). `cpu` keeps every mechanism but shrinks networks and
training so the whole pipeline runs on a 2-core CPU in minutes on the tiny
phantom data. `test` is smaller still, for unit tests that must take seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from flare_core.nnunet.settings import (
    ATTENTION_UNET,
    PLAIN_UNET,
    AttentionSettings,
    PlanSettings,
    StudentSettings,
    TeacherSettings,
    TrainingSettings,
)

__all__ = ["RunProfile", "PROFILES", "get_profile", "profile_names", "TeacherSettings", "StudentSettings"]


@dataclass(frozen=True)
class RunProfile:
    name: str
    teacher: TeacherSettings
    student: StudentSettings
    device: str  # "auto", "cpu" or "cuda" (see environment.select_device)


# v1 nnU-Net applied elastic deformation with probability 0.2 when it was on.
_ELASTIC_P = 0.2

FLARE23 = RunProfile(
    name="flare23",
    teacher=TeacherSettings(
        plan=PlanSettings(configuration="2d", network_class=ATTENTION_UNET, base_features=32, batch_size=4),
        training=TrainingSettings(num_epochs=1000, iterations_per_epoch=250, initial_lr=5e-4,
                                  elastic_probability=_ELASTIC_P),
        attention=AttentionSettings(gated_skips=3, channel_attention=True, non_local=True),
    ),
    student=StudentSettings(
        plan=PlanSettings(
            configuration="3d_fullres",
            network_class=PLAIN_UNET,
            spacing=(4.0, 1.2, 1.2),
            patch_size=(32, 128, 192),
            features_per_stage=(16, 32, 64, 128, 256),
            kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
            strides=((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)),
            n_conv_per_stage=2,
            n_conv_per_stage_decoder=2,
            batch_size=2,
        ),
        training=TrainingSettings(num_epochs=1500, iterations_per_epoch=250, initial_lr=1e-2, weight_decay=3e-5,
                                  momentum=0.99, nesterov=True, mirroring=False, elastic_probability=_ELASTIC_P),
    ),
    device="auto",
)

# Small elastic fields for small patches: same idea, scaled to 64-pixel patches.
_SMALL_ELASTIC = dict(elastic_probability=_ELASTIC_P, elastic_sigma_px=(2.0, 3.0), elastic_magnitude_px=(0.0, 4.0))

CPU = RunProfile(
    name="cpu",
    teacher=TeacherSettings(
        plan=PlanSettings(configuration="2d", network_class=ATTENTION_UNET, base_features=8, max_features=64,
                          n_stages=4, batch_size=4),
        # The phantom's small, low-contrast lesions leave a 2D network at "all
        # background" for hundreds of iterations. Measured on 5 tiny tumor
        # cases (2 cores, 1 thread): lr 5e-4 or 1e-2 with nnU-Net's 33 %
        # foreground oversampling never left it within 900 iterations; lr
        # 3e-2 with every patch centred on a tumor started learning after
        # ~400 iterations and reached held-out Dice 0.2-0.5 at 900 (~110 s).
        training=TrainingSettings(num_epochs=60, iterations_per_epoch=15, val_iterations_per_epoch=3,
                                  initial_lr=3e-2, oversample_foreground=1.0, save_every=10, plot_every=20,
                                  **_SMALL_ELASTIC),
        attention=AttentionSettings(gated_skips=3, channel_attention=True, non_local=True),
    ),
    student=StudentSettings(
        # A patch of about half the tiny volume and four thin stages: ~0.25 s per
        # iteration on one CPU thread.
        plan=PlanSettings(configuration="3d_fullres", network_class=PLAIN_UNET, patch_size=(32, 48, 48),
                          features_per_stage=(8, 16, 32, 64), n_conv_per_stage=1, n_conv_per_stage_decoder=1,
                          batch_size=2),
        # 1500 iterations (~7 min on 2 cores): 180 learned nothing; at ~600 the
        # pseudo-Dice (mean over 14 classes) was still rising through 0.1.
        training=TrainingSettings(num_epochs=60, iterations_per_epoch=25, val_iterations_per_epoch=2,
                                  initial_lr=3e-2, mirroring=False, save_every=5, plot_every=15, **_SMALL_ELASTIC),
    ),
    device="cpu",
)

TEST = RunProfile(
    name="test",
    teacher=replace(
        CPU.teacher,
        plan=replace(CPU.teacher.plan, base_features=4, max_features=16, n_stages=3, n_conv_per_stage=1,
                     n_conv_per_stage_decoder=1),
        training=TrainingSettings(num_epochs=2, iterations_per_epoch=4, val_iterations_per_epoch=1,
                                  initial_lr=1e-2, save_every=1, plot_every=1000, **_SMALL_ELASTIC),
    ),
    student=replace(
        CPU.student,
        plan=replace(CPU.student.plan, patch_size=(16, 32, 32), features_per_stage=(4, 8, 16),
                     n_conv_per_stage=1, n_conv_per_stage_decoder=1),
        training=replace(CPU.student.training, num_epochs=2, iterations_per_epoch=2, val_iterations_per_epoch=1,
                         save_every=1, plot_every=1000),
    ),
    device="cpu",
)

PROFILES: dict[str, RunProfile] = {p.name: p for p in (FLARE23, CPU, TEST)}


def profile_names() -> list[str]:
    return sorted(PROFILES)


def get_profile(name: str, *, epochs: int | None = None, iterations: int | None = None,
                val_iterations: int | None = None) -> RunProfile:
    """The named profile, optionally with shorter (or longer) training for both models."""
    if name not in PROFILES:
        raise ValueError(f"unknown run profile {name!r}; valid profiles: {', '.join(profile_names())}")
    profile = PROFILES[name]
    changes = {k: v for k, v in (("num_epochs", epochs), ("iterations_per_epoch", iterations),
                                 ("val_iterations_per_epoch", val_iterations)) if v is not None}
    if not changes:
        return profile
    return replace(
        profile,
        teacher=replace(profile.teacher, training=replace(profile.teacher.training, **changes)),
        student=replace(profile.student, training=replace(profile.student.training, **changes)),
    )
