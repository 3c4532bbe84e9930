"""The method's rules for when each artifact is due, as Dagster automation conditions.

Dagster's automation sensor (`defs/automation.py`) evaluates these; nothing
else in the platform decides what is out of date. The rules:

- registration: a case's files appeared or changed (the discovery sensor
  reports a new event of the case's files asset);
- per-case work (tumor pseudo-label, fused labels, label quality,
  prediction, evaluation): the case is new, or the data version of an input
  changed: its registration's content hash, or the model that made it (the
  checkpoint hash), so a new teacher or student refreshes every case it made;
  never while an input is missing, failed its blocking checks or is running;
- the case lists and summaries (`tumor_subset`, label quality and evaluation
  summaries) follow their per-case inputs once none of them is running;
- a model's plans: the first time as soon as its training cases have settled,
  then on the retraining cron tick, and only if its inputs changed since; the
  plans carry the training manifest's digest as their data version, so the
  weights retrain only when what they would train on changed.

On a new automation cursor (a fresh `dagster dev`, each demo run) no rule
redoes work that exists: Dagster's `since_last_handled` starts from nothing.
The one thing a new cursor adds is what is missing although it could run,
which a crash or an earlier failure left undone.
"""
from __future__ import annotations

from dagster import AutomationCondition

AC = AutomationCondition

# Nightly by default; FLARE_RETRAIN_CRON changes it (see settings).
DEFAULT_RETRAIN_CRON = "0 2 * * *"


def _runnable() -> AutomationCondition:
    """Every input exists, passed its blocking checks, and nothing involved is running."""
    return (~AC.any_deps_missing() & ~AC.any_deps_in_progress() & ~AC.in_progress()
            & AC.all_deps_blocking_checks_passed())


def _input_changed() -> AutomationCondition:
    return AC.any_deps_match(AC.data_version_changed()).with_label("an input's data version changed")


def _left_undone() -> AutomationCondition:
    """On a new cursor only (a fresh `dagster dev`, the demo starting): what is
    missing although it could run, which a crash or a failure left undone."""
    return (AC.initial_evaluation() & AC.missing()).with_label("missing on a new cursor")


def registration() -> AutomationCondition:
    """Register a case when the discovery sensor reports its files new or changed."""
    return (((AC.newly_missing() | AC.any_deps_updated()).since_last_handled() | _left_undone()) & _runnable()
            ).with_label("files new or changed")


def per_case() -> AutomationCondition:
    """A case's output: for a new case, or when an input's data version changed."""
    return (((AC.newly_missing() | _input_changed()).since_last_handled() | _left_undone()) & _runnable()
            ).with_label("new case or changed input")


def _pending() -> AutomationCondition:
    """Work that is running, or due: missing although its inputs are there and
    passed their checks, and not failed (a failed case must not hold others)."""
    due = (AC.missing() & ~AC.execution_failed() & ~AC.any_deps_missing()
           & AC.all_deps_blocking_checks_passed())
    return (AC.in_progress() | due).with_label("running or due")


def _upstream_busy(depth: int) -> AutomationCondition:
    """Something up to `depth` steps upstream is running or due.

    Dagster's `will_be_requested` sees only requests that can share the run, so
    a model that follows many cases asks instead whether any of them is still
    to be made."""
    pending = _pending()
    condition = pending
    for _ in range(depth - 1):
        condition = pending | AC.any_deps_match(condition)
    return AC.any_deps_match(condition).with_label(f"work up to {depth} steps upstream running or due")


def follows_cases(depth: int = 1) -> AutomationCondition:
    """A list or summary over every case: after any case's input updated, once
    none of the cases up to `depth` steps upstream is running or due.
    A case that failed does not hold it back (no `any_deps_missing`)."""
    something = AC.any_deps_match(~AC.missing())
    return (((AC.any_deps_updated().since_last_handled()) | (_left_undone() & something))
            & ~_upstream_busy(depth) & ~AC.in_progress()).with_label("follows its cases")


def retrains(cron: str, settle_depth: int) -> AutomationCondition:
    """A model's plans: first as soon as its inputs exist and the per-case work
    up to `settle_depth` steps upstream has settled; afterwards on the cron
    tick, when an input changed since the last training."""
    changed = _input_changed().since_last_handled()
    first = AC.missing() & (changed | (AC.initial_evaluation() & AC.any_deps_match(~AC.missing())))
    on_tick = ~AC.missing() & AC.cron_tick_passed(cron).since_last_handled() & changed
    # `changed` implies an input exists; a missing case must not hold the model back.
    return ((first | on_tick) & ~_upstream_busy(settle_depth) & ~AC.in_progress()
            ).with_label(f"first model, then on {cron} when its training set changed")


def trains() -> AutomationCondition:
    """Weights follow their plans' data version (the training manifest's digest)."""
    return (((AC.newly_missing() | _input_changed()).since_last_handled() | _left_undone()) & _runnable()
            ).with_label("plans changed")
