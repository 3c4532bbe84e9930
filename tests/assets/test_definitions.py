"""The code location loads (also through `dg check defs`), and its asset graph
has the product's vocabulary, with an automation condition on every asset."""
import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, AutomationConditionSensorDefinition, Definitions

from flare_assets.definitions import defs

REPO = Path(__file__).resolve().parents[2]
EXPECTED = {
    "cases": {"training_case_files", "inference_case_files", "training_case", "inference_case", "tumor_subset"},
    "teacher": {"teacher_plans", "teacher_weights", "tumor_pseudo_label"},
    "fusion": {"partial_fused_label", "organ_fused_label"},
    "quality": {"label_quality", "label_quality_summary"},
    "student": {"student_plans", "student_weights"},
    "inference": {"prediction", "evaluation", "evaluation_summary"},
}


def test_definitions_load_with_discovery_and_automation_sensors_and_no_schedules():
    Definitions.validate_loadable(defs)
    assert {s.name for s in defs.sensors} == {"training_case_sensor", "inference_case_sensor", "flare_automation",
                                           "dead_run_sensor"}
    assert not defs.schedules, "the automation conditions are the only scheduler"


def test_every_executable_asset_states_its_rule_and_checks_are_per_case():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_executable:
            assert node.automation_condition is not None, key
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        if graph.get(check_key.asset_key).is_partitioned:
            assert spec.partitions_def is not None, check_key


def test_automation_batches_many_partitions_of_a_model_asset_as_backfills():
    sensor = next(s for s in defs.sensors if s.name == "flare_automation")
    assert isinstance(sensor, AutomationConditionSensorDefinition) and sensor.emit_backfills
    graph = defs.resolve_asset_graph()
    for name in ("tumor_pseudo_label", "prediction"):
        policy = graph.get(AssetKey(name)).backfill_policy
        assert policy is not None and policy.max_partitions_per_run > 1, name


def test_dg_check_defs_passes():
    dg = Path(sys.executable).with_name("dg")
    env = {**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parents[1])}
    result = subprocess.run([str(dg), "check", "defs"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_asset_graph_groups_and_descriptions():
    graph = defs.resolve_asset_graph()
    groups: dict[str, set[str]] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        groups.setdefault(node.group_name, set()).add(key.to_user_string())
        assert node.description, f"{key} has no description"
    assert groups == EXPECTED


def test_model_steps_run_in_the_gpu_pool():
    graph = defs.resolve_asset_graph()
    for name in ("teacher_weights", "tumor_pseudo_label", "student_weights", "prediction"):
        assert graph.get(AssetKey(name)).pools == {"gpu"}, name
