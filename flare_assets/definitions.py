"""The code location: every definition autoloaded from `flare_assets/defs/`.

One module per method stage (cases, teacher, fusion, quality, student,
inference), the discovery sensors, Dagster's automation sensor and the
resources. Loaded as an installed module (`workspace.yaml`, `[tool.dg]` in
pyproject.toml), so step processes can import project classes by dotted
path, as nnU-Net does with its network classes.
"""
from pathlib import Path

from dagster import load_from_defs_folder

from flare_assets.defs.resources import build_resources  # noqa: F401  (the demo's and tests' resources)

defs = load_from_defs_folder(path_within_project=Path(__file__).parent)
