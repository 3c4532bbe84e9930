"""A console a person can read: one line per pipeline stage, a progress bar
for the long ones, and everything else in a log file.

`output_to_log` sends the process's standard output and error (at the file
descriptor level, so nnU-Net's print()s, worker processes and C libraries
follow), Python logging (Dagster, alembic, nnU-Net, ours) and warnings to a
log file, and hands back streams to the real console. `Console` listens to
`flare_assets.progress` and writes the stage lines there.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, TextIO

from tqdm import tqdm

if TYPE_CHECKING:  # the pipeline imports Dagster and the assets: not before the log is set up
    from flare_assets.pipeline import StageReport

log = logging.getLogger("flare.demo")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NAME_WIDTH, WHAT_WIDTH = 22, 40
MAX_FAILED_CASES_SHOWN = 5
# What a per-case stage does to a case, for its line ("registered 12 cases").
CASE_VERBS = {"training_case": "registered", "inference_case": "registered", "tumor_pseudo_label": "labelled",
              "fused_labels": "fused", "label_quality": "scored", "prediction": "predicted",
              "evaluation": "evaluated"}
UNITS = {"case": "cases", "epoch": "epochs"}


@dataclass
class Streams:
    out: TextIO  # the real standard output
    err: TextIO  # the real standard error
    log_path: Path


@contextlib.contextmanager
def output_to_log(log_path: Path) -> Iterator[Streams]:
    """While the block runs, file descriptors 1 and 2, the root logger (INFO)
    and warnings go to `log_path` (appended); the streams yielded write to
    the console. Everything is put back afterwards, even on an error."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    err = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    log_file = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(log_file.fileno(), 1)
    os.dup2(log_file.fileno(), 2)
    saved_streams = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = log_file  # also where they were not fds 1 and 2 (pytest, notebooks)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        yield Streams(out, err, log_path)
    finally:
        logging.captureWarnings(False)
        root.handlers, root.level = saved_handlers, saved_level
        log_file.flush()
        sys.stdout, sys.stderr = saved_streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        for stream in (out, err, log_file):
            stream.close()


class Console:
    """Stage lines and progress bars (a `progress.ProgressListener`).

    On a terminal (`bars`), the running stage shows a live line - a bar once
    its units (epochs, cases) are known, its elapsed time always - replaced
    by the stage's line when it ends. Elsewhere (a pipe, a CI log) only the
    stage lines are written. Every line also goes to the log.
    """

    def __init__(self, out: TextIO, err: TextIO, bars: bool = False,
                 describe: Callable[[StageReport], str | None] | None = None):
        self.out, self.err, self.bars = out, err, bars
        self.describe = describe or (lambda report: None)
        self.stage: str | None = None
        self._position = ""
        self._bar = None
        self._lock = threading.Lock()
        self._ticking: threading.Event | None = None

    # -- lines ---------------------------------------------------------
    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()
        log.info("%s", text)

    def error(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()
        log.error("%s", text)

    # -- progress.ProgressListener ---------------------------------------
    def stage_started(self, name: str, index: int, count: int) -> None:
        self.stage = name
        self._position = f"[{index:>{len(str(count))}}/{count}]" if count else f"[{index:>2}]"
        if self.bars:
            self._open_bar()

    def expect(self, total: int, unit: str) -> None:
        with self._lock:
            if self._bar is not None and total:
                self._bar.reset(total=total)
                self._bar.unit = UNITS.get(unit, unit)
                self._bar.bar_format = self._bar_format(known_total=True)
                self._bar.refresh()

    def advance(self, unit: str, done: int | None, total: int | None, note: str) -> None:
        with self._lock:
            bar = self._bar
            if bar is None:
                return
            if total and bar.total != total:
                bar.total = total
                bar.unit = UNITS.get(unit, unit)
                bar.bar_format = self._bar_format(known_total=True)
            if note:
                bar.set_postfix_str(note, refresh=False)
            bar.n = bar.n + 1 if done is None else done
            bar.refresh()  # units are seconds apart: draw every one

    def stage_finished(self, report: StageReport) -> None:
        self._close_bar()
        what = stage_summary(report, self.describe(report) if not report.failed else None)
        self.line(f"{self._position} {report.name:<{NAME_WIDTH}} {clip(what, WHAT_WIDTH):<{WHAT_WIDTH}} "
                  f"{format_seconds(report.seconds):>7}")
        failed = list(report.failed.items())
        for case_id, reason in failed[:MAX_FAILED_CASES_SHOWN]:
            self.error(f"    {report.name} failed{'' if case_id == 'all' else ' for ' + case_id}: {reason}")
        if len(failed) > MAX_FAILED_CASES_SHOWN:
            self.error(f"    ... and {len(failed) - MAX_FAILED_CASES_SHOWN} more failed cases (see the log)")
        self.stage = None

    def abandon(self) -> None:
        """The running stage will not finish (an exception, an interrupt)."""
        self._close_bar()

    # -- the live bar -----------------------------------------------------
    def _open_bar(self) -> None:
        with self._lock:
            self._bar = tqdm(total=None, desc=f"{self._position} {self.stage:<{NAME_WIDTH}}", file=self.out,
                             leave=False, bar_format=self._bar_format(known_total=False), mininterval=0.5)
        self._ticking = threading.Event()
        threading.Thread(target=self._tick, args=(self._ticking,), daemon=True).start()

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):  # keeps the elapsed time moving between units
            with self._lock:
                if self._bar is not None:
                    self._bar.refresh()

    def _close_bar(self) -> None:
        if self._ticking is not None:
            self._ticking.set()
            self._ticking = None
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    @staticmethod
    def _bar_format(known_total: bool) -> str:
        if known_total:
            return "{desc} {bar:20} {n_fmt}/{total_fmt} {unit}  {elapsed}<{remaining}{postfix}"
        return "{desc} running  {elapsed}"


def stage_summary(report: StageReport, detail: str | None = None) -> str:
    """What a stage did, in a few words."""
    if report.done == ["all"] or report.failed.get("all") is not None or report.skipped == ["all"]:
        if "all" in report.failed:
            return "FAILED"
        return detail or ("done" if report.done else "up to date")
    parts = []
    if report.done:
        verb = CASE_VERBS.get(report.name, "did")
        parts.append(f"{verb} {_cases(len(report.done))}")
    if report.skipped:
        parts.append(f"{len(report.skipped)} up to date" if parts else f"{_cases(len(report.skipped))} up to date")
    if report.failed:
        parts.append(f"{len(report.failed)} FAILED")
    return ", ".join(parts) or "no cases"


def _cases(n: int) -> str:
    return f"{n} case" if n == 1 else f"{n} cases"


def format_seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
