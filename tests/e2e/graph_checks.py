"""Assertions about the whole graph shared by the end-to-end tests."""
from dagster import DagsterInstance

from flare_assets import pipeline


def assert_every_asset_materialized(instance: DagsterInstance) -> None:
    """Every partitioned asset for every partition, every other executable asset once."""
    graph = pipeline.code_location().resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_partitioned:
            partitions = node.partitions_def.get_partition_keys(dynamic_partitions_store=instance)
            assert instance.get_materialized_partitions(key) == set(partitions), key
        elif node.is_executable:
            assert pipeline.latest_metadata(instance, key), key
