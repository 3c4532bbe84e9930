"""The demo's results block is read from the summaries under the work root."""
import json
import re

from flare_core import label_quality as lq
from flare_core.layout import WorkLayout
from flare_core.report import lesion_breakdown_lines, results_lines


def write(work, name, record):
    work.manifests.mkdir(parents=True, exist_ok=True)
    (work.manifests / name).write_text(json.dumps(record))


def evaluation_summary():
    rows = [{"row": "liver", "class_id": 1, "dsc": 0.91, "nsd": 0.95, "count": 3},
            {"row": "spleen", "class_id": 3, "dsc": 0.5, "nsd": 0.25, "count": 3},
            {"row": "organs mean", "class_id": None, "dsc": 0.7, "nsd": 0.6, "count": 13},
            {"row": "tumor", "class_id": 14, "dsc": 0.3, "nsd": 0.2, "count": 3},
            {"row": "all", "class_id": None, "dsc": 0.68, "nsd": 0.57, "count": 14}]
    return {"cases": ["a", "b", "c"], "summary": rows}


def label_quality_summary():
    def source(name, organ, tumor):
        return {"source": name, "organ_dsc": organ, "organ_nsd": organ, "tumor_dsc": tumor, "tumor_nsd": tumor,
                "all_dsc": organ, "all_nsd": organ}

    by_class = [{"source": lq.ORGAN_FUSED, "class_id": 1, "class_name": "liver", "dsc": 0.97, "nsd": 0.99,
                 "cases": 4},
                {"source": lq.ORGAN_PSEUDO_ONLY, "class_id": 1, "class_name": "liver", "dsc": 0.88, "nsd": 0.9,
                 "cases": 4}]
    detection = lq.TumorDetection(true_positive_voxels=6, false_positive_voxels=2, false_negative_voxels=4,
                                  true_lesions=5, true_lesions_found=4, predicted_lesions=4,
                                  predicted_lesions_real=3, cases=2).to_dict()
    return {"cases": ["t1", "t2", "t3", "t4"], "skipped": [], "by_class": by_class,
            "by_source": [source(lq.TUMOR_PSEUDO, None, 0.4), source(lq.ORGAN_PSEUDO_ONLY, 0.8, 0.1),
                          source(lq.PARTIAL_FUSED, 0.45, 0.6), source(lq.ORGAN_FUSED, 0.93, 0.6)],
            "tumor_detection": detection,
            "lesion_breakdown": {"found_by_host": {"liver": [3, 3], "pancreas": [1, 2]},
                                 "false_by_class": {"background": 1, "gallbladder": 2}}}


def test_table_has_a_row_per_class_and_a_column_per_label_source(tmp_path):
    work = WorkLayout(tmp_path)
    write(work, "evaluation_summary.json", evaluation_summary())
    write(work, "label_quality_summary.json", label_quality_summary())
    lines = results_lines(work)
    text = "\n".join(lines)
    assert lines[0].split() == ["DSC", "/", "NSD", "student", "organ", "pseudo", "partial-fused", "organ-fused"]
    liver = next(line for line in lines if line.startswith("liver"))
    assert liver.split() == ["liver", "0.91/0.95", "0.88/0.90", "-", "0.97/0.99"]
    organs = next(line for line in lines if line.startswith("organs mean"))
    assert organs.split()[2:] == ["0.70/0.60", "0.80/0.80", "0.45/0.45", "0.93/0.93"]
    assert sum(bool(re.match(r"tumor +\d", line)) for line in lines) == 1  # the summary row, not twice
    assert "3 inference cases" in text and "4 training cases" in text
    assert "tumor pseudo-labels (2 cases): voxel precision 0.75, recall 0.60; mean DSC 0.40" in text
    assert "lesions: 4 of 5 found (recall 0.80), 3 of 4 marked are real (precision 0.75)" in text
    assert "found by organ: liver 3 of 3, pancreas 1 of 2" in text
    assert "false lesions on: gallbladder 2, background 1" in text
    assert "fusion paid off: organ DSC 0.930 organ-fused, 0.800 organ pseudo-label, 0.450 partial-fused" in text
    assert "student: organ DSC 0.70, tumor DSC 0.30" in text
    assert max(len(line) for line in lines) <= 100


def test_missing_outputs_are_said_not_shown(tmp_path):
    work = WorkLayout(tmp_path)
    assert results_lines(work) == [
        "student: not evaluated (no inference case with ground truth)",
        "training labels: not scored (no complete ground truth; phantom data has one)"]
    write(work, "label_quality_summary.json", {"cases": [], "skipped": ["a"], "by_source": []})
    write(work, "evaluation_summary.json", evaluation_summary())
    lines = results_lines(work)
    assert lines[0].split() == ["DSC", "/", "NSD", "student"]
    assert lines[-2] == "training labels: not scored (no complete ground truth; phantom data has one)"


def test_fusion_that_did_not_pay_off_is_said_with_the_likely_cause(tmp_path):
    work = WorkLayout(tmp_path)
    quality = label_quality_summary()
    quality["by_source"][3]["organ_dsc"] = 0.7  # organ-fused below the organ pseudo-label
    quality["tumor_detection"]["voxel_precision"] = 0.01
    write(work, "label_quality_summary.json", quality)
    text = "\n".join(results_lines(work))
    assert "fusion did not pay off: organ DSC 0.700 organ-fused, 0.800 organ pseudo-label" in text
    assert "voxel precision 0.01, take organ voxels" in text


def test_false_lesions_name_the_three_commonest_classes_and_count_the_rest():
    breakdown = {"found_by_host": {}, "false_by_class": {"background": 50, "liver": 9, "spleen": 4, "ivc": 2, "aorta": 1}}
    assert lesion_breakdown_lines(breakdown) == ["  found by organ: no true lesion",
                                                 "  false lesions on: background 50, liver 9, spleen 4, 3 on 2 more classes"]
    assert lesion_breakdown_lines(None) == []
