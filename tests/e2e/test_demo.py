"""`python -m flare_assets.demo` as a person runs it (test profile): a short
console, one line per stage, the results table at the end, and all library
chatter in the log file the console names. Then a real `dagster dev` with its
daemon on the same instance and roots finds nothing to do."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from flare_core.io import read_volume

from tests.e2e.dagster_dev import dagster_dev, graphql

REPO = Path(__file__).resolve().parents[2]
STAGES = ("training_case", "inference_case", "tumor_subset", "teacher_plans", "teacher_weights",
          "tumor_pseudo_label", "fused_labels", "label_quality", "label_quality_summary", "student_plans",
          "student_weights", "prediction", "evaluation", "evaluation_summary")
# What nnU-Net, Dagster and alembic print when nobody stops them.
CHATTER = ("Epoch ", "train_loss", "Pseudo dice", "Context impl", "Will assume non-transactional",
           "dagster - INFO", "BetaWarning", "Traceback")


def _demo_command(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "FLARE_PROFILE": "test",
           "FLARE_DEVICE": "cpu", "FLARE_DATA_ROOT": str(tmp_path / "data")}
    command = [sys.executable, "-m", "flare_assets.demo", "--work-root", str(tmp_path / "work"),
               "--train", "6", "--infer", "1", "--size", "tiny"]
    return command, env


def _fresh_home(tmp_path: Path) -> None:
    (tmp_path / "dagster_home").mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", tmp_path / "dagster_home" / "dagster.yaml")


def run_demo(tmp_path: Path) -> subprocess.CompletedProcess:
    command, env = _demo_command(tmp_path)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=840)


@pytest.fixture(scope="module")
def demo_once(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One uninterrupted demo (the reference the interrupted one must equal)."""
    tmp_path = tmp_path_factory.mktemp("demo")
    _fresh_home(tmp_path)
    return tmp_path, run_demo(tmp_path)


def test_demo_prints_stages_and_results_and_keeps_the_rest_in_its_log(demo_once):
    tmp_path, first = demo_once
    console = first.stdout + first.stderr
    assert first.returncode == 0, console
    lines = console.splitlines()
    assert len(lines) < 60, console
    assert not [c for c in CHATTER if c in console], console
    stages = [m.group(1) for line in lines if (m := re.match(r"\[ *\d+\] (\w+) ", line))]
    assert sorted(stages) == sorted(STAGES), console  # each step once, in an order the graph allows
    for before, after in [("training_case", "tumor_subset"), ("teacher_weights", "tumor_pseudo_label"),
                          ("fused_labels", "student_plans"), ("student_weights", "prediction"),
                          ("evaluation", "evaluation_summary")]:
        assert stages.index(before) < stages.index(after), console
    assert re.search(r"teacher_weights +trained 2 epochs", console), console
    assert "generated a synthetic tiny data set: 6 training and 1 inference cases" in console, console
    assert json.loads((tmp_path / "data" / "phantom.json").read_text())["size"] == "tiny"  # --size reached it
    # The results table: a column per source, a row per class, and the tumor pseudo-labels' detection.
    assert re.search(r"^DSC / NSD +student +organ pseudo +partial-fused +organ-fused$", console, re.M), console
    assert re.search(r"^liver( +\d\.\d\d/\d\.\d\d){4}$", console, re.M), console
    assert re.search(r"^organs mean( +\d\.\d\d/\d\.\d\d){4}$", console, re.M), console
    assert re.search(r"^tumor pseudo-labels \(2 cases\): voxel precision (\d\.\d\d|-), recall \d\.\d\d", console,
                     re.M), console
    assert re.search(r"lesions: \d+ of \d+ found", console), console
    assert re.search(r"found by organ: (\w+ \d+ of \d+|no true lesion)", console), console
    log_path = Path(re.search(r"^full log: (\S+)$", console, re.M).group(1))
    assert log_path.parent == tmp_path / "work" / "logs"
    log = log_path.read_text()
    assert "Epoch " in log and "Context impl" in log  # the chatter went to the log, not away

    again = run_demo(tmp_path)  # idempotent: nothing to do, the same results
    console = again.stdout + again.stderr
    assert again.returncode == 0, console
    assert [line for line in console.splitlines() if line.startswith("[")] == [], console
    assert "nothing to do: every asset is up to date" in console, console
    assert re.search(r"^liver( +\d\.\d\d/\d\.\d\d){4}$", console, re.M), console

    _dagster_dev_finds_nothing_to_do(tmp_path)


SENSORS = """
query {
  repositoriesOrError {
    ... on RepositoryConnection { nodes { sensors { name sensorState { ticks(limit: 20) { status } } } } }
  }
}
"""


def _dagster_dev_finds_nothing_to_do(tmp_path: Path) -> None:
    """The demo and the UI are one machine: the daemon's sensors tick, nothing runs."""
    home = tmp_path / "dagster_home"
    with DagsterInstance.from_config(str(home)) as instance:
        runs_before = instance.get_runs_count()
    env = {"FLARE_PROFILE": "test", "FLARE_DEVICE": "cpu", "FLARE_DATA_ROOT": str(tmp_path / "data"),
           "FLARE_WORK_ROOT": str(tmp_path / "work"), "FLARE_SENSORS": "on"}
    with dagster_dev(home, env, tmp_path / "dagster_dev.log") as port:
        ticks = _wait_for_ticks(port, {"flare_automation", "training_case_sensor", "inference_case_sensor",
                                       "dead_run_sensor"},
                                at_least=2, timeout=240)
    log = (tmp_path / "dagster_dev.log").read_text()[-3000:]
    assert all(len(t) >= 2 for t in ticks.values()), (ticks, log)
    assert all(status in ("SKIPPED", "SUCCESS") for t in ticks.values() for status in t), (ticks, log)
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs_count() == runs_before, "dagster dev redid work the demo had done"
        assert instance.get_backfills() == []


def _wait_for_ticks(port: int, names: set[str], at_least: int, timeout: float) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    ticks: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        nodes = graphql(port, SENSORS)["repositoriesOrError"]["nodes"]
        ticks = {s["name"]: [t["status"] for t in s["sensorState"]["ticks"]]
                 for node in nodes for s in node["sensors"] if s["name"] in names}
        if set(ticks) == names and all(len(t) >= at_least for t in ticks.values()):
            break
        time.sleep(5)
    return ticks


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


def _start_demo(tmp_path: Path) -> subprocess.Popen:
    command, env = _demo_command(tmp_path)
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _when_exists(process: subprocess.Popen, pattern: str, root: Path, timeout: float = 600,
                 besides: set[Path] = frozenset()) -> None:
    """Wait until a file matching `pattern` (other than those in `besides`) exists."""
    deadline = time.monotonic() + timeout
    while not set(root.glob(pattern)) - besides:
        assert process.poll() is None, f"the demo ended before {pattern} appeared: {process.stdout.read()}"
        assert time.monotonic() < deadline, f"{pattern} never appeared"
        time.sleep(0.05)


def _kill_when_exists(tmp_path: Path, pattern: str) -> None:
    """Start the demo, kill -9 it as soon as a new `pattern` file appears, and
    check that the kill left a run marked as running (a dead run's slot)."""
    work = tmp_path / "work"
    before = set(work.glob(pattern))
    demo = _start_demo(tmp_path)
    _when_exists(demo, pattern, work, besides=before)
    demo.send_signal(signal.SIGKILL)
    demo.wait(timeout=60)
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        assert instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])), f"kill -9 at {pattern}: no dead run"


def _weights_differ(first: Path, second: Path) -> list[str]:
    """Names of the student's final tensors that differ between two work roots."""
    from flare_core.nnunet.model_loading import read_checkpoint

    pattern = "nnUNet_results/Dataset502_*/*/fold_all/checkpoint_final.pth"
    a, b = (read_checkpoint(next(root.glob(pattern)))["network_weights"] for root in (first, second))
    return [k for k in a if not np.array_equal(a[k].float().numpy(), b[k].float().numpy())]


def _label_maps(work: Path) -> dict[str, np.ndarray]:
    maps = {}
    for folder in ("tumor_pseudo_labels", "organ_fused_labels", "predictions"):
        # not the dot-named temporary files a kill mid-write leaves (removed once stale)
        for path in sorted((work / folder).glob("[!.]*.nii.gz")):
            maps[f"{folder}/{path.name}"] = read_volume(path, path.name)[0]
    return maps


def test_a_demo_stopped_by_sigterm_or_killed_resumes_to_the_uninterrupted_results(demo_once, tmp_path):
    """kill -9 while tumor pseudo-labels are written; SIGTERM while fused labels
    are written (the demo stops after that step and says so, exit 143); kill -9
    while the student trains and while predictions are written. Each kill
    leaves a run holding the `gpu` slot; the next demo frees it and goes on.
    The last demo finishes; every pseudo-label and fused label equals the
    uninterrupted demo's (same data, same seed), and so, all but a tolerance,
    does every prediction."""
    _fresh_home(tmp_path)
    work = tmp_path / "work"
    _kill_when_exists(tmp_path, "tumor_pseudo_labels/*.nii.gz")

    fused_before = set(work.glob("organ_fused_labels/*.nii.gz"))
    demo = _start_demo(tmp_path)
    _when_exists(demo, "organ_fused_labels/*.nii.gz", work, besides=fused_before)
    demo.send_signal(signal.SIGTERM)
    console = demo.communicate(timeout=180)[0]
    assert demo.returncode == 143, console
    assert re.search(r"stopped by SIGTERM during (fused_labels|organ_fused_label)", console), console
    assert not re.search(r"^\[ *\d+\] student_plans", console, re.M), "the demo carried on after SIGTERM"
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        assert not instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])), "a run was left running"

    _kill_when_exists(tmp_path, "nnUNet_results/Dataset502_*/*/fold_all/*.pth")
    _kill_when_exists(tmp_path, "predictions/*.nii.gz")

    finished = run_demo(tmp_path)
    console = finished.stdout + finished.stderr
    assert finished.returncode == 0, console
    assert re.search(r"^organs mean( +\d\.\d\d/\d\.\d\d){4}$", console, re.M), console
    reference, resumed = _label_maps(demo_once[0] / "work"), _label_maps(work)
    assert resumed.keys() == reference.keys() and any(k.startswith("predictions/") for k in reference)
    labels = [name for name in reference if not name.startswith("predictions/")]
    different = [name for name in labels if not np.array_equal(reference[name], resumed[name])]
    assert not different, different
    # The student's resume is bit-exact in tests/core/test_crash_safety.py. Here the
    # kill lands wherever the machine's load puts it (mid-epoch, mid-save, after the
    # final save); one CI run out of several found one prediction that was not identical,
    # so the prediction is held to near-identity, with the figures if it fails.
    for name in (n for n in reference if n.startswith("predictions/")):
        assert reference[name].shape == resumed[name].shape, name
        agreement = float(np.mean(reference[name] == resumed[name]))
        assert agreement >= 0.99, (name, agreement, _weights_differ(demo_once[0] / "work", work))
