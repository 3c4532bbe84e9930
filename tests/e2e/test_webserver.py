"""A real `dagster dev` on 127.0.0.1 serves the asset graph and partitions."""
from dagster import DagsterInstance

from tests.e2e.dagster_dev import dagster_dev, graphql

ASSET_GRAPH = """
{ assetNodes { assetKey { path } groupName description isPartitioned } }
"""
PARTITIONS = """
query ($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode { partitionKeys } }
}
"""


def test_webserver_shows_asset_graph_groups_and_partitions(tiny_data_root, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    # Sensors run in the daemon on their own schedule; partitions added up front
    # make the answer deterministic.
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("training_cases", ["FLARE23_0001", "FLARE23_0002"])
    env = {"FLARE_DATA_ROOT": str(tiny_data_root), "FLARE_WORK_ROOT": str(tmp_path / "work"),
           "FLARE_SENSORS": "off"}  # sensors would add partitions of their own
    with dagster_dev(home, env, tmp_path / "dagster_dev.log") as port:
        nodes = {"/".join(n["assetKey"]["path"]): n for n in graphql(port, ASSET_GRAPH)["assetNodes"]}
        assert {"training_case", "inference_case", "tumor_subset"} <= set(nodes)
        assert nodes["training_case"]["groupName"] == "cases"
        assert nodes["training_case"]["isPartitioned"] and "partial label" in nodes["training_case"]["description"]
        assert all(n["description"] for n in nodes.values())
        partitions = graphql(port, PARTITIONS, {"path": ["training_case"]})["assetNodeOrError"]["partitionKeys"]
        assert partitions == ["FLARE23_0001", "FLARE23_0002"]
