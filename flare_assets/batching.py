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
from typing import Callable, Iterable, Mapping

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    Failure,
    RetryRequested,
)

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


def run_batch(context: AssetExecutionContext, work: CaseWork,
              before_settling: Callable[[BatchOutcome], None] | None = None) -> BatchOutcome:
    """Apply `work` to every partition of the run; settle successes and failures.

    Returns the outcome when every case succeeded (the caller returns its
    MaterializeResult); raises `Failure` naming the failed cases otherwise,
    after recording each good case's materialization. `before_settling` sees
    the outcome first, either way (to log per-case check results).
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
    if before_settling is not None:
        before_settling(outcome)
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



def log_case_checks(context: AssetExecutionContext, key: AssetKey, check_name: str,
                    problems_by_case: Mapping[str, list[str]], cases: Iterable[str], blocking: bool = True) -> None:
    """In a batch, one evaluation of a partitioned check per case (so the UI
    shows each case's result), logged even when other cases of the batch fail."""
    if len(context.partition_keys) == 1:
        return  # a one-case run files its yielded result under its partition
    for case_id in cases:
        problems = problems_by_case.get(case_id, [])
        context.log_event(AssetCheckEvaluation(asset_key=key, check_name=check_name, passed=not problems,
                                               partition=case_id, blocking=blocking,
                                               description="; ".join(problems[:20]) or "ok"))


def check_result(context: AssetExecutionContext, key: AssetKey, check_name: str,
                 problems_by_case: Mapping[str, list[str]]) -> AssetCheckResult:
    """The result the step must yield for a declared check: the case's own in a
    one-case run, the batch's overall result otherwise."""
    cases = list(context.partition_keys)
    failed = [c for c in cases if problems_by_case.get(c)]
    if len(cases) == 1:
        problems = problems_by_case.get(cases[0], [])
        return AssetCheckResult(asset_key=key, check_name=check_name, passed=not problems,
                                description="; ".join(problems[:20]) or "ok")
    return AssetCheckResult(asset_key=key, check_name=check_name, passed=not failed,
                            description=f"failed for {', '.join(failed)}" if failed else f"ok for {len(cases)} cases")
