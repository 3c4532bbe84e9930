"""The loop both variant benches share: keep earlier variants of the same run, measure the named ones."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

from result_files import write_result


def measure_variants(out: Path, results: dict, same_run: Callable[[dict], bool], names: list[str],
                     run_variant: Callable[[str, Path], dict], scratch_prefix: str) -> None:
    """Fill results["variants"], writing `out` after each variant (a long run keeps what it measured)."""
    if out.is_file():  # variants measured earlier on the same run are kept; named ones are measured again
        earlier = json.loads(out.read_text())
        if same_run(earlier):
            results["variants"] = earlier.get("variants", {})
    with tempfile.TemporaryDirectory(prefix=scratch_prefix) as scratch:
        for name in names:
            results["variants"][name] = run_variant(name, Path(scratch))
            write_result(results, out)
