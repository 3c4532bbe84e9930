"""Teacher plans, weights and tumor pseudo-labels through the real Dagster
machinery and the real nnU-Net planner, trainer and predictor (tiny)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from flare_core.io import read_volume
from flare_core.layout import DataLayout
from flare_assets import model_cache
from flare_assets.defs.teacher import tumor_pseudo_label
from flare_assets.pipeline import latest_metadata
from tests.conftest import make_resources, partition_range_tags
from tests.assets.stages import through


@pytest.fixture(scope="module")
def teacher_stage(tiny_data_root, tmp_path_factory):
    """Registration, tumor subset, the teacher and its pseudo-labels, by automation, on their own instance."""
    yield from through(tiny_data_root, tmp_path_factory.mktemp("teacher"), "tumor_pseudo_label")


def _materializations(instance, key, partition=None):
    from dagster import AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(key), asset_partitions=[partition] if partition else None), limit=100)
    return [r.event_log_entry for r in records.records]


def test_teacher_plans_describe_the_attention_network(teacher_stage):
    instance, reports, work = teacher_stage.instance, teacher_stage.reports, teacher_stage.work
    assert reports["teacher_plans"].done == ["all"]
    meta = latest_metadata(instance, AssetKey("teacher_plans"))
    row = meta["configuration"].records[0].data
    assert row["network_class"] == "flare_core.nnunet.attention_unet.AttentionUNet"
    assert row["configuration"] == "2d"
    tumor_cases = json.loads((work / "manifests" / "tumor_subset.json").read_text())["cases"]
    assert meta["num_cases"] == len(tumor_cases)
    assert sorted(meta["case_ids"].split(", ")) == sorted(tumor_cases)


def test_teacher_weights_are_a_standard_nnunet_results_folder(teacher_stage):
    instance, reports = teacher_stage.instance, teacher_stage.reports
    assert reports["teacher_weights"].done == ["all"]
    meta = latest_metadata(instance, AssetKey("teacher_weights"))
    folder = Path(meta["results_folder"])
    assert (folder / "plans.json").is_file() and (folder / "dataset.json").is_file()
    assert (folder / "fold_all" / "checkpoint_final.pth").is_file()
    assert meta["epochs"] >= 1 and len(meta["checkpoint_sha256"]) == 64
    assert "data:image/png;base64," in meta["training_curve"]
    logs = [e.user_message for e in instance.all_logs(_materializations(instance, "teacher_weights")[0].run_id)]
    assert any("epoch 0: train loss" in m for m in logs), "per-epoch progress goes to the run log"


def test_tumor_pseudo_labels_only_for_cases_without_tumor_annotation(teacher_stage, tiny_data_root):
    instance, reports, work = teacher_stage.instance, teacher_stage.reports, teacher_stage.work
    truth = json.loads((tiny_data_root / "phantom.json").read_text())["train"]
    layout = DataLayout(tiny_data_root)
    assert not reports["tumor_pseudo_label"].failed
    for case_id, info in truth.items():
        path = work / "tumor_pseudo_labels" / f"{case_id}.nii.gz"
        meta = latest_metadata(instance, AssetKey("tumor_pseudo_label"), case_id)
        if 14 in (info["annotated"] or []):
            assert not path.exists() and "authoritative" in meta["prediction"]
            continue
        mask, geometry = read_volume(path, case_id)
        _, image_geometry = read_volume(layout.train_image(case_id), case_id)
        assert geometry.differences(image_geometry) == []
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert meta["lesion_voxels"] == int(mask.sum()) and "seconds" in meta


def test_a_batch_of_partitions_runs_once_with_one_model_load(teacher_stage, tmp_path):
    """What a backfill launches for many cases: one run over a partition range, one teacher load."""
    instance, resources, work = teacher_stage.instance, teacher_stage.resources, teacher_stage.work
    private_work = tmp_path / "work"
    shutil.copytree(work, private_work)
    state_path = private_work / "manifests" / "teacher_weights.json"
    state = json.loads(state_path.read_text())  # the copy's own model: a checkpoint outside the work root is refused
    state["model_folder"] = state["model_folder"].replace(str(work), str(private_work))
    state_path.write_text(json.dumps(state))
    keys = instance.get_dynamic_partitions("training_cases")
    model_cache.teacher.cache_clear()
    with DagsterInstance.ephemeral() as fresh:
        fresh.add_dynamic_partitions("training_cases", keys)
        result = materialize([tumor_pseudo_label], instance=fresh, tags=partition_range_tags(keys[0], keys[-1]),
                             resources=make_resources(resources["data_root"].path, private_work))
        assert result.success
        assert fresh.get_materialized_partitions(AssetKey("tumor_pseudo_label")) == set(keys)
        assert len({e.run_id for e in _materializations(fresh, "tumor_pseudo_label")}) == 1
    assert model_cache.teacher.cache_info().misses == 1, "the teacher is loaded once for the batch"

