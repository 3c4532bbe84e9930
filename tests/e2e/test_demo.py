"""`python -m flare_assets.demo` as a person runs it (test profile): a short
console, one line per stage, the results table at the end, and all library
chatter in the log file the console names."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGES = ("training_case", "inference_case", "tumor_subset", "teacher_plans", "teacher_weights",
          "tumor_pseudo_label", "fused_labels", "label_quality", "label_quality_summary", "student_plans",
          "student_weights", "prediction", "evaluation", "evaluation_summary")
# What nnU-Net, Dagster and alembic print when nobody stops them.
CHATTER = ("Epoch ", "train_loss", "Pseudo dice", "Context impl", "Will assume non-transactional",
           "dagster - INFO", "BetaWarning", "Traceback")


def run_demo(tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "FLARE_PROFILE": "test",
           "FLARE_DEVICE": "cpu", "FLARE_DATA_ROOT": str(tmp_path / "data")}
    command = [sys.executable, "-m", "flare_assets.demo", "--work-root", str(tmp_path / "work"),
               "--train", "6", "--infer", "1"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=840)


def test_demo_prints_stages_and_results_and_keeps_the_rest_in_its_log(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", tmp_path / "dagster_home" / "dagster.yaml")
    first = run_demo(tmp_path)
    console = first.stdout + first.stderr
    assert first.returncode == 0, console
    lines = console.splitlines()
    assert len(lines) < 60, console
    assert not [c for c in CHATTER if c in console], console
    stages = [m.group(1) for line in lines if (m := re.match(r"\[ *\d+/14\] (\w+) ", line))]
    assert stages == list(STAGES), console
    assert re.search(r"teacher_weights +trained 2 epochs", console), console
    # The results table: a column per source, a row per class, and the tumor pseudo-labels' detection.
    assert re.search(r"^DSC / NSD +student +organ pseudo +partial-fused +organ-fused$", console, re.M), console
    assert re.search(r"^liver( +\d\.\d\d/\d\.\d\d){4}$", console, re.M), console
    assert re.search(r"^organs mean( +\d\.\d\d/\d\.\d\d){4}$", console, re.M), console
    assert re.search(r"^tumor pseudo-labels \(2 cases\): voxel precision (\d\.\d\d|-), recall \d\.\d\d", console,
                     re.M), console
    assert re.search(r"lesions: \d+ of \d+ found", console), console
    log_path = Path(re.search(r"^full log: (\S+)$", console, re.M).group(1))
    assert log_path.parent == tmp_path / "work" / "logs"
    log = log_path.read_text()
    assert "Epoch " in log and "Context impl" in log  # the chatter went to the log, not away

    again = run_demo(tmp_path)  # idempotent: nothing to do, the same results
    console = again.stdout + again.stderr
    assert again.returncode == 0, console
    stage_lines = [line for line in console.splitlines() if line.startswith("[")]
    assert len(stage_lines) == len(STAGES) and all("up to date" in line for line in stage_lines), console
    assert re.search(r"^liver( +\d\.\d\d/\d\.\d\d){4}$", console, re.M), console


def test_an_unexpected_error_reaches_the_console_with_the_log_path(tmp_path, monkeypatch, capfd):
    from flare_assets import demo

    for name, value in (("DAGSTER_HOME", tmp_path / "home"), ("FLARE_WORK_ROOT", tmp_path / "work"),
                        ("FLARE_DATA_ROOT", tmp_path / "data")):
        monkeypatch.setenv(name, str(value))

    def broken(args, ui, log_path):
        ui.stage_started("teacher_weights", 5, 14)
        print("nnU-Net chatter")
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(demo, "run", broken)
    assert demo.main([]) == 1
    captured = capfd.readouterr()
    assert captured.out == ""
    assert "the demo failed during teacher_weights: RuntimeError: CUDA out of memory" in captured.err
    log_path = Path(re.search(r"traceback and library output: (\S+)", captured.err).group(1))
    log = log_path.read_text()
    assert "nnU-Net chatter" in log and "Traceback" in log
