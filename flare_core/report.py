"""Did the method work? Its results as a short text table, read from the
outputs already written under the work root (never recomputed):

- `manifests/evaluation_summary.json`: the student's predictions of the
  inference cases, per class (DSC / NSD by the FLARE23 rules);
- `manifests/label_quality_summary.json`: the training labels against a
  complete ground truth (phantom data): the organ pseudo-label alone and the
  two fused labels per class, and the tumor pseudo-labels as a detector.

Side by side they show whether fusion made better training labels than either
source alone, and how close the student's predictions come to them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from flare_core import labels
from flare_core import label_quality as lq
from flare_core.layout import WorkLayout

STUDENT = "student"
# The label sources shown, by their label_quality name, with a column title.
LABEL_COLUMNS = {lq.ORGAN_PSEUDO_ONLY: "organ pseudo", lq.PARTIAL_FUSED: "partial-fused",
                 lq.ORGAN_FUSED: "organ-fused"}
SUMMARY_ROWS = {"organs mean": "organ", "tumor": "tumor", "all": "all"}  # row -> label_quality prefix
NAME_WIDTH, CELL_WIDTH = 20, 15

Cell = tuple[float | None, float | None]  # (DSC, NSD)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def results_lines(work: WorkLayout) -> list[str]:
    """The results block: per-class table, tumor pseudo-label detection, and a
    one-line reading of fusion and of the student."""
    evaluation = read_json(work.manifests / "evaluation_summary.json")
    quality = read_json(work.manifests / "label_quality_summary.json")
    columns = _columns(evaluation, quality)
    lines = []
    if columns:
        lines += _table(columns)
        lines.append(_scope(evaluation, quality))
    if not evaluation:
        lines.append("student: not evaluated (no inference case with ground truth)")
    if not quality or not quality.get("cases"):
        lines.append("training labels: not scored (no complete ground truth; phantom data has one)")
    elif "by_class" not in quality:
        lines.append("training labels: scored before per-class scores and tumor detection existed; "
                     "materialize label_quality again to see them")
    detection = (quality or {}).get("tumor_detection")
    if detection:
        pseudo = next((r for r in quality.get("by_source", []) if r["source"] == lq.TUMOR_PSEUDO), {})
        lines += tumor_detection_lines(detection, pseudo.get("tumor_dsc"))
        lines += lesion_breakdown_lines((quality or {}).get("lesion_breakdown"))
    lines += _reading(columns, detection)
    return lines


def tumor_detection_lines(detection: Mapping, dsc: float | None = None) -> list[str]:
    """Voxel and lesion precision / recall of the teacher's tumor pseudo-labels
    (and their mean tumor DSC, when given)."""
    def rate(name: str) -> str:
        value = detection.get(name)
        return "-" if value is None else f"{value:.2f}"

    dice = f"; mean DSC {dsc:.2f}" if dsc is not None else ""
    return [
        f"tumor pseudo-labels ({detection.get('cases', '?')} cases): voxel precision {rate('voxel_precision')}, "
        f"recall {rate('voxel_recall')}{dice}",
        f"  lesions: {detection['true_lesions_found']} of {detection['true_lesions']} found (recall "
        f"{rate('lesion_recall')}), {detection['predicted_lesions_real']} of {detection['predicted_lesions']} "
        f"marked are real (precision {rate('lesion_precision')})",
    ]


FALSE_CLASSES_SHOWN = 3


def lesion_breakdown_lines(breakdown: Mapping | None) -> list[str]:
    """Where the tumor pseudo-labels miss lesions (by host organ) and what their false lesions really are."""
    if not breakdown:
        return []
    found = ", ".join(f"{host} {hit} of {total}" for host, (hit, total) in breakdown.get("found_by_host", {}).items())
    ranked = sorted(breakdown.get("false_by_class", {}).items(), key=lambda item: -item[1])
    false = ", ".join(f"{name} {count}" for name, count in ranked[:FALSE_CLASSES_SHOWN])
    if len(ranked) > FALSE_CLASSES_SHOWN:
        rest = ranked[FALSE_CLASSES_SHOWN:]
        false += f", {sum(count for _, count in rest)} on {len(rest)} more classes"
    return [f"  found by organ: {found or 'no true lesion'}", f"  false lesions on: {false or 'none'}"]


def _columns(evaluation: dict | None, quality: dict | None) -> dict[str, dict[str, Cell]]:
    """Column title -> {row name -> (DSC, NSD)}, for the columns that exist."""
    columns: dict[str, dict[str, Cell]] = {}
    if evaluation and evaluation.get("summary"):
        columns[STUDENT] = {r["row"]: (r.get("dsc"), r.get("nsd")) for r in evaluation["summary"]}
    if quality and quality.get("cases"):
        by_class = quality.get("by_class", [])
        by_source = {r["source"]: r for r in quality.get("by_source", [])}
        for source, title in LABEL_COLUMNS.items():
            cells = {r["class_name"]: (r["dsc"], r["nsd"]) for r in by_class if r["source"] == source}
            summary = by_source.get(source, {})
            for row, prefix in SUMMARY_ROWS.items():
                if summary.get(f"{prefix}_dsc") is not None:
                    cells[row] = (summary[f"{prefix}_dsc"], summary[f"{prefix}_nsd"])
            if cells:
                columns[title] = cells
    return columns


def _table(columns: Mapping[str, Mapping[str, Cell]]) -> list[str]:
    """The 13 organs, a rule, then organs mean, tumor and all (FLARE's order)."""
    rows = [labels.CLASS_NAMES[c] for c in labels.ORGANS] + list(SUMMARY_ROWS)
    head = "DSC / NSD".ljust(NAME_WIDTH) + "".join(title.ljust(CELL_WIDTH) for title in columns)
    lines = [head.rstrip()]
    for row in rows:
        if row == "organs mean":
            lines.append("-" * (NAME_WIDTH + CELL_WIDTH * len(columns) - 4))
        cells = "".join(_cell(column.get(row)).ljust(CELL_WIDTH) for column in columns.values())
        lines.append((row.ljust(NAME_WIDTH) + cells).rstrip())
    return lines


def _cell(cell: Cell | None) -> str:
    if cell is None or cell[0] is None:
        return "-"
    dsc, nsd = cell
    return f"{dsc:.2f}/{nsd:.2f}" if nsd is not None else f"{dsc:.2f}/-"


def _scope(evaluation: dict | None, quality: dict | None) -> str:
    parts = []
    if evaluation and evaluation.get("summary"):
        parts.append(f"student: predictions of {len(evaluation.get('cases', []))} inference cases")
    if quality and quality.get("cases"):
        parts.append(f"labels: {len(quality['cases'])} training cases vs complete ground truth")
    return "(" + "; ".join(parts) + ")"


def _reading(columns: Mapping[str, Mapping[str, Cell]], detection: Mapping | None) -> list[str]:
    """Fusion and distillation in a line each, from the table's organ means."""
    def organ_dsc(title: str) -> float | None:
        cell = columns.get(title, {}).get("organs mean")
        return cell[0] if cell else None

    fused, pseudo, partial = (organ_dsc(LABEL_COLUMNS[s]) for s in (lq.ORGAN_FUSED, lq.ORGAN_PSEUDO_ONLY,
                                                                  lq.PARTIAL_FUSED))
    lines = []
    if fused is not None and pseudo is not None and partial is not None:
        paid_off = fused >= max(pseudo, partial)
        lines.append(f"fusion {'paid off' if paid_off else 'did not pay off'}: organ DSC {fused:.3f} organ-fused, "
                     f"{pseudo:.3f} organ pseudo-label, {partial:.3f} partial-fused")
        precision = (detection or {}).get("voxel_precision")
        if not paid_off and precision is not None and precision < 0.5:
            lines.append(f"  (the tumor pseudo-labels, voxel precision {precision:.2f}, take organ voxels: "
                         "tumor wins in fusion)")
    student = organ_dsc(STUDENT)
    if student is not None:
        tumor = columns[STUDENT].get("tumor")
        tumor_text = f", tumor DSC {tumor[0]:.2f}" if tumor and tumor[0] is not None else ""
        against = f" (its organ-fused training labels: {fused:.2f})" if fused is not None else ""
        lines.append(f"student: organ DSC {student:.2f}{tumor_text}{against}")
    return lines
