"""FLARE23 label vocabulary: class ids, names, groups and evaluation tolerances.

Everything else in the platform refers to classes through these constants, so
the ids of METHOD.md live in exactly one place.
"""
from __future__ import annotations

from typing import Iterable, Mapping

BACKGROUND = 0
LIVER = 1
RIGHT_KIDNEY = 2
SPLEEN = 3
PANCREAS = 4
AORTA = 5
IVC = 6
RIGHT_ADRENAL = 7
LEFT_ADRENAL = 8
GALLBLADDER = 9
ESOPHAGUS = 10
STOMACH = 11
DUODENUM = 12
LEFT_KIDNEY = 13
TUMOR = 14

CLASS_NAMES: Mapping[int, str] = {
    BACKGROUND: "background",
    LIVER: "liver",
    RIGHT_KIDNEY: "right_kidney",
    SPLEEN: "spleen",
    PANCREAS: "pancreas",
    AORTA: "aorta",
    IVC: "ivc",
    RIGHT_ADRENAL: "right_adrenal_gland",
    LEFT_ADRENAL: "left_adrenal_gland",
    GALLBLADDER: "gallbladder",
    ESOPHAGUS: "esophagus",
    STOMACH: "stomach",
    DUODENUM: "duodenum",
    LEFT_KIDNEY: "left_kidney",
    TUMOR: "tumor",
}

ORGANS: tuple[int, ...] = tuple(range(LIVER, LEFT_KIDNEY + 1))
FOREGROUND: tuple[int, ...] = ORGANS + (TUMOR,)
MAX_LABEL = TUMOR

# Thin tubes that the official evaluation scores only inside the ground
# truth's z-range, and that the fastest inference mode treats specially.
TUBULAR: tuple[int, ...] = (AORTA, IVC, ESOPHAGUS)

# Official FLARE23 NSD tolerances in millimetres.
NSD_TOLERANCE_MM: Mapping[int, float] = {
    LIVER: 5.0,
    RIGHT_KIDNEY: 3.0,
    SPLEEN: 3.0,
    PANCREAS: 5.0,
    AORTA: 2.0,
    IVC: 2.0,
    RIGHT_ADRENAL: 2.0,
    LEFT_ADRENAL: 2.0,
    GALLBLADDER: 2.0,
    ESOPHAGUS: 3.0,
    STOMACH: 5.0,
    DUODENUM: 7.0,
    LEFT_KIDNEY: 3.0,
    TUMOR: 2.0,
}

# Label groups: how a training case's annotation is classified.
GROUP_ALL_ORGANS_TUMOR = "all_organs_tumor"
GROUP_ALL_ORGANS = "all_organs"
GROUP_TUMOR_PARTIAL_ORGANS = "tumor_partial_organs"
GROUP_TUMOR_ONLY = "tumor_only"
GROUP_PARTIAL_ORGANS = "partial_organs"
GROUP_EMPTY_LABEL = "empty_label"
GROUP_UNLABELLED = "unlabelled"

LABEL_GROUPS: tuple[str, ...] = (
    GROUP_ALL_ORGANS_TUMOR,
    GROUP_ALL_ORGANS,
    GROUP_TUMOR_PARTIAL_ORGANS,
    GROUP_TUMOR_ONLY,
    GROUP_PARTIAL_ORGANS,
    GROUP_EMPTY_LABEL,
    GROUP_UNLABELLED,
)


def label_group(annotated: Iterable[int] | None) -> str:
    """Classify a case by the classes its partial label annotates.

    `None` means the case has no label file at all (unlabelled); an empty set
    means a label file that annotates nothing.
    """
    if annotated is None:
        return GROUP_UNLABELLED
    classes = set(annotated) - {BACKGROUND}
    has_tumor = TUMOR in classes
    organs = classes - {TUMOR}
    if not classes:
        return GROUP_EMPTY_LABEL
    if organs == set(ORGANS):
        return GROUP_ALL_ORGANS_TUMOR if has_tumor else GROUP_ALL_ORGANS
    if has_tumor:
        return GROUP_TUMOR_PARTIAL_ORGANS if organs else GROUP_TUMOR_ONLY
    return GROUP_PARTIAL_ORGANS


def class_names(ids: Iterable[int]) -> list[str]:
    """Names of the given class ids, in id order."""
    return [CLASS_NAMES[i] for i in sorted(ids)]
