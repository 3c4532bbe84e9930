"""The case sensors add partitions only for new cases, re-request changed ones,
never repeat themselves, and report broken or unsafely named files."""
import gzip
import os
import shutil

from dagster import build_sensor_context

from flare_core.layout import DataLayout
from flare_assets.resources import FlareDataRoot, FlareWorkRoot
from flare_assets.sensors import inference_case_sensor, training_case_sensor


def _tick(sensor, instance, root, cursor=None, work=None):
    resources = {"data_root": FlareDataRoot(path=str(root)),
                 "work_root": FlareWorkRoot(path=str(work or root.parent / "work"))}
    context = build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _added(result):
    return [k for r in (result.dynamic_partitions_requests or []) for k in r.partition_keys]


def test_first_tick_registers_every_case_then_goes_quiet(data_root_copy, instance):
    first = _tick(training_case_sensor, instance, data_root_copy)
    case_ids = sorted(instance.get_dynamic_partitions("training_cases"))
    assert len(case_ids) == 10
    assert sorted(r.partition_key for r in first.run_requests) == case_ids
    assert all(r.asset_selection[0].path == ["training_case"] for r in first.run_requests)
    second = _tick(training_case_sensor, instance, data_root_copy, first.cursor)
    assert second.run_requests == [] and _added(second) == []
    assert "no new or changed" in second.skip_reason.skip_message


def test_only_new_cases_get_partitions_and_changed_cases_are_rerequested(data_root_copy, instance):
    layout = DataLayout(data_root_copy)
    cursor = _tick(training_case_sensor, instance, data_root_copy).cursor
    shutil.copy(layout.train_image("FLARE23_0001"), layout.train_image("FLARE23_0100"))
    label = layout.train_label("FLARE23_0002")
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    result = _tick(training_case_sensor, instance, data_root_copy, cursor)
    assert _added(result) == ["FLARE23_0100"]
    tags = {r.partition_key: r.tags["flare/trigger"] for r in result.run_requests}
    assert tags == {"FLARE23_0100": "new", "FLARE23_0002": "changed"}
    keys = {r.run_key for r in result.run_requests}
    assert len(keys) == 2 and all(k.startswith("train:") for k in keys)


def test_broken_and_unsafe_files_are_reported_not_requested(data_root_copy, instance):
    layout = DataLayout(data_root_copy)
    images = layout.folder("train_images")
    (images / "FLARE23_0200_0000.nii.gz").write_bytes(gzip.compress(b"garbage" * 50))
    shutil.copy(layout.train_image("FLARE23_0001"), images / "evil..name_0000.nii.gz")
    result = _tick(training_case_sensor, instance, data_root_copy)
    requested = {r.partition_key for r in result.run_requests}
    assert "FLARE23_0200" not in requested and len(requested) == 10
    assert "FLARE23_0200" not in instance.get_dynamic_partitions("training_cases")
    again = _tick(training_case_sensor, instance, data_root_copy, result.cursor)
    assert again.run_requests == [], "a broken file is reported once, not re-requested every tick"


def test_inference_sensor_uses_its_own_partition_set(data_root_copy, instance):
    _tick(inference_case_sensor, instance, data_root_copy)
    assert len(instance.get_dynamic_partitions("inference_cases")) == 2
    assert instance.get_dynamic_partitions("training_cases") == []


def test_new_cases_get_their_whole_chain_once_the_models_exist(pipeline_run, data_root_copy, instance):
    _, _, _, work = pipeline_run
    first = _tick(training_case_sensor, instance, data_root_copy, work=work)
    selection = [k.path[0] for k in first.run_requests[0].asset_selection]
    assert selection == ["training_case", "tumor_pseudo_label", "partial_fused_label", "organ_fused_label",
                         "label_quality"]
    infer = _tick(inference_case_sensor, instance, data_root_copy, work=work)
    assert [k.path[0] for k in infer.run_requests[0].asset_selection] == ["inference_case", "prediction",
                                                                         "evaluation"]
