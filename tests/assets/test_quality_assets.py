"""Label quality against phantom ground truth, and a clean skip without it."""
import json
import shutil

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from flare_core import label_quality as lq
from flare_assets.defs.quality import label_quality, label_quality_summary
from flare_assets.pipeline import latest_metadata
from tests.conftest import make_resources
from tests.assets.stages import after_planted_teacher


SCORED = ("partial_fused_label", "organ_fused_label", "label_quality", "label_quality_summary")


@pytest.fixture(scope="module")
def quality_stage(tiny_data_root, tmp_path_factory):
    """Registered cases, planted tumor pseudo-labels, fusion and quality by automation, on their own instance."""
    yield from after_planted_teacher(tiny_data_root, tmp_path_factory.mktemp("quality"), *SCORED)


def test_every_label_source_is_scored_against_ground_truth(quality_stage):
    instance, reports, work = quality_stage.instance, quality_stage.reports, quality_stage.work
    assert len(reports["label_quality"].done) == 10
    summary = json.loads((work / "manifests" / "label_quality_summary.json").read_text())
    assert len(summary["cases"]) == 10 and summary["skipped"] == []
    by_source = {row["source"]: row for row in summary["by_source"]}
    assert set(by_source) == set(lq.SOURCES)
    # Fusion adds the organ pseudo-label's classes to the partial label.
    assert by_source[lq.ORGAN_FUSED]["organ_dsc"] > by_source[lq.PARTIAL_FUSED]["organ_dsc"]
    assert by_source[lq.ORGAN_FUSED]["organ_dsc"] > by_source[lq.PARTIAL_ONLY]["organ_dsc"]
    assert by_source[lq.TUMOR_PSEUDO]["organ_dsc"] is None  # a tumor mask is scored on tumor only
    # The tumor pseudo-labels as a detector, pooled over the cases that have one (no tumor annotation).
    detection = summary["tumor_detection"]
    with_pseudo_label = [c for c in summary["cases"]
                         if "tumor_detection" in json.loads((work / "label_quality" / f"{c}.json").read_text())]
    assert detection["cases"] == len(with_pseudo_label) > 0
    assert detection["true_lesions"] > 0 and 0 <= detection["true_lesions_found"] <= detection["true_lesions"]
    assert detection["voxel_recall"] == round(detection["true_positive_voxels"] / (
        detection["true_positive_voxels"] + detection["false_negative_voxels"]), 4)
    # ... and by organ: every true lesion counted once, under the organ that hosts it.
    found_by_host = summary["lesion_breakdown"]["found_by_host"]
    assert sum(total for _, total in found_by_host.values()) == detection["true_lesions"]
    assert sum(hit for hit, _ in found_by_host.values()) == detection["true_lesions_found"]
    assert set(found_by_host) <= {"liver", "right_kidney", "left_kidney", "pancreas"}  # the phantom's hosts
    liver = {r["source"]: r for r in summary["by_class"] if r["class_name"] == "liver"}
    assert set(liver) == set(lq.SOURCES) - {lq.TUMOR_PSEUDO} and liver[lq.ORGAN_FUSED]["cases"] == 10
    meta = latest_metadata(instance, AssetKey("label_quality_summary"))
    assert meta["cases_scored"] == 10 and "data:image/png;base64," in meta["plot"]


def test_quality_is_skipped_cleanly_without_ground_truth(quality_stage, tmp_path):
    instance, resources, work = quality_stage.instance, quality_stage.resources, quality_stage.work
    data = tmp_path / "data"
    shutil.copytree(resources["data_root"].path, data)
    shutil.rmtree(data / "train" / "ground_truth")
    private_work = tmp_path / "work"
    shutil.copytree(work, private_work)
    case_id = instance.get_dynamic_partitions("training_cases")[0]
    with DagsterInstance.ephemeral() as fresh:
        fresh.add_dynamic_partitions("training_cases", [case_id])
        resources = make_resources(data, private_work)
        assert materialize([label_quality], partition_key=case_id, instance=fresh, resources=resources).success
        meta = latest_metadata(fresh, AssetKey("label_quality"), case_id)
        assert meta["status"].startswith("skipped")
        assert materialize([label_quality_summary], instance=fresh, resources=resources).success
        summary = latest_metadata(fresh, AssetKey("label_quality_summary"))
        assert summary["cases_scored"] == 0 and summary["cases_skipped"] == 1
