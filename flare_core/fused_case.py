"""Fusing one case from its files and verifying the result (step 3 per case).

Reads the partial label, tumor pseudo-label and organ pseudo-label against the
image's geometry, fuses them in one pass, and runs the verifiers that the
orchestration layer reports as asset checks. `fuse_and_verify` is the one
entry point from files; `fusion` works on arrays only.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from flare_core.fusion import (
    FusionError, SourceAccount, check_agrees_with_annotation, check_organ_fused, fused_labels, value_problems,
)
from flare_core.io import CaseError, Geometry, read_geometry, read_label

log = logging.getLogger(__name__)

# Check names shared with the asset checks of both fused assets.
CHECK_VALUES = "values_in_range"
CHECK_AGREES = "agrees_with_annotation"
CHECK_TUMOR_KEPT = "annotated_tumor_kept"
CHECK_ORGAN_RULES = "keeps_partial_fused"
CHECK_GEOMETRY = "geometry_matches_image"
PARTIAL_CHECKS = (CHECK_VALUES, CHECK_GEOMETRY, CHECK_AGREES, CHECK_TUMOR_KEPT)
ORGAN_CHECKS = (CHECK_VALUES, CHECK_GEOMETRY, CHECK_AGREES, CHECK_ORGAN_RULES)


@dataclass
class FusedCase:
    partial_fused: np.ndarray
    organ_fused: np.ndarray
    accounts: dict[str, SourceAccount]
    problems: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # output -> check -> problems


def fuse_and_verify(case_id: str, geometry: Geometry, partial_path: Path | None, tumor_pseudo_path: Path | None,
                    organ_pseudo_path: Path | None, annotated: Iterable[int] | None) -> FusedCase:
    """Fuse a case's label files (None: the case has no such file) and verify the result.

    Any problem with the inputs (a missing file, a geometry other than the
    image's, values outside 0..14, a tumor mask that is not binary, classes
    present that the case does not annotate) raises `CaseError` naming the
    case; nothing is resampled. Problems of the fused labels are returned in
    `FusedCase.problems`, by output and check name.
    """
    partial = _read(partial_path, case_id, geometry, "partial label")
    tumor = _read(tumor_pseudo_path, case_id, geometry, "tumor pseudo-label")
    organ = _read(organ_pseudo_path, case_id, geometry, "organ pseudo-label")
    try:
        first, second = fused_labels(partial, annotated, tumor, organ, shape=geometry.shape_zyx)
    except FusionError as error:
        raise CaseError(case_id, str(error)) from None
    log.info("case %s fused: %s", case_id, second.account.totals())
    fused = FusedCase(first.label, second.label, {"partial_fused": first.account, "organ_fused": second.account})
    fused.problems = {
        "partial_fused": _partial_problems(first.label, partial, annotated),
        "organ_fused": _organ_problems(second.label, first.label, partial, annotated),
    }
    return fused


def written_geometry_problems(path: Path, case_id: str, image_geometry: Geometry) -> list[str]:
    """Compare a written output's header with its image: the check that the
    file on disk, not just the array, carries the image's exact geometry."""
    return image_geometry.differences(read_geometry(path, case_id))


def _read(path: Path | None, case_id: str, geometry: Geometry, role: str) -> np.ndarray | None:
    if path is None:
        return None
    if not Path(path).exists():
        raise CaseError(case_id, f"{role} {Path(path).name} does not exist")
    return read_label(Path(path), case_id, image_geometry=geometry)[0]


def _partial_problems(fused: np.ndarray, partial: np.ndarray | None, annotated) -> dict[str, list[str]]:
    agreement = check_agrees_with_annotation(fused, partial, annotated)
    return {
        CHECK_VALUES: value_problems(fused, "partial-fused label"),
        CHECK_AGREES: [p for p in agreement if "annotated tumor" not in p],
        CHECK_TUMOR_KEPT: [p for p in agreement if "annotated tumor" in p],
    }


def _organ_problems(organ: np.ndarray, partial_fused: np.ndarray, partial: np.ndarray | None,
                    annotated) -> dict[str, list[str]]:
    return {
        CHECK_VALUES: value_problems(organ, "organ-fused label"),
        CHECK_AGREES: check_agrees_with_annotation(organ, partial, annotated),
        CHECK_ORGAN_RULES: check_organ_fused(organ, partial_fused, annotated),
    }
