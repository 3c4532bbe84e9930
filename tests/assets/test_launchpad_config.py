"""A run's config (the launchpad, a backfill's config) changes only the run
profile fields it names; every other field keeps its FLARE_* value."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance, Definitions, asset, define_asset_job

from flare_assets.defs.resources import code_location_resources
from flare_assets.resources import RunProfile

REPO = Path(__file__).resolve().parents[2]


def _profile_a_run_sees(run_config: dict) -> dict:
    seen = {}

    @asset
    def probe(run_profile: RunProfile) -> None:
        seen.update(name=run_profile.name, device=run_profile.device, student_epochs=run_profile.student_epochs,
                    student_patch=run_profile.settings.student.plan.patch_size)

    definitions = Definitions(assets=[probe], resources=code_location_resources(),
                              jobs=[define_asset_job("probe_job")])
    with DagsterInstance.ephemeral() as instance:
        definitions.resolve_job_def("probe_job").execute_in_process(instance=instance, run_config=run_config)
    return seen


def test_a_run_that_sets_the_epochs_keeps_the_environments_profile(monkeypatch):
    monkeypatch.setenv("FLARE_PROFILE", "test")
    monkeypatch.setenv("FLARE_DEVICE", "cpu")
    monkeypatch.delenv("FLARE_STUDENT_EPOCHS", raising=False)
    default = _profile_a_run_sees({})
    longer = _profile_a_run_sees({"resources": {"run_profile": {"config": {"student_epochs": 3}}}})
    assert default["name"] == longer["name"] == "test"
    assert default["device"] == longer["device"] == "cpu"
    assert (default["student_epochs"], longer["student_epochs"]) == (None, 3)
    assert longer["student_patch"] == default["student_patch"]  # the test profile's network, not the cpu one's


def test_the_code_location_binds_the_profile_so_a_run_overrides_field_by_field():
    code = ("import json; from dagster import validate_run_config; from flare_assets.definitions import defs; "
            "job = defs.resolve_job_def('student_weights_job'); "
            "config = validate_run_config(job, {'resources': {'run_profile': {'config': {'student_epochs': 300}}}}); "
            "print(json.dumps(config['resources']['run_profile']['config']))")
    env = {**os.environ, "FLARE_PROFILE": "flare23", "FLARE_INFERENCE_MODE": "fast"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads(done.stdout.strip().splitlines()[-1])
    assert (config["name"], config["inference_mode"], config["student_epochs"]) == ("flare23", "fast", 300)
