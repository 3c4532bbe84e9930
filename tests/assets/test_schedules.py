"""The retrain schedule runs nothing when nothing changed, retrains a model
when the cases it would train on changed, and refreshes per-case outputs made
with an older model."""
import json
import shutil

import pytest
from dagster import DagsterInstance, SkipReason, build_schedule_context

from flare_assets.resources import FlareWorkRoot
from flare_assets.schedules import refresh_requests


@pytest.fixture
def state_copy(pipeline_run, tmp_path):
    """A private copy of the pipeline's instance and work root."""
    instance, _, _, work = pipeline_run
    home = tmp_path / "home"
    shutil.copytree(instance.root_directory, home)
    private_work = tmp_path / "work"
    shutil.copytree(work, private_work, symlinks=True)
    for state in ("teacher_weights", "student_weights"):  # model folders moved with the copy
        path = private_work / "manifests" / f"{state}.json"
        data = json.loads(path.read_text())
        data["model_folder"] = data["model_folder"].replace(str(work), str(private_work))
        path.write_text(json.dumps(data))
    with DagsterInstance.from_config(str(home)) as copy:
        yield copy, private_work


def _evaluate(instance, work):
    with build_schedule_context(instance=instance) as context:
        return refresh_requests(context, FlareWorkRoot(path=str(work)))


def _selection(request):
    return [k.path[0] for k in request.asset_selection]


def test_nothing_changed_means_nothing_runs(state_copy):
    result = _evaluate(*state_copy)
    assert isinstance(result, SkipReason), result


def test_a_new_tumor_case_retrains_the_teacher(state_copy):
    instance, work = state_copy
    inventory = json.loads((work / "cases" / "train" / "FLARE23_0001.json").read_text())
    assert 14 in inventory["annotated"]
    inventory.update(case_id="FLARE23_0999", image_sha256="f" * 64)
    (work / "cases" / "train" / "FLARE23_0999.json").write_text(json.dumps(inventory))
    instance.add_dynamic_partitions("training_cases", ["FLARE23_0999"])
    [request] = _evaluate(instance, work)
    assert _selection(request) == ["tumor_subset", "teacher_plans", "teacher_weights"]


def test_a_new_teacher_refreshes_pseudo_labels_in_one_ranged_run(state_copy):
    instance, work = state_copy
    path = work / "manifests" / "teacher_weights.json"
    state = json.loads(path.read_text())
    state["checkpoint_sha256"] = "0" * 64
    path.write_text(json.dumps(state))
    [request] = _evaluate(instance, work)
    assert _selection(request)[:3] == ["tumor_pseudo_label", "partial_fused_label", "organ_fused_label"]
    predicted = sorted(p.name.split(".")[0] for p in (work / "tumor_pseudo_labels").glob("*.nii.gz"))
    assert request.tags["dagster/asset_partition_range_start"] == predicted[0]
    assert request.tags["dagster/asset_partition_range_end"] == predicted[-1]


def test_a_changed_fused_label_retrains_the_student(state_copy):
    instance, work = state_copy
    fused = work / "organ_fused_labels" / "FLARE23_0005.nii.gz"
    shutil.copy(work / "organ_fused_labels" / "FLARE23_0006.nii.gz", fused)
    [request] = _evaluate(instance, work)
    assert _selection(request) == ["student_plans", "student_weights"]
