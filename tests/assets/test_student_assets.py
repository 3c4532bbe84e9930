"""Student plans and weights, predictions and the FLARE evaluation, through
the real Dagster machinery on tiny data."""
import json
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetKey

from flare_core.io import read_volume
from flare_core.layout import DataLayout
from flare_assets import demo
from flare_assets.pipeline import latest_metadata
from tests.assets.stages import after_planted_teacher


STUDENT_SIDE = ("partial_fused_label", "organ_fused_label", "student_plans", "student_weights", "prediction",
                "evaluation", "evaluation_summary")


@pytest.fixture(scope="module")
def student_stage(tiny_data_root, tmp_path_factory):
    """Fused labels from planted tumor pseudo-labels, then the student, its predictions and their
    evaluation, by automation, on their own instance."""
    yield from after_planted_teacher(tiny_data_root, tmp_path_factory.mktemp("student"), *STUDENT_SIDE,
                                     registrations=("training_case", "inference_case"))


def test_student_plans_record_the_fused_labels_they_consumed(student_stage):
    instance, reports, work = student_stage.instance, student_stage.reports, student_stage.work
    assert reports["student_plans"].done == ["all"]
    manifest = json.loads((work / "manifests" / "student_plans.json").read_text())
    assert len(manifest["cases"]) == 10
    for case_id, hashes in manifest["cases"].items():
        assert len(hashes["label"]) == 64 and len(hashes["image"]) == 64
    meta = latest_metadata(instance, AssetKey("student_plans"))
    row = meta["configuration"].records[0].data
    assert row["configuration"] == "3d_fullres" and row["network_class"].endswith("PlainConvUNet")
    assert meta["manifest_digest"] == manifest["digest"]


def test_student_weights_are_trained_on_that_manifest(student_stage):
    instance, work = student_stage.instance, student_stage.work
    meta = latest_metadata(instance, AssetKey("student_weights"))
    manifest = json.loads((work / "manifests" / "student_plans.json").read_text())
    assert meta["manifest_digest"] == manifest["digest"]
    assert (Path(meta["results_folder"]) / "fold_all" / "checkpoint_final.pth").is_file()


def test_predictions_keep_the_exact_geometry_of_every_inference_case(student_stage, tiny_data_root):
    instance, reports, work = student_stage.instance, student_stage.reports, student_stage.work
    layout = DataLayout(tiny_data_root)
    assert sorted(reports["prediction"].done) == ["FLARE23Ts_0001", "FLARE23Ts_0002"]
    flipped = 0
    for case_id in reports["prediction"].done:
        label, geometry = read_volume(work / "predictions" / f"{case_id}.nii.gz", case_id)
        _, image_geometry = read_volume(layout.infer_image(case_id), case_id)
        assert geometry.differences(image_geometry) == []
        assert label.dtype == np.uint8 and label.max() <= 14
        flipped += image_geometry.direction[0] < 0
        meta = latest_metadata(instance, AssetKey("prediction"), case_id)
        assert meta["windows_evaluated"] >= 1 and meta["seconds"] > 0 and meta["peak_memory_mb"] > 0
        assert 0 < meta["region_fraction"] <= 1
        assert "data:image/png;base64," in meta["preview"]
        assert meta["mode"] == "fastest" and meta["precision"] == "float32"
    assert flipped >= 1, "the phantom gives some inference cases a non-identity direction"


def test_evaluation_by_the_official_rules_and_its_summary(student_stage):
    instance, reports, work = student_stage.instance, student_stage.reports, student_stage.work
    assert len(reports["evaluation"].done) == 2
    record = json.loads((work / "evaluations" / "FLARE23Ts_0001.json").read_text())
    assert [s["class_id"] for s in record["scores"]] == list(range(1, 15))
    assert all(0.0 <= s["dsc"] <= 1.0 and 0.0 <= s["nsd"] <= 1.0 for s in record["scores"])
    summary = latest_metadata(instance, AssetKey("evaluation_summary"))
    rows = {r.data["row"]: r.data for r in summary["summary"].records}
    assert {"liver", "organs mean", "tumor", "all"} <= set(rows)
    assert summary["cases_evaluated"] == 2 and "data:image/png;base64," in summary["plot"]


def test_predictions_run_in_bfloat16_when_the_profile_says_so(student_stage, tmp_path):
    """FLARE_INFERENCE_PRECISION reaches the prediction asset through its RunProfile."""
    import shutil

    from dagster import DagsterInstance, materialize

    from flare_assets.defs.inference import prediction
    from flare_assets.resources import RunProfile

    work = tmp_path / "work"
    shutil.copytree(student_stage.work, work)
    _point_the_student_record_at(work, student_stage.work)
    case_id = student_stage.instance.get_dynamic_partitions("inference_cases")[0]
    resources = {**student_stage.resources, "work_root": type(student_stage.resources["work_root"])(path=str(work)),
                 "run_profile": RunProfile(name="test", device="cpu", inference_precision="bfloat16")}
    with DagsterInstance.ephemeral() as fresh:
        fresh.add_dynamic_partitions("inference_cases", [case_id])
        assert materialize([prediction], partition_key=case_id, instance=fresh, resources=resources).success
        meta = latest_metadata(fresh, AssetKey("prediction"), case_id)
    assert meta["precision"] == "bfloat16" and meta["backend"] == "torch"
    label, _ = read_volume(work / "predictions" / f"{case_id}.nii.gz", case_id)
    assert label.dtype == np.uint8


def _point_the_student_record_at(work: Path, original: Path) -> None:
    """A copied work root's own model: a checkpoint outside the work root is refused."""
    record = work / "manifests" / "student_weights.json"
    state = json.loads(record.read_text())
    state["model_folder"] = state["model_folder"].replace(str(original), str(work))
    record.write_text(json.dumps(state))


def test_more_student_epochs_continue_the_trained_student(student_stage, tmp_path, monkeypatch):
    """FLARE_STUDENT_EPOCHS above what the student was trained for: materializing its
    weights resumes from the final checkpoint (nothing is trained twice), a new
    checkpoint is the new data version; at or below it, the model is current."""
    import shutil

    from dagster import DagsterInstance, materialize

    from flare_assets.defs.student import student_weights
    from flare_assets.resources import RunProfile

    before = latest_metadata(student_stage.instance, AssetKey("student_weights"))
    monkeypatch.setenv("FLARE_STUDENT_EPOCHS", str(before["epochs"] + 1))
    notes = demo.epoch_override_notes(student_stage.instance)
    assert len(notes) == 1 and f"trained for {before['epochs']} epochs" in notes[0]
    assert "materialize student_weights" in notes[0]

    work = tmp_path / "work"
    shutil.copytree(student_stage.work, work)
    _point_the_student_record_at(work, student_stage.work)
    longer = before["epochs"] + 1
    resources = {**student_stage.resources, "work_root": type(student_stage.resources["work_root"])(path=str(work)),
                 "run_profile": RunProfile(name="test", device="cpu", student_epochs=longer)}
    with DagsterInstance.ephemeral() as fresh:
        assert materialize([student_weights], instance=fresh, resources=resources).success
        continued = latest_metadata(fresh, AssetKey("student_weights"))
        assert materialize([student_weights], instance=fresh, resources=resources).success
        again = latest_metadata(fresh, AssetKey("student_weights"))
    assert continued["resumed_from_epoch"] == before["epochs"] and continued["epochs"] == longer
    assert continued["epochs_requested"] == longer and not continued["already_trained"]
    assert continued["checkpoint_sha256"] != before["checkpoint_sha256"]
    assert again["already_trained"] and again["checkpoint_sha256"] == continued["checkpoint_sha256"]

    monkeypatch.setenv("FLARE_STUDENT_EPOCHS", str(before["epochs"]))
    assert demo.epoch_override_notes(student_stage.instance) == []
