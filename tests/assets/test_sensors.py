"""The discovery sensors: partitions for new cases only, one files event per new
or changed case, a cursor of a few bytes, nothing reported twice, broken or
unsafe files reported once, a fresh cursor quiet on a registered instance."""
import gzip
import os
import shutil
import time

import pytest
from dagster import AssetKey, build_sensor_context

from flare_core.layout import DataLayout, WorkLayout
from flare_assets.case_discovery import Cursor, discover
from flare_assets.defs.discovery import inference_case_sensor, training_case_sensor
from flare_assets.resources import FlareDataRoot, FlareWorkRoot

FILES = AssetKey("training_case_files")


@pytest.fixture(autouse=True)
def no_settling(monkeypatch):
    monkeypatch.setenv("FLARE_SETTLE_SECONDS", "0")


def _tick(sensor, instance, root, cursor=None, work=None):
    """One sensor evaluation, its result applied to the instance as the daemon would."""
    resources = {"data_root": FlareDataRoot(path=str(root)),
                 "work_root": FlareWorkRoot(path=str(work or root.parent / "work"))}
    result = sensor(build_sensor_context(instance=instance, cursor=cursor, resources=resources))
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)
    return result


def _added(result):
    return [k for r in (result.dynamic_partitions_requests or []) for k in r.partition_keys]


def _reported(result):
    return {e.partition: e.metadata["discovered_as"].value for e in result.asset_events or []}


def _rewrite(path):
    """Write a file again with the same bytes: a new change time, as a re-export would leave."""
    time.sleep(0.01)
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)


def test_first_tick_adds_every_case_then_goes_quiet_with_a_tiny_cursor(data_root_copy, instance):
    first = _tick(training_case_sensor, instance, data_root_copy)
    case_ids = sorted(instance.get_dynamic_partitions("training_cases"))
    assert len(case_ids) == 10 and sorted(_added(first)) == case_ids
    assert _reported(first) == {c: "new" for c in case_ids}
    assert not first.run_requests, "sensors only discover; the automation conditions request the work"
    second = _tick(training_case_sensor, instance, data_root_copy, first.cursor)
    assert _added(second) == [] and _reported(second) == {}
    assert "no new or changed" in second.skip_reason.skip_message
    assert len(second.cursor) < 200, second.cursor


def test_only_new_cases_get_partitions_and_changed_cases_an_event(data_root_copy, instance):
    layout = DataLayout(data_root_copy)
    cursor = _tick(training_case_sensor, instance, data_root_copy).cursor
    time.sleep(0.01)
    shutil.copy(layout.train_image("FLARE23_0001"), layout.train_image("FLARE23_0100"))
    _rewrite(layout.train_label("FLARE23_0002"))
    result = _tick(training_case_sensor, instance, data_root_copy, cursor)
    assert _added(result) == ["FLARE23_0100"]
    assert _reported(result) == {"FLARE23_0100": "new", "FLARE23_0002": "changed"}
    assert _reported(_tick(training_case_sensor, instance, data_root_copy, result.cursor)) == {}


def test_a_file_copied_preserving_its_time_still_counts_as_changed(data_root_copy, instance, tmp_path):
    layout = DataLayout(data_root_copy)
    cursor = _tick(training_case_sensor, instance, data_root_copy).cursor
    label = layout.train_label("FLARE23_0003")
    old = tmp_path / "old.nii.gz"
    shutil.copy2(label, old)
    time.sleep(0.01)
    shutil.copy2(old, label)  # `cp -p`: the modification time is the old one, the change time is not
    assert _reported(_tick(training_case_sensor, instance, data_root_copy, cursor)) == {"FLARE23_0003": "changed"}


def test_broken_and_unsafe_files_are_reported_once_and_never_added(data_root_copy, instance, tmp_path):
    layout = DataLayout(data_root_copy)
    images = layout.folder("train_images")
    (images / "FLARE23_0200_0000.nii.gz").write_bytes(gzip.compress(b"garbage" * 50))
    shutil.copy(layout.train_image("FLARE23_0001"), images / "evil..name_0000.nii.gz")
    found = discover(instance, layout, WorkLayout(tmp_path / "work"), "train", cursor=None)
    assert "unreadable NIfTI header" in found.problems["FLARE23_0200"]
    assert any("evil..name" in p for p in found.problems.values())
    result = _tick(training_case_sensor, instance, data_root_copy)
    assert "FLARE23_0200" not in instance.get_dynamic_partitions("training_cases")
    assert len(_reported(result)) == 10
    again = discover(instance, layout, WorkLayout(tmp_path / "work"), "train", Cursor.from_json(result.cursor))
    assert again.problems == {} and again.events == [], "reported once, not every tick"
    assert _reported(_tick(training_case_sensor, instance, data_root_copy, result.cursor)) == {}


def test_a_removed_label_counts_as_a_change(data_root_copy, instance, tmp_path):
    from flare_assets import pipeline
    from tests.conftest import make_resources
    from dagster import AssetSelection

    resources = make_resources(data_root_copy, tmp_path / "work")
    pipeline.run_until_settled(instance, resources, selection=AssetSelection.assets("training_case"))
    cursor = _tick(training_case_sensor, instance, data_root_copy, work=tmp_path / "work").cursor
    DataLayout(data_root_copy).train_label("FLARE23_0004").unlink()
    result = _tick(training_case_sensor, instance, data_root_copy, cursor, work=tmp_path / "work")
    assert _reported(result) == {"FLARE23_0004": "changed"}


def test_a_file_still_being_written_is_left_for_a_later_tick(data_root_copy, instance, monkeypatch):
    layout = DataLayout(data_root_copy)
    cursor = _tick(training_case_sensor, instance, data_root_copy).cursor
    monkeypatch.setenv("FLARE_SETTLE_SECONDS", "3600")
    shutil.copy(layout.train_image("FLARE23_0001"), layout.train_image("FLARE23_0300"))
    result = _tick(training_case_sensor, instance, data_root_copy, cursor)
    assert _added(result) == [] and _reported(result) == {}
    monkeypatch.setenv("FLARE_SETTLE_SECONDS", "0")
    assert _added(_tick(training_case_sensor, instance, data_root_copy, result.cursor)) == ["FLARE23_0300"]


def test_a_fresh_cursor_on_a_registered_instance_reports_nothing(data_root_copy, instance):
    _tick(training_case_sensor, instance, data_root_copy)
    fresh = _tick(training_case_sensor, instance, data_root_copy, cursor=None)
    assert _added(fresh) == [] and _reported(fresh) == {}


def test_inference_sensor_uses_its_own_partition_set(data_root_copy, instance):
    result = _tick(inference_case_sensor, instance, data_root_copy)
    assert len(instance.get_dynamic_partitions("inference_cases")) == 2
    assert instance.get_dynamic_partitions("training_cases") == []
    assert {e.asset_key for e in result.asset_events} == {AssetKey("inference_case_files")}


def test_cursor_stays_small_however_many_cases(data_root_copy, instance):
    layout = DataLayout(data_root_copy)
    for i in range(300):
        os.link(layout.train_image("FLARE23_0001"), layout.train_image(f"EXTRA_{i:04d}"))
    result = _tick(training_case_sensor, instance, data_root_copy)
    assert len(instance.get_dynamic_partitions("training_cases")) == 310
    assert len(result.cursor) < 200, result.cursor


def test_a_slow_copy_is_requested_once_when_it_has_settled(data_root_copy, instance, monkeypatch):
    layout = DataLayout(data_root_copy)
    cursor = _tick(training_case_sensor, instance, data_root_copy).cursor
    monkeypatch.setenv("FLARE_SETTLE_SECONDS", "1")
    data = layout.train_image("FLARE23_0001").read_bytes()
    target = layout.train_image("FLARE23_0400")
    seen = []
    for chunk in range(4):  # `cp` over a slow share: the file grows between ticks
        with open(target, "ab") as handle:
            handle.write(data[chunk * len(data) // 4:(chunk + 1) * len(data) // 4])
        result = _tick(training_case_sensor, instance, data_root_copy, cursor)
        seen.append(_reported(result))
        cursor = result.cursor
        time.sleep(0.3)
    time.sleep(1.1)
    for _ in range(2):
        result = _tick(training_case_sensor, instance, data_root_copy, cursor)
        seen.append(_reported(result))
        cursor = result.cursor
    assert seen == [{}] * 4 + [{"FLARE23_0400": "new"}, {}], seen
    assert "FLARE23_0400" in instance.get_dynamic_partitions("training_cases")


def test_a_once_broken_file_is_added_when_it_is_fixed(data_root_copy, instance):
    layout = DataLayout(data_root_copy)
    broken = layout.train_image("FLARE23_0500")
    broken.write_bytes(gzip.compress(b"not a nifti" * 40))
    result = _tick(training_case_sensor, instance, data_root_copy)
    assert "FLARE23_0500" not in instance.get_dynamic_partitions("training_cases")
    time.sleep(0.01)
    shutil.copy(layout.train_image("FLARE23_0001"), broken)  # the user replaces it with a good file
    fixed = _tick(training_case_sensor, instance, data_root_copy, result.cursor)
    assert _added(fixed) == ["FLARE23_0500"] and _reported(fixed) == {"FLARE23_0500": "new"}


def test_a_hundred_arrivals_each_get_one_partition_and_one_event(data_root_copy, instance):
    """Cases arrive in bursts, some first seen half-written: every reported
    case has its partition, none is reported twice, no tick fails."""
    layout = DataLayout(data_root_copy)
    good = layout.train_image("FLARE23_0001").read_bytes()
    cursor, reported = _tick(training_case_sensor, instance, data_root_copy).cursor, {}
    for burst in range(5):
        for i in range(burst * 20, burst * 20 + 20):
            target = layout.train_image(f"ARRIVAL_{i:03d}")
            target.write_bytes(good[: len(good) // 3] if i % 7 == 0 else good)  # every 7th still copying
        for i in range(max(0, burst - 1) * 20, burst * 20):  # ...finished by the next burst
            if i % 7 == 0:
                layout.train_image(f"ARRIVAL_{i:03d}").write_bytes(good)
        time.sleep(0.01)
        result = _tick(training_case_sensor, instance, data_root_copy, cursor)
        cursor = result.cursor
        partitions = set(instance.get_dynamic_partitions("training_cases"))
        for case_id in _reported(result):
            assert case_id in partitions, f"{case_id} reported without its partition"
            reported[case_id] = reported.get(case_id, 0) + 1
    arrivals = {f"ARRIVAL_{i:03d}" for i in range(100)}
    last_burst_half_written = {f"ARRIVAL_{i:03d}" for i in range(80, 100) if i % 7 == 0}
    assert set(reported) == arrivals - last_burst_half_written
    assert all(count == 1 for count in reported.values()), {k: v for k, v in reported.items() if v > 1}


def test_a_file_that_vanishes_mid_tick_costs_its_case_not_the_tick(data_root_copy, instance, monkeypatch):
    """A file listed by the scan and gone when its header is read (a user's
    `mv` at the wrong moment): that case is reported, every other case added."""
    from flare_assets import case_discovery

    layout = DataLayout(data_root_copy)
    vanishing = layout.train_image("FLARE23_0005")
    real = case_discovery.header_problem

    def header_problem(path):
        if path == vanishing:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real(path)

    monkeypatch.setattr(case_discovery, "header_problem", header_problem)
    result = _tick(training_case_sensor, instance, data_root_copy)
    added = set(instance.get_dynamic_partitions("training_cases"))
    assert len(added) == 9 and "FLARE23_0005" not in added
    found = discover(instance, layout, WorkLayout(data_root_copy.parent / "w2"), "train", cursor=None)
    assert "FileNotFoundError" in found.problems["FLARE23_0005"]
    monkeypatch.setattr(case_discovery, "header_problem", real)
    assert _added(_tick(training_case_sensor, instance, data_root_copy, result.cursor)) == ["FLARE23_0005"]
