"""How good are the training labels? Pseudo-labels and fused labels scored
against a complete ground truth (available for phantom data only).

Scoring the partial label alone, the organ pseudo-label alone and the fused
labels side by side makes the value of multi-label fusion visible. The
teacher's tumor pseudo-label is also measured as a detector: voxel-wise
precision and recall, and lesion-wise detection (a lesion is a connected
component, 26-connected; a true lesion counts as found when any of its voxels
is marked, a marked component counts as real when it touches a true lesion).
`lesions_by_host` and `false_lesions_by_class` say where detection fails: which
organs' lesions go unfound, and what the false ones really are (the
gallbladder, for a detector that takes dark fluid for a lesion).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import ndimage

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


def class_table(rows: Iterable[Mapping]) -> list[dict]:
    """One row per source and class: mean DSC / NSD over the cases scored."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return []
    means = frame.groupby(["source", "class_id", "class_name"], sort=False).agg(
        dsc=("dsc", "mean"), nsd=("nsd", "mean"), cases=("dsc", "size")).reset_index()
    order = {source: i for i, source in enumerate(SOURCES)}
    means = means.assign(order=means["source"].map(order)).sort_values(["order", "class_id"])
    return [{"source": r.source, "class_id": int(r.class_id), "class_name": r.class_name,
             "dsc": round(float(r.dsc), 4), "nsd": round(float(r.nsd), 4), "cases": int(r.cases)}
            for r in means.itertuples()]


@dataclass(frozen=True)
class TumorDetection:
    """A tumor mask against the true tumors: voxel and lesion counts. Counts
    add up over cases (pooled), and the rates are taken from the sums."""

    true_positive_voxels: int = 0
    false_positive_voxels: int = 0
    false_negative_voxels: int = 0
    true_lesions: int = 0
    true_lesions_found: int = 0
    predicted_lesions: int = 0
    predicted_lesions_real: int = 0  # marked components that touch a true lesion
    cases: int = 1

    @classmethod
    def of(cls, predicted: np.ndarray, truth: np.ndarray) -> "TumorDetection":
        predicted, truth = np.asarray(predicted) != 0, np.asarray(truth) != 0
        if predicted.shape != truth.shape:
            raise ValueError(f"tumor mask shape {predicted.shape} != ground truth shape {truth.shape}")
        both = predicted & truth
        true_found, true_lesions = _components_touched(truth, both)
        predicted_real, predicted_lesions = _components_touched(predicted, both)
        overlap = int(np.count_nonzero(both))
        return cls(overlap, int(np.count_nonzero(predicted)) - overlap, int(np.count_nonzero(truth)) - overlap,
                   true_lesions, true_found, predicted_lesions, predicted_real)

    def __add__(self, other: "TumorDetection") -> "TumorDetection":
        return TumorDetection(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    @property
    def voxel_precision(self) -> float | None:
        return _ratio(self.true_positive_voxels, self.true_positive_voxels + self.false_positive_voxels)

    @property
    def voxel_recall(self) -> float | None:
        return _ratio(self.true_positive_voxels, self.true_positive_voxels + self.false_negative_voxels)

    @property
    def lesion_recall(self) -> float | None:
        return _ratio(self.true_lesions_found, self.true_lesions)

    @property
    def lesion_precision(self) -> float | None:
        return _ratio(self.predicted_lesions_real, self.predicted_lesions)

    def to_dict(self) -> dict:
        """Counts and rates; a rate is None where nothing was there to count
        (precision without any marked voxel, recall without any true tumor)."""
        rates = {name: None if (v := getattr(self, name)) is None else round(v, 4)
                 for name in ("voxel_precision", "voxel_recall", "lesion_recall", "lesion_precision")}
        return {**asdict(self), **rates}

    @classmethod
    def from_dict(cls, record: Mapping) -> "TumorDetection":
        return cls(**{f.name: int(record.get(f.name, f.default)) for f in fields(cls)})


def detect_tumors(case_id: str, ground_truth: Path, geometry: Geometry, tumor_pseudo_label: Path
                  ) -> tuple[TumorDetection, dict]:
    """The tumor pseudo-label (0/1) against the ground truth: the detection
    counts and the `lesion_breakdown` (where lesions are missed, what the false ones are)."""
    truth, _ = read_label(ground_truth, case_id, image_geometry=geometry)
    mask, _ = read_label(Path(tumor_pseudo_label), case_id, image_geometry=geometry)
    return TumorDetection.of(mask, truth == labels.TUMOR), lesion_breakdown(mask, truth)


def pool_detections(records: Iterable[Mapping]) -> TumorDetection | None:
    """The sum of per-case detection counts (`TumorDetection.to_dict` records)."""
    pooled = None
    for record in records:
        one = TumorDetection.from_dict(record)
        pooled = one if pooled is None else pooled + one
    return pooled


def lesions_by_host(predicted: np.ndarray, truth: np.ndarray) -> dict[str, list[int]]:
    """[found, lesions] per host organ of the true lesions in the complete label
    map `truth`; a lesion's host is the organ most of the organ voxels just
    around it belong to (background for a lesion that touches no organ: at a
    coarse grid a lesion can fill its organ's edge and face mostly fat)."""
    marked = np.asarray(predicted) != 0
    components, _ = _lesions(np.asarray(truth) == labels.TUMOR)
    table: dict[str, list[int]] = {}
    for index, lesion in enumerate(ndimage.find_objects(components), start=1):
        window = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in lesion)
        inside = components[window] == index
        shell = ndimage.binary_dilation(inside) & ~inside
        around = np.asarray(truth)[window][shell]
        organs = around[(around != labels.TUMOR) & (around != labels.BACKGROUND)]
        host = _most_common(organs)  # background only for a lesion that touches no organ
        row = table.setdefault(labels.CLASS_NAMES.get(host, str(host)), [0, 0])
        row[0] += int(marked[window][inside].any())
        row[1] += 1
    return dict(sorted(table.items()))


def false_lesions_by_class(predicted: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """Marked components that touch no true lesion, counted by the ground-truth
    class under most of their voxels."""
    truth = np.asarray(truth)
    components, _ = _lesions(np.asarray(predicted) != 0)
    table: dict[str, int] = {}
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        under = truth[box][components[box] == index]
        if not np.any(under == labels.TUMOR):
            name = labels.CLASS_NAMES.get(_most_common(under), "?")
            table[name] = table.get(name, 0) + 1
    return dict(sorted(table.items()))


def lesion_breakdown(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Both tables for one case: {"found_by_host": ..., "false_by_class": ...}."""
    return {"found_by_host": lesions_by_host(predicted, truth),
            "false_by_class": false_lesions_by_class(predicted, truth)}


def pool_breakdowns(records: Iterable[Mapping]) -> dict:
    """The sum of `lesion_breakdown` records over cases."""
    found: dict[str, list[int]] = {}
    false: dict[str, int] = {}
    for record in records:
        for host, (hit, total) in record.get("found_by_host", {}).items():
            row = found.setdefault(host, [0, 0])
            row[0], row[1] = row[0] + int(hit), row[1] + int(total)
        for name, count in record.get("false_by_class", {}).items():
            false[name] = false.get(name, 0) + int(count)
    return {"found_by_host": dict(sorted(found.items())), "false_by_class": dict(sorted(false.items()))}


def breakdown_rows(breakdown: Mapping) -> list[dict]:
    """One row per class that hosts a true lesion or lies under a false one."""
    found, false = breakdown.get("found_by_host", {}), breakdown.get("false_by_class", {})
    return [{"class": name, "true_lesions": found.get(name, [0, 0])[1], "found": found.get(name, [0, 0])[0],
             "false_lesions_on_it": false.get(name, 0)} for name in sorted(set(found) | set(false))]


def _lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))


def _most_common(values: np.ndarray) -> int:
    if values.size == 0:
        return labels.BACKGROUND
    found, counts = np.unique(values, return_counts=True)
    return int(found[np.argmax(counts)])


def _components_touched(mask: np.ndarray, touched: np.ndarray) -> tuple[int, int]:
    """(components of `mask` that contain a `touched` voxel, all components)."""
    components, count = _lesions(mask)
    hit = np.unique(components[touched])
    return int(np.count_nonzero(hit)), int(count)


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None
