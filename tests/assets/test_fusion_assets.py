"""Fused labels per case: files, checks, source accounts, and isolation of a
case whose pseudo-label is broken."""
import shutil

import numpy as np
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, materialize

from flare_core.io import Geometry, read_volume, write_volume
from flare_core.layout import DataLayout
from flare_assets.defs.fusion import fused_labels
from flare_assets.pipeline import latest_metadata
from tests.conftest import make_resources, partition_range_tags
from tests.assets.stages import after_planted_teacher


FUSION = ("partial_fused_label", "organ_fused_label")


@pytest.fixture(scope="module")
def fusion_stage(tiny_data_root, tmp_path_factory):
    """Registered cases and planted tumor pseudo-labels, fused by automation, on their own instance."""
    yield from after_planted_teacher(tiny_data_root, tmp_path_factory.mktemp("fusion"), *FUSION)


def check_status_by_case(instance, asset: str, check: str) -> dict[str, str]:
    """The latest result of a partitioned check, case by case."""
    infos = instance.event_log_storage.get_asset_check_partition_info([AssetCheckKey(AssetKey(asset), check)])
    return {i.partition_key: i.latest_execution_status.value for i in infos}


def test_every_usable_case_has_both_fused_labels_with_passing_checks(fusion_stage, tiny_data_root):
    instance, reports, work = fusion_stage.instance, fusion_stage.reports, fusion_stage.work
    report = reports["fused_labels"]
    assert not report.failed and len(report.done) == 10
    layout = DataLayout(tiny_data_root)
    for case_id in report.done:
        _, image_geometry = read_volume(layout.train_image(case_id), case_id)
        for folder in ("partial_fused_labels", "organ_fused_labels"):
            label, geometry = read_volume(work / folder / f"{case_id}.nii.gz", case_id)
            assert label.dtype == np.uint8 and label.max() <= 14
            assert geometry.differences(image_geometry) == []
    for key, name in [("partial_fused_label", "annotated_tumor_kept"), ("organ_fused_label", "keeps_partial_fused"),
                      ("organ_fused_label", "agrees_with_annotation"), ("organ_fused_label", "geometry_matches_image")]:
        statuses = check_status_by_case(instance, key, name)  # partitioned checks: one result per case
        assert statuses == {c: "SUCCEEDED" for c in report.done}, (key, name, statuses)
    meta = latest_metadata(instance, AssetKey("organ_fused_label"), report.done[0])
    assert "data:image/png;base64," in meta["preview"]
    assert {r.data["class_name"] for r in meta["sources"].records} >= {"liver", "tumor"}


def test_fused_label_keeps_annotation_and_fills_only_unannotated_classes(fusion_stage, tiny_data_root):
    work = fusion_stage.work
    layout = DataLayout(tiny_data_root)
    for label_path in sorted(layout.folder("train_labels").glob("*.nii.gz")):
        case_id = label_path.name[: -len(".nii.gz")]
        partial, _ = read_volume(label_path, case_id)
        fused, _ = read_volume(work / "organ_fused_labels" / f"{case_id}.nii.gz", case_id)
        annotated = set(np.unique(partial)) - {0}
        for c in annotated - {14}:
            assert np.isin(fused[partial == c], [c, 14]).all()
        assert (fused[partial == 14] == 14).all()
        assert not np.isin(fused[partial == 0], list(annotated - {14})).any()


def test_a_broken_pseudo_label_fails_its_case_only(fusion_stage, tmp_path):
    instance, resources, work = fusion_stage.instance, fusion_stage.resources, fusion_stage.work
    private_work = tmp_path / "work"
    shutil.copytree(work, private_work)
    victim = next(p for p in sorted((private_work / "tumor_pseudo_labels").glob("*.nii.gz")))
    case_id = victim.name[: -len(".nii.gz")]
    mask, geometry = read_volume(victim, case_id)
    moved = Geometry(geometry.size, geometry.spacing, tuple(o + 9.0 for o in geometry.origin), geometry.direction)
    write_volume(mask, moved, victim)
    keys = instance.get_dynamic_partitions("training_cases")
    with DagsterInstance.ephemeral() as fresh:
        fresh.add_dynamic_partitions("training_cases", keys)
        result = materialize([fused_labels], instance=fresh, raise_on_error=False,
                             resources=make_resources(resources["data_root"].path, private_work),
                             tags=partition_range_tags(keys[0], keys[-1]))
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        message = failure.step_failure_data.user_failure_data.description
        assert case_id in message and "geometry" in message and "origin" in message
        done = fresh.get_materialized_partitions(AssetKey("organ_fused_label"))
        assert done == set(keys) - {case_id}
        statuses = check_status_by_case(fresh, "partial_fused_label", "geometry_matches_image")
        assert {c: v for c, v in statuses.items() if c != case_id} == {c: "SUCCEEDED" for c in keys if c != case_id}
        assert statuses.get(case_id) != "SUCCEEDED", "the failed case has no passing check result"
