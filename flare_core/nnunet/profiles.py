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
    with_training,
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
        # The phantom's lesions are small and low-contrast. With nnU-Net's SGD
        # and unweighted cross-entropy a 2D network stayed at "all background"
        # for 900 iterations unless every patch was centred on a tumor (which
        # then taught it false positives on tumor-free slices). AdamW with
        # class-weighted CE (see the student below) learns with nnU-Net's own
        # sampling: a third of the patches centred on a tumor, the rest random.
        training=TrainingSettings(num_epochs=60, iterations_per_epoch=15, val_iterations_per_epoch=3,
                                  optimizer="adamw", initial_lr=3e-3, ce_class_weight_power=0.5, cpu_bfloat16=True,
                                  oversample_foreground=0.33, save_every=10, plot_every=20, **_SMALL_ELASTIC),
        attention=AttentionSettings(gated_skips=3, channel_attention=True, non_local=True),
    ),
    student=StudentSettings(
        # Four stages of 16..128 features with two convolutions each; the patch
        # covers the whole 6 mm phantom, and most of the demo's ~4 mm one.
        # ~1.2 s per iteration on 2 cores in float32, ~0.65 s in bfloat16 autocast.
        plan=PlanSettings(configuration="3d_fullres", network_class=PLAIN_UNET, patch_size=(40, 64, 64),
                          features_per_stage=(16, 32, 64, 128), n_conv_per_stage=2, n_conv_per_stage_decoder=2,
                          batch_size=2),
        # Measured on 24 tiny phantom cases (complete labels), 6 held out, 2 cores:
        # with nnU-Net's SGD (lr 1e-2, momentum 0.99) and unweighted CE, this
        # trainer and the stock nnUNetTrainer alike stayed at pseudo-Dice 0 for
        # every class through 150 iterations (1,000 found only the liver). A
        # class's share of the CE gradient is its share of the voxels, and once
        # background dominates the softmax the Dice gradient of a small class
        # vanishes with its probability: organs are learned one by one, by size.
        # AdamW (lr 3e-3) alone: liver and stomach after 175 iterations. AdamW and
        # CE weights ~ frequency^-0.5: 12 of 13 organs learning after 100
        # iterations, held-out organ DSC 0.66 after 300 (0.65 in bfloat16, 1.9x
        # faster). In the whole demo on the 6 mm phantom, 1,400 iterations gave
        # held-out organ DSC 0.78; on the demo's ~4 mm phantom 1,200 gave 0.85
        # (bench/bench_method.py). Annealing the class weights to plain CE by the
        # last epoch: held-out organ DSC 0.867 vs 0.851 (4 cases) and 0.865 vs
        # 0.849 (6 other cases), same data and iterations. Elastic deformation is
        # off: the small fields' 4 px reach 16-24 mm here, a thin organ's width.
        # 60 epochs rather than 48 (the student underfits: its training
        # pseudo-Dice equals its held-out DSC): held-out organ DSC 0.871 vs
        # 0.864 on 16 cases, 0.873 vs 0.867 on a 24-case training set's fused
        # labels; demo 14.2 min on a quiet 2-core machine.
        training=TrainingSettings(num_epochs=60, iterations_per_epoch=25, val_iterations_per_epoch=2,
                                  optimizer="adamw", initial_lr=3e-3, ce_class_weight_power=0.5,
                                  ce_class_weight_anneal=True, cpu_bfloat16=True, mirroring=False, save_every=4,
                                  plot_every=24),
    ),
    device="cpu",
)

TEST = RunProfile(
    name="test",
    teacher=replace(
        CPU.teacher,
        plan=replace(CPU.teacher.plan, base_features=4, max_features=16, n_stages=3, n_conv_per_stage=1,
                     n_conv_per_stage_decoder=1),
        # nnU-Net's SGD: on the tests' bright spheres it learns in 80 iterations (held-out Dice ~0.86),
        # where the cpu profile's AdamW 3e-3 reached 0.30.
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
                val_iterations: int | None = None, teacher_epochs: int | None = None,
                student_epochs: int | None = None) -> RunProfile:
    """The named profile, optionally with shorter (or longer) training.

    `epochs`, `iterations` and `val_iterations` apply to both models;
    `teacher_epochs` / `student_epochs` set one model's epochs (over `epochs`).
    """
    if name not in PROFILES:
        raise ValueError(f"unknown run profile {name!r}; valid profiles: {', '.join(profile_names())}")
    for label, value in (("epochs", epochs), ("iterations", iterations), ("val_iterations", val_iterations),
                         ("teacher_epochs", teacher_epochs), ("student_epochs", student_epochs)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{label} must be a whole number of at least 1, got {value!r}")
    profile = PROFILES[name]
    teacher = with_training(profile.teacher, num_epochs=teacher_epochs if teacher_epochs is not None else epochs,
                            iterations_per_epoch=iterations, val_iterations_per_epoch=val_iterations)
    student = with_training(profile.student, num_epochs=student_epochs if student_epochs is not None else epochs,
                            iterations_per_epoch=iterations, val_iterations_per_epoch=val_iterations)
    if teacher is profile.teacher and student is profile.student:
        return profile
    return replace(profile, teacher=teacher, student=student)
