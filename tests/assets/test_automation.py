"""Each rule of the method's automation, evaluated by Dagster's own evaluator on
the real code location and an instance of its own.

Registration is real (the tiny cases are registered by their asset, so the
partitioned blocking checks are real results). The models' outputs are
reported as runless materializations with the data versions the real assets
give them (manifest digest, checkpoint hash): the rules are about when work
is due, and training is tested elsewhere.
"""
import datetime
import time

import pytest
from dagster import AssetKey, AssetMaterialization, evaluate_automation_conditions

from flare_core.layout import DataLayout
from flare_core.io import read_volume, write_volume
from flare_assets import pipeline
from flare_assets.definitions import defs
from tests.conftest import make_resources

# The tag under which Dagster records a materialization's data version.
DATA_VERSION_TAG = "dagster/data_version"
CASE_CHAIN = {"tumor_pseudo_label", "partial_fused_label", "organ_fused_label", "label_quality"}
INFER_CHAIN = {"prediction", "evaluation"}


class Automation:
    """Ticks of Dagster's automation evaluator with one cursor, as the sensor keeps it."""

    def __init__(self, instance, resources):
        self.instance, self.resources = instance, resources
        self.cursor = None
        self.now: datetime.datetime | None = None  # None: the real time
        self.reported = 0

    def tick(self) -> dict[str, set]:
        result = evaluate_automation_conditions(defs, self.instance, cursor=self.cursor, evaluation_time=self.now)
        self.cursor, self.last = result.cursor, result
        graph = defs.resolve_asset_graph()
        return {k.to_user_string(): set(result.get_requested_partitions(k))
                for k in graph.get_all_asset_keys() if result.get_num_requested(k)}

    def run_last(self):
        """Materialize what the last tick requested (real assets)."""
        return pipeline.run_requested(self.instance, pipeline.in_process(self.resources), defs, self.last)

    def report(self, key: str, partitions=(None,), version: str | None = None) -> None:
        """A materialization as the asset makes it: a given data version (the
        model assets'), else a new one each time (what Dagster gives the rest)."""
        for partition in partitions:
            self.reported += 1
            self.instance.report_runless_asset_event(AssetMaterialization(
                key, partition=partition, tags={DATA_VERSION_TAG: version or f"run-{self.reported}"}))


@pytest.fixture
def automation(data_root_copy, tmp_path, instance):
    """The cases discovered and registered by the rules, every later step not yet done."""
    auto = Automation(instance, make_resources(data_root_copy, tmp_path / "work"))
    assert auto.tick() == {}, "a first evaluation with nothing recorded requests nothing"
    pipeline.discover_cases(instance, auto.resources)
    requested = auto.tick()
    assert requested == {"training_case": set(_cases(instance)), "inference_case": set(_cases(instance, "infer"))}
    auto.run_last()
    return auto


def _cases(instance, split="train"):
    return instance.get_dynamic_partitions("training_cases" if split == "train" else "inference_cases")


def _train_teacher(auto, version="w1"):
    assert auto.tick() == {"tumor_subset": {None}}
    auto.report("tumor_subset", version="subset-1")
    assert auto.tick() == {"teacher_plans": {None}}, "the first teacher trains as soon as its cases settled"
    auto.report("teacher_plans", version="plans-1")
    assert auto.tick() == {"teacher_weights": {None}}
    auto.report("teacher_weights", version=version)


def test_new_cases_are_registered_then_get_their_chain_once_the_teacher_exists(automation):
    cases = set(_cases(automation.instance))
    _train_teacher(automation)
    requested = automation.tick()
    assert set(requested) == CASE_CHAIN and all(p == cases for p in requested.values()), requested

    layout = DataLayout(automation.resources["data_root"].path)
    layout.train_image("FLARE23_0100").write_bytes(layout.train_image("FLARE23_0001").read_bytes())
    pipeline.discover_cases(automation.instance, automation.resources)
    requested = automation.tick()
    assert requested == {"training_case": {"FLARE23_0100"}, **{k: {"FLARE23_0100"} for k in CASE_CHAIN}}, \
        "a new case is registered and, the teacher existing, gets its whole chain in the same run"


def test_a_rewritten_file_is_registered_again_but_unchanged_content_redoes_nothing(automation):
    _train_teacher(automation)
    automation.tick()
    for key in CASE_CHAIN:
        automation.report(key, _cases(automation.instance))
    automation.report("label_quality_summary")
    automation.tick()
    layout = DataLayout(automation.resources["data_root"].path)
    label = layout.train_label("FLARE23_0002")
    same = label.read_bytes()
    label.unlink()
    label.write_bytes(same)
    pipeline.discover_cases(automation.instance, automation.resources)
    assert automation.tick() == {"training_case": {"FLARE23_0002"}}
    automation.run_last()
    requested = automation.tick()
    assert not CASE_CHAIN & set(requested), f"same content, same data version: {requested}"

    values, geometry = read_volume(label, "FLARE23_0002")
    values = values.copy()
    values[values == values.max()] = 0  # one class fewer annotated: new content
    write_volume(values, geometry, label)
    pipeline.discover_cases(automation.instance, automation.resources)
    assert automation.tick() == {"training_case": {"FLARE23_0002"}}
    automation.run_last()
    requested = automation.tick()
    first = CASE_CHAIN - {"label_quality"}
    assert {k: requested.get(k) for k in first} == {k: {"FLARE23_0002"} for k in first}, requested
    # label_quality follows on the next tick, once the new fused labels passed
    # their blocking checks: real check results, which runless reports cannot make.


def test_a_new_teacher_refreshes_every_case_it_labelled(automation):
    cases = set(_cases(automation.instance))
    _train_teacher(automation)
    automation.tick()
    for key in CASE_CHAIN:
        automation.report(key, cases)
    automation.tick()
    assert automation.tick() == {}
    automation.report("teacher_weights", version="w2")  # retrained: a new checkpoint hash
    requested = automation.tick()
    assert requested.get("tumor_pseudo_label") == cases


def _just_before_the_next_cron_tick() -> datetime.datetime:
    """One minute before the next 02:00 (the default retraining cron) after now.

    The models were trained at the wall-clock time; a tick between then and the
    test's first evaluation would already be pending, so the test starts before
    the next tick (waiting out the last two minutes before one)."""
    now = datetime.datetime.now()
    tick = now.replace(hour=2, minute=0, second=0, microsecond=0)
    if tick <= now:
        tick += datetime.timedelta(days=1)
    if tick - now < datetime.timedelta(minutes=2):
        time.sleep((tick - now).total_seconds() + 1)
        return _just_before_the_next_cron_tick()
    return tick - datetime.timedelta(minutes=1)


def test_models_retrain_on_the_cron_tick_and_only_when_their_training_set_changed(automation):
    _train_teacher(automation)
    before_tick = _just_before_the_next_cron_tick()  # no tick between the teacher's training and here
    automation.now = before_tick
    automation.tick()
    automation.report("tumor_subset", version="subset-2")  # the tumor pool grew
    assert "teacher_plans" not in automation.tick(), "no retraining between cron ticks"
    automation.now = before_tick + datetime.timedelta(minutes=2)
    assert "teacher_plans" in automation.tick(), "the cron tick retrains on the changed pool"
    automation.report("teacher_plans", version="plans-2")
    automation.now = before_tick + datetime.timedelta(days=1, minutes=2)
    automation.report("tumor_subset", version="subset-2")  # recomputed, same manifest digest
    assert "teacher_plans" not in automation.tick(), "same training set: no retraining on the next tick"


def test_the_student_trains_once_every_case_settled_and_predictions_follow_it(automation):
    train, infer = set(_cases(automation.instance)), set(_cases(automation.instance, "infer"))
    _train_teacher(automation)
    automation.report("partial_fused_label", sorted(train)[:5])  # some labels exist already
    automation.report("organ_fused_label", sorted(train)[:5])
    requested = automation.tick()
    assert CASE_CHAIN <= set(requested) and "student_plans" not in requested, \
        "no student while the fused labels of the tick are still to be made"
    for key in CASE_CHAIN:
        automation.report(key, train)
    requested = automation.tick()
    assert "student_plans" in requested
    automation.report("student_plans", version="manifest-1")
    assert "student_weights" in automation.tick()
    automation.report("student_weights", version="s1")
    requested = automation.tick()
    assert requested.get("prediction") == infer and requested.get("evaluation") == infer
    automation.report("prediction", infer)
    automation.report("evaluation", infer)
    assert automation.tick().get("evaluation_summary") == {None}, "the summary follows its cases"
    automation.report("evaluation_summary")
    automation.report("student_weights", version="s2")
    assert automation.tick().get("prediction") == infer, "a new student refreshes every prediction"


def _settle(auto):
    """Report every requested output until the rules request nothing."""
    versions = {"tumor_subset": "subset-1", "teacher_plans": "plans-1", "teacher_weights": "w1",
                "student_plans": "manifest-1", "student_weights": "s1"}
    for _ in range(12):
        requested = auto.tick()
        if not requested:
            return
        for key, partitions in requested.items():
            auto.report(key, partitions, versions.get(key))
    raise AssertionError(f"still requesting after 12 ticks: {requested}")


def test_nothing_at_all_is_due_when_nothing_changed(automation):
    _settle(automation)
    assert automation.instance.get_materialized_partitions(AssetKey("prediction")) == set(
        _cases(automation.instance, "infer")), "settling went all the way to the predictions"
    assert automation.tick() == {} and automation.tick() == {}


def test_a_fresh_cursor_redoes_nothing(automation):
    _settle(automation)
    fresh = evaluate_automation_conditions(defs, automation.instance)
    assert fresh.total_requested == 0


def test_a_fresh_cursor_resumes_what_was_left_undone(automation):
    _settle(automation)
    automation.instance.wipe_assets([AssetKey("label_quality_summary")])  # as if its run had crashed
    fresh = evaluate_automation_conditions(defs, automation.instance)
    assert fresh.get_requested_partitions(AssetKey("label_quality_summary")) == {None}
    assert fresh.total_requested == 1
