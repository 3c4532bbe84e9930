"""Writing a benchmark's result files: atomically, and free of this machine's paths.

A result file is committed and read on other machines, so the scratch folders a
run used (under the temporary folder) and the home folder are written as
`<tmp>` and `~`; what a path means stays readable, where it lay does not leak.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from flare_core.io import write_text

TEMPORARY = "<tmp>"


def portable_text(text: str) -> str:
    """text with the temporary folder written as <tmp> and the home folder as ~."""
    for folder, placeholder in ((Path(tempfile.gettempdir()).resolve(), TEMPORARY),
                                (Path(tempfile.gettempdir()), TEMPORARY), (Path.home(), "~")):
        if str(folder) not in ("/", ""):
            text = text.replace(str(folder) + "/", placeholder + "/")
    return text


def portable(value: Any) -> Any:
    """value (JSON-like) with portable_text applied to every string in it."""
    if isinstance(value, str):
        return portable_text(value)
    if isinstance(value, dict):
        return {portable(key): portable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(item) for item in value]
    return value


def write_result(result: Any, out: Path, indent: int = 1, sort_keys: bool = False) -> Path:
    """Write result as JSON to out, atomically, without this machine's paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(portable(result), indent=indent, sort_keys=sort_keys, default=str) + "\n"
    return write_text(text, out)


def write_log(text: str, out: Path) -> Path:
    """Write a benchmark's human-readable summary, atomically, without this machine's paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text(portable_text(text), out)
