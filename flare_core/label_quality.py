"""How good are the training labels? Pseudo-labels and fused labels scored
against a complete ground truth (available for phantom data only).

Scoring the partial label alone, the organ pseudo-label alone and the fused
labels side by side makes the value of multi-label fusion visible.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from flare_core import labels
from flare_core.io import Geometry, read_label
from flare_core.metrics import evaluate_case, summarize

TUMOR_PSEUDO = "tumor_pseudo_label"
PARTIAL_ONLY = "partial_label_only"
ORGAN_PSEUDO_ONLY = "organ_pseudo_label_only"
PARTIAL_FUSED = "partial_fused_label"
ORGAN_FUSED = "organ_fused_label"
SOURCES = (TUMOR_PSEUDO, PARTIAL_ONLY, ORGAN_PSEUDO_ONLY, PARTIAL_FUSED, ORGAN_FUSED)


def score_sources(case_id: str, ground_truth: Path, geometry: Geometry,
                  sources: Mapping[str, Path | None]) -> list[dict]:
    """Per-class DSC / NSD rows (source, class_id, class_name, dsc, nsd) of every
    label source that exists; a missing source (None) is left out. A tumor
    pseudo-label (0/1 mask) is scored on the tumor class only."""
    truth, _ = read_label(ground_truth, case_id, image_geometry=geometry)
    rows = []
    for source, path in sources.items():
        if path is None:
            continue
        label, _ = read_label(Path(path), case_id, image_geometry=geometry)
        classes: Iterable[int] = labels.FOREGROUND
        if source == TUMOR_PSEUDO:
            label = np.where(label > 0, labels.TUMOR, 0).astype(np.uint8)
            classes = (labels.TUMOR,)
        for score in evaluate_case(label, truth, geometry.spacing_zyx, classes):
            rows.append({"source": source, "class_id": score.class_id, "class_name": score.class_name,
                         "dsc": score.dsc, "nsd": score.nsd})
    return rows


def source_table(rows: Iterable[Mapping]) -> list[dict]:
    """One row per source: mean organ, tumor and all-class DSC / NSD."""
    frame = pd.DataFrame(list(rows))
    table = []
    for source in SOURCES:
        part = frame[frame["source"] == source] if not frame.empty else frame
        if part.empty:
            continue
        summary = summarize(part.to_dict("records"))
        table.append({"source": source, **_pick(summary, "organs mean", "organ"), **_pick(summary, "tumor", "tumor"),
                      **_pick(summary, "all", "all")})
    return table


def _pick(summary: pd.DataFrame, row: str, prefix: str) -> dict:
    if row not in summary.index or pd.isna(summary.loc[row, "dsc"]):
        return {f"{prefix}_dsc": None, f"{prefix}_nsd": None}
    return {f"{prefix}_dsc": round(float(summary.loc[row, "dsc"]), 4),
            f"{prefix}_nsd": round(float(summary.loc[row, "nsd"]), 4)}
