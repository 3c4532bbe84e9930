"""The demo's console: library output goes to the log, one line per stage,
failures named on standard error."""
import io
import logging
import os
import subprocess
import sys
import warnings

from flare_assets import progress
from flare_assets.console import Console, output_to_log, stage_summary
from flare_assets.pipeline import StageReport


def test_library_output_of_every_kind_goes_to_the_log(tmp_path, capfd):
    log_path = tmp_path / "logs" / "demo.log"
    with output_to_log(log_path) as streams:
        print("2026-01-01 00:00:00: Epoch 3")  # nnU-Net's print()
        sys.stdout.flush()
        os.write(2, b"written by a C library\n")
        subprocess.run([sys.executable, "-c", "print('a worker process')"], check=True)
        logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
        warnings.warn("a library warning")
        streams.out.write("for the console\n")
        streams.err.write("an error for the console\n")
    print("after the block")
    captured = capfd.readouterr()
    assert captured.out == "for the console\nafter the block\n"
    assert captured.err == "an error for the console\n"
    text = log_path.read_text()
    for line in ("Epoch 3", "written by a C library", "a worker process", "Context impl SQLiteImpl.",
                 "a library warning"):
        assert line in text, line


def test_a_stage_is_one_line_even_with_a_progress_bar():
    out, err = io.StringIO(), io.StringIO()
    ui = Console(out, err, bars=True)
    with progress.listening(ui):
        progress.stage_started("teacher_weights", 5, 14)
        for epoch in range(3):
            progress.advance("epoch", epoch + 1, 3, f"loss {1.0 / (epoch + 1):.3f}")
        progress.stage_finished(StageReport("teacher_weights", done=["all"], seconds=12.5))
        progress.stage_started("prediction", 12, 14)
        progress.expect(2, "case")
        progress.advance("case")
        progress.advance("case")
        progress.stage_finished(StageReport("prediction", done=["a"], skipped=["b"], failed={"c": "bad label"},
                                            seconds=3.0))
    assert "3/3 epochs" in out.getvalue() and "loss 0.333" in out.getvalue()  # the bar was drawn
    lines = [line.rsplit("\r", 1)[-1] for line in out.getvalue().split("\n") if line.strip("\r ")]
    assert len(lines) == 2
    assert lines[0].split() == ["[", "5/14]", "teacher_weights", "done", "12.5", "s"]
    assert lines[1].split()[:4] == ["[12/14]", "prediction", "predicted", "1"]
    assert "1 up to date, 1 FAILED" in lines[1]
    assert err.getvalue() == "    prediction failed for c: bad label\n"


def test_without_a_terminal_only_stage_lines_are_written():
    out, err = io.StringIO(), io.StringIO()
    ui = Console(out, err, bars=False, describe=lambda report: "trained 2 epochs")
    ui.stage_started("student_weights", 11, 14)
    ui.advance("epoch", 1, 2, "")
    ui.stage_finished(StageReport("student_weights", done=["all"], seconds=200))
    assert out.getvalue().split() == ["[11/14]", "student_weights", "trained", "2", "epochs", "3.3", "min"]
    ui.stage_started("teacher_plans", 4, 14)
    ui.stage_finished(StageReport("teacher_plans", failed={"all": "no cases to train the teacher on"}))
    assert "teacher_plans" in out.getvalue().splitlines()[-1] and "FAILED" in out.getvalue().splitlines()[-1]
    assert err.getvalue() == "    teacher_plans failed: no cases to train the teacher on\n"


def test_stage_summary_words():
    assert stage_summary(StageReport("tumor_subset", skipped=["all"])) == "up to date"
    assert stage_summary(StageReport("training_case", skipped=["a", "b"])) == "2 cases up to date"
    assert stage_summary(StageReport("training_case", done=["a"])) == "registered 1 case"
    assert stage_summary(StageReport("evaluation")) == "no cases"
