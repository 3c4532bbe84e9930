"""Per-case work in batches: one run, one model load, many partitions.

Assets that run a model declare a batched backfill policy and iterate
`context.partition_keys`. A case that fails does not stop the others: every
good case is still recorded as materialized (with its own metadata), and the
run then fails naming exactly the cases that did not work.

Transient I/O errors (OSError) retry the run a few times; bad input
(`CaseError`) never does. The per-case work returns that case's metadata; a multi-asset's work returns
{AssetKey: metadata} for each of its assets.
"""
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from dagster import AssetExecutionContext, AssetKey, AssetMaterialization, Failure, RetryRequested

from flare_core.io import CaseError
from flare_assets import progress

CaseWork = Callable[[str], Mapping]
IO_RETRIES = 2
IO_RETRY_SECONDS = 5


@dataclass
class BatchOutcome:
    metadata: dict[str, Mapping] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def summary(self) -> dict:
        return {"cases": len(self.metadata), "failed_cases": len(self.failures),
                "batch_seconds": round(self.seconds, 2)}


def run_batch(context: AssetExecutionContext, work: CaseWork) -> BatchOutcome:
    """Apply `work` to every partition of the run; settle successes and failures.

    Returns the outcome when every case succeeded (the caller returns its
    MaterializeResult); raises `Failure` naming the failed cases otherwise,
    after recording each good case's materialization.
    """
    outcome = BatchOutcome()
    started = time.perf_counter()
    for case_id in context.partition_keys:
        try:
            outcome.metadata[case_id] = dict(work(case_id))
        except CaseError as error:  # bad input: final for this case, never retried
            context.log.error(str(error))
            outcome.failures[case_id] = str(error)
        except OSError as error:  # storage trouble (NFS hiccup, full disk): retry the run
            context.log.warning("case %s: I/O error %s; retrying the batch", case_id, error)
            raise RetryRequested(max_retries=IO_RETRIES, seconds_to_wait=IO_RETRY_SECONDS) from error
        progress.advance("case")
    outcome.seconds = time.perf_counter() - started
    if outcome.failures:
        _record_successes_and_fail(context, outcome)
    for case_id, metadata in outcome.metadata.items():
        for key, values in _by_asset(context, metadata).items():
            context.add_asset_metadata(values, asset_key=key, partition_key=case_id)
    return outcome


def _by_asset(context: AssetExecutionContext, metadata: Mapping) -> dict[AssetKey, Mapping]:
    if metadata and all(isinstance(k, AssetKey) for k in metadata):
        return dict(metadata)
    return {context.assets_def.key: metadata}


def _record_successes_and_fail(context: AssetExecutionContext, outcome: BatchOutcome) -> None:
    for case_id, metadata in outcome.metadata.items():
        for key, values in _by_asset(context, metadata).items():
            context.log_event(AssetMaterialization(asset_key=key, partition=case_id, metadata=values))
    listing = "; ".join(outcome.failures.values())
    raise Failure(
        description=f"{len(outcome.failures)} of {len(context.partition_keys)} cases failed: {listing}",
        metadata={"failed_cases": ", ".join(outcome.failures)},
    )
