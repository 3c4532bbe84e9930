"""Benchmark result files are committed and read elsewhere: they carry no path of the machine that wrote them."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from result_files import portable, write_log, write_result  # noqa: E402


def _machine_folders() -> list[str]:
    return [str(Path(tempfile.gettempdir()).resolve()) + "/", str(Path.home()) + "/"]


def test_a_result_names_scratch_and_home_folders_by_placeholder(tmp_path):
    scratch = Path(tempfile.gettempdir()) / "bench_run_x" / "work"
    result = {"console": [f"data {scratch}/data, work {scratch}"], "model": str(Path.home() / "models" / "m"),
              "rows": [{"path": str(scratch / "a.nii.gz"), "dsc": 0.9}], "command": "python bench/x.py --out OUT"}
    out = write_result(result, tmp_path / "results" / "x.json")
    text = out.read_text()
    assert not any(folder in text for folder in _machine_folders())
    written = json.loads(text)
    assert written["rows"][0] == {"path": "<tmp>/bench_run_x/work/a.nii.gz", "dsc": 0.9}
    assert written["model"] == "~/models/m"
    assert written["command"] == result["command"]
    assert write_log(f"wrote {scratch}/log.txt\n", tmp_path / "x.log").read_text() == "wrote <tmp>/bench_run_x/work/log.txt\n"


def test_portable_keeps_what_is_not_a_machine_path():
    value = {"tumor": {"dsc": 0.41, "cases": 16}, "mode": "fastest", "flags": [True, None], "ratio": 2.1}
    assert portable(value) == value


def test_no_committed_result_file_holds_a_machine_path():
    files = [path for path in (REPO / "bench" / "results").iterdir() if path.suffix in {".json", ".log"}]
    assert files
    leaking = {path.name for path in files for folder in _machine_folders() if folder in path.read_text()}
    assert not leaking, leaking
