"""Batches: failures isolated per case, I/O errors retried, bad input not."""
from dagster import (
    AssetExecutionContext, AssetKey, BackfillPolicy, DagsterInstance, MaterializeResult, asset, materialize,
)
from tests.conftest import partition_range_tags

from flare_core.io import CaseError
from flare_assets import batching
from flare_assets.partitions import training_cases

CALLS: list[str] = []


@asset(partitions_def=training_cases, backfill_policy=BackfillPolicy.single_run())
def flaky(context: AssetExecutionContext):
    def work(case_id: str) -> dict:
        CALLS.append(case_id)
        if case_id == "io" and CALLS.count("io") == 1:
            raise OSError("stale NFS file handle")
        if case_id == "bad":
            raise CaseError(case_id, "label values [17] outside 0..14")
        return {"case": case_id}

    return MaterializeResult(metadata=batching.run_batch(context, work).summary)


def _run(keys):
    CALLS.clear()
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("training_cases", keys)
    batching.IO_RETRY_SECONDS = 0
    tags = partition_range_tags(keys[0], keys[-1])
    return instance, materialize([flaky], instance=instance, tags=tags, raise_on_error=False)


def test_transient_io_error_is_retried_and_succeeds():
    instance, result = _run(["a", "io", "b"])
    assert result.success, "the retried attempt succeeds"
    assert CALLS.count("io") == 2, "the batch was retried after the I/O error"
    assert instance.get_materialized_partitions(AssetKey("flaky")) == {"a", "io", "b"}


def test_bad_input_fails_its_case_only_and_is_not_retried():
    instance, result = _run(["a", "bad", "b"])
    assert not result.success
    assert CALLS.count("bad") == 1
    assert instance.get_materialized_partitions(AssetKey("flaky")) == {"a", "b"}
