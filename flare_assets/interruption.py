"""Stopping between steps on Ctrl-C or `kill` (SIGINT, SIGTERM), and saying so.

Dagster turns an interrupt that arrives during a step into that step's
failure: the run is marked failed and `materialize` returns. A driver that
then went on to the next step would carry on after the user asked it to
stop. Inside `stopping_on_signals()` both signals interrupt the running step
as Ctrl-C does (Dagster maps SIGTERM to its own handler while a step runs),
and every signal that arrives is noted through Python's wakeup file
descriptor, which sees a signal whichever handler then runs.
`raise_if_stop_requested()` after each run turns a noted signal into
`StopRequested`, so the driver stops cleanly and says which signal it was.
"""
from __future__ import annotations

import contextlib
import os
import signal
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pipe: dict[str, int] = {}
_noted: list[int] = []


class StopRequested(KeyboardInterrupt):
    """A stop the user asked for, by `signal_number`."""

    def __init__(self, signal_number: int):
        self.signal_number = int(signal_number)
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        return signal.Signals(self.signal_number).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[None]:
    """Stop on SIGINT / SIGTERM: interrupt the current step, note the signal (main thread only)."""
    _noted.clear()
    read_end, write_end = os.pipe()
    for end in (read_end, write_end):
        os.set_blocking(end, False)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    _pipe["read"] = read_end

    def on_signal(signal_number: int, _frame) -> None:
        _noted.append(signal_number)
        raise StopRequested(signal_number)

    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    for number in STOP_SIGNALS:
        signal.signal(number, on_signal)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(previous_fd)
        _pipe.pop("read", None)
        os.close(read_end)
        os.close(write_end)
        _noted.clear()  # a later run in this process starts unstopped


def stop_signal() -> int | None:
    """The last stop signal that arrived inside `stopping_on_signals()`, if any."""
    read_end = _pipe.get("read")
    if read_end is not None:
        with contextlib.suppress(BlockingIOError):
            _noted.extend(n for n in os.read(read_end, 512) if n in STOP_SIGNALS)
    return _noted[-1] if _noted else None


def raise_if_stop_requested() -> None:
    """Raise StopRequested if a stop signal has arrived."""
    number = stop_signal()
    if number is not None:
        raise StopRequested(number)
