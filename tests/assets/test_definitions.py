"""The code location loads, and its asset graph has the product's vocabulary."""
from dagster import AssetKey, Definitions

from flare_assets.definitions import defs

EXPECTED = {
    "cases": {"training_case", "inference_case", "tumor_subset"},
    "teacher": {"teacher_plans", "teacher_weights", "tumor_pseudo_label"},
    "fusion": {"partial_fused_label", "organ_fused_label"},
    "quality": {"label_quality", "label_quality_summary"},
    "student": {"student_plans", "student_weights"},
    "inference": {"prediction", "evaluation", "evaluation_summary"},
}


def test_definitions_load_with_every_job_sensor_and_schedule():
    Definitions.validate_loadable(defs)
    assert {s.name for s in defs.sensors} == {"training_case_sensor", "inference_case_sensor"}
    assert {s.name for s in defs.schedules} == {"retrain_schedule", "refresh_labels_schedule",
                                                "refresh_predictions_schedule"}


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
