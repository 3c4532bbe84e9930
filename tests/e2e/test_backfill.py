"""A partition backfill launched through GraphQL on a real `dagster dev`: the
daemon runs it in step processes and the outputs land in the work root."""
import json
import shutil
import time

from dagster import DagsterInstance

from tests.e2e.dagster_dev import REPO, dagster_dev, graphql

LAUNCH = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
STATUS = """
query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}
"""
CASES = ["FLARE23_0001", "FLARE23_0002", "FLARE23_0003"]


def test_backfill_of_registrations_through_graphql(tiny_data_root, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("training_cases", CASES)
    work = tmp_path / "work"
    env = {"FLARE_DATA_ROOT": str(tiny_data_root), "FLARE_WORK_ROOT": str(work), "FLARE_PROFILE": "test",
           "FLARE_SENSORS": "off"}  # only the runs this test launches
    with dagster_dev(home, env, tmp_path / "dagster_dev.log") as port:
        params = {"assetSelection": [{"path": ["training_case"]}], "partitionNames": CASES}
        launched = graphql(port, LAUNCH, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        status = _wait_for_backfill(port, launched["backfillId"], timeout=300)
        assert status == "COMPLETED_SUCCESS", (status, (tmp_path / "dagster_dev.log").read_text()[-3000:])
    for case_id in CASES:
        inventory = json.loads((work / "cases" / "train" / f"{case_id}.json").read_text())
        assert inventory["case_id"] == case_id and len(inventory["image_sha256"]) == 64
    with DagsterInstance.from_config(str(home)) as instance:
        from dagster import AssetKey

        assert instance.get_materialized_partitions(AssetKey("training_case")) == set(CASES)


def _wait_for_backfill(port: int, backfill_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    status = "UNKNOWN"
    while time.monotonic() < deadline:
        status = graphql(port, STATUS, {"id": backfill_id})["partitionBackfillOrError"]["status"]
        if status in {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}:
            return status
        time.sleep(3)
    return status
