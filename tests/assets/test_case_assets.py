"""Registration and tumor subset materialize on a real (ephemeral) instance,
and planted bad cases fail alone, with messages that name them."""
import hashlib
import json

from dagster import AssetSelection, materialize
from PIL import Image

from flare_core.io import Geometry, read_volume, write_volume
from flare_core.layout import DataLayout
from flare_core.preview import WIDTH_PX
from flare_assets import pipeline
from flare_assets.defs import cases
from tests.conftest import make_resources

REGISTRATION = AssetSelection.assets("training_case", "inference_case")


def _register(instance, resources):
    """Register every case the way the automation does (discovery, then the conditions)."""
    return pipeline.merged_reports(pipeline.run_until_settled(instance, resources, selection=REGISTRATION))


def _phantom_groups(root):
    return json.loads((root / "phantom.json").read_text())


def _tree_hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _checks_of(result):
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_registration_records_inventory_preview_and_passing_checks(tiny_data_root, tmp_path, instance):
    resources = make_resources(tiny_data_root, tmp_path / "work")
    case_id = "FLARE23_0001"
    instance.add_dynamic_partitions("training_cases", [case_id])
    result = materialize([cases.training_case], partition_key=case_id, instance=instance, resources=resources)
    assert result.success
    meta = result.asset_materializations_for_node("training_case")[0].metadata
    assert meta["label_group"].value in {"all_organs_tumor", "all_organs", "tumor_partial_organs",
                                         "tumor_only", "partial_organs", "unlabelled", "empty_label"}
    assert len(meta["image_sha256"].value) == 64
    assert "data:image/png;base64," in meta["preview"].value
    with Image.open(tmp_path / "work" / "previews" / "train_case" / f"{case_id}.png") as png:
        assert png.format == "PNG" and png.width == WIDTH_PX  # three planes side by side
    inventory = json.loads((tmp_path / "work" / "cases" / "train" / f"{case_id}.json").read_text())
    _, geometry = read_volume(DataLayout(tiny_data_root).train_image(case_id), case_id)
    assert inventory["geometry"]["size"] == list(geometry.size)
    checks = _checks_of(result)
    assert set(checks) == {"geometry_matches", "label_ids_valid", "label_files_readable"}
    assert all(c.passed for c in checks.values())


def test_tumor_subset_is_exactly_the_tumor_annotating_cases(tiny_data_root, tmp_path, instance):
    resources = make_resources(tiny_data_root, tmp_path / "work")
    before = _tree_hashes(tiny_data_root)
    report = _register(instance, resources)["training_case"]
    assert not report.failed and len(report.done) == 10
    result = materialize([cases.tumor_subset], instance=instance, resources=resources)
    manifest = json.loads((tmp_path / "work" / "manifests" / "tumor_subset.json").read_text())
    truth = _phantom_groups(tiny_data_root)["train"]
    expected = sorted(c for c, info in truth.items() if 14 in (info.get("annotated") or []))
    assert sorted(manifest["cases"]) == expected and len(expected) >= 3
    assert manifest["excluded"] == {}
    meta = result.asset_materializations_for_node("tumor_subset")[0].metadata
    counts = {r.data["label_group"]: r.data["cases"] for r in meta["cases_per_label_group"].value.records}
    assert sum(counts.values()) == 10 and counts["unlabelled"] >= 1
    assert _tree_hashes(tiny_data_root) == before, "inputs must never be modified"


def test_registration_is_not_repeated_when_nothing_changed(tiny_data_root, tmp_path, instance):
    resources = make_resources(tiny_data_root, tmp_path / "work")
    first = _register(instance, resources)
    assert len(first["inference_case"].done) == 2 and len(first["training_case"].done) == 10
    assert _register(instance, resources) == {}


def _plant_bad_cases(root):
    layout = DataLayout(root)
    label, geometry = read_volume(layout.train_label("FLARE23_0002"), "FLARE23_0002")
    moved = Geometry(geometry.size, geometry.spacing, tuple(o + 7.0 for o in geometry.origin), geometry.direction)
    write_volume(label, moved, layout.train_label("FLARE23_0002"))
    label, geometry = read_volume(layout.train_label("FLARE23_0003"), "FLARE23_0003")
    label = label.copy()
    label[0, 0, 0] = 17
    write_volume(label, geometry, layout.train_label("FLARE23_0003"))
    image = layout.train_image("FLARE23_0004")
    image.write_bytes(image.read_bytes()[:200])
    (layout.folder("train_images") / "bad name_0000.nii.gz").write_bytes(
        layout.train_image("FLARE23_0005").read_bytes())


def test_planted_bad_cases_fail_alone_with_clear_messages(data_root_copy, tmp_path, instance):
    _plant_bad_cases(data_root_copy)
    resources = make_resources(data_root_copy, tmp_path / "work")
    found = pipeline.discover_cases(instance, resources)
    assert any("bad name" in r for r in found["train"].problems.values())
    # An image whose header cannot be read never becomes a partition: reported by discovery.
    assert "unreadable NIfTI header" in found["train"].problems["FLARE23_0004"]
    assert {"bad name", "FLARE23_0004"}.isdisjoint(instance.get_dynamic_partitions("training_cases"))

    report = _register(instance, resources)["training_case"]
    assert sorted(report.failed) == ["FLARE23_0002", "FLARE23_0003"]
    for case_id, problem in [("FLARE23_0002", "origin"), ("FLARE23_0003", "[17]")]:
        assert case_id in report.failed[case_id] and problem in report.failed[case_id]
    assert len(report.done) == 7

    result = materialize([cases.training_case], partition_key="FLARE23_0002", instance=instance,
                         resources=resources, raise_on_error=False)
    geometry_check = _checks_of(result)["geometry_matches"]
    assert not geometry_check.passed
    assert "FLARE23_0002" in geometry_check.description and "origin" in geometry_check.description
    result = materialize([cases.training_case], partition_key="FLARE23_0003", instance=instance,
                         resources=resources, raise_on_error=False)
    ids_check = _checks_of(result)["label_ids_valid"]
    assert not ids_check.passed and "[17]" in ids_check.description

    materialize([cases.tumor_subset], instance=instance, resources=resources)
    manifest = json.loads((tmp_path / "work" / "manifests" / "tumor_subset.json").read_text())
    assert set(manifest["excluded"]) == {"FLARE23_0002", "FLARE23_0003"}
    assert "origin" in manifest["excluded"]["FLARE23_0002"]
    assert not set(manifest["cases"]) & set(manifest["excluded"])
