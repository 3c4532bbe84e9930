"""Materialize a `gpu`-pool asset that holds its slot, in a process a test kills.

    python -m tests.assets.slot_holder DAGSTER_HOME MARKER_FILE
"""
import sys
import time
from pathlib import Path

from dagster import DagsterInstance, asset, materialize


def main(home: str, marker: str) -> None:
    @asset(pool="gpu")
    def long_model_step() -> None:
        Path(marker).write_text("holding the gpu slot")
        time.sleep(600)

    with DagsterInstance.from_config(home) as instance:
        materialize([long_model_step], instance=instance)


if __name__ == "__main__":
    main(*sys.argv[1:])
