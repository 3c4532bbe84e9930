"""The whole graph on tiny data through the real machinery: every asset is
materialized with lineage and metadata, and a second run does no work."""
from dagster import AssetKey

from flare_assets import pipeline
from flare_assets.definitions import defs
from tests.e2e.graph_checks import assert_every_asset_materialized


def test_every_asset_is_materialized_for_every_case(pipeline_run):
    instance, _, reports, _ = pipeline_run
    assert all(not r.failed for r in reports.values()), {r.name: r.failed for r in reports.values() if r.failed}
    assert_every_asset_materialized(instance)


def test_lineage_connects_the_method_end_to_end(pipeline_run):
    graph = defs.resolve_asset_graph()
    upstream = graph.get(AssetKey("evaluation_summary")).parent_keys
    chain, frontier = set(), set(upstream)
    while frontier:
        key = frontier.pop()
        chain.add(key.to_user_string())
        frontier |= set(graph.get(key).parent_keys)
    assert {"prediction", "student_weights", "student_plans", "organ_fused_label", "partial_fused_label",
            "tumor_pseudo_label", "teacher_weights", "teacher_plans", "tumor_subset", "training_case"} <= chain


def test_running_again_does_no_work_that_is_up_to_date(pipeline_run):
    instance, resources, _, _ = pipeline_run
    runs = instance.get_runs_count()
    assert pipeline.run_until_settled(instance, resources) == []
    assert instance.get_runs_count() == runs
