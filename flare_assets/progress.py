"""Progress of the pipeline's long work, for a console that wants to show it.

The pipeline announces stages, and the steps it runs in-process announce
units of work (a training epoch, a case of a batch). Nobody listens by
default: under `dagster dev` these calls do nothing, and the same information
is in the run logs. The demo listens (`flare_assets.console`) to draw one
line per stage with a progress bar.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Protocol


class ProgressListener(Protocol):
    def stage_started(self, name: str, index: int, count: int) -> None:
        """Stage `index` (1-based) of `count` (0: not known ahead) begins."""

    def expect(self, total: int, unit: str) -> None:
        """The running stage will do `total` units (cases, epochs)."""

    def advance(self, unit: str, done: int | None, total: int | None, note: str) -> None:
        """One more unit is done (`done` None), or `done` of `total` units are."""

    def stage_finished(self, report) -> None:
        """The stage ended; `report` is its `pipeline.StageReport`."""


log = logging.getLogger(__name__)
_listener: ProgressListener | None = None


@contextlib.contextmanager
def listening(listener: ProgressListener) -> Iterator[ProgressListener]:
    """Send progress to `listener` while the block runs."""
    global _listener
    previous, _listener = _listener, listener
    try:
        yield listener
    finally:
        _listener = previous


def stage_started(name: str, index: int, count: int) -> None:
    _tell("stage_started", name, index, count)


def expect(total: int, unit: str) -> None:
    _tell("expect", total, unit)


def advance(unit: str, done: int | None = None, total: int | None = None, note: str = "") -> None:
    _tell("advance", unit, done, total, note)


def stage_finished(report) -> None:
    _tell("stage_finished", report)


def _tell(method: str, *args) -> None:
    """A display problem must never fail the work it reports on."""
    if _listener is None:
        return
    try:
        getattr(_listener, method)(*args)
    except Exception:  # noqa: BLE001
        log.warning("progress listener failed in %s", method, exc_info=True)
