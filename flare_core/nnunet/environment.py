"""Pointing nnU-Net v2 at a work root, choosing the device and CPU threads.

nnU-Net finds its folders through the environment variables nnUNet_raw,
nnUNet_preprocessed and nnUNet_results. In nnunetv2 2.8 `nnunetv2.paths`
holds lazy objects that read `os.environ` on every use, and every other module
imports those objects, so setting the variables is enough even after nnunetv2
was imported. Older releases bound plain strings at import time; for those,
`use_work_root` also rebinds the names in every loaded nnunetv2 module.

`nnUNet_n_proc_DA` (augmentation worker processes) is read each time a
trainer or planner asks for it, so it can be changed per phase with
`scoped_env`: planning needs >= 1 (it calls torch.set_num_threads with it),
CPU training is fastest with 0 (augmentation in the training process).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from flare_core.layout import WorkLayout

log = logging.getLogger(__name__)

_FOLDER_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@dataclass(frozen=True)
class NnunetFolders:
    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def of(cls, work: WorkLayout | Path | str) -> "NnunetFolders":
        layout = work if isinstance(work, WorkLayout) else WorkLayout(Path(work))
        return cls(layout.nnunet_raw, layout.nnunet_preprocessed, layout.nnunet_results)

    def as_env(self) -> dict[str, str]:
        return dict(zip(_FOLDER_VARIABLES, (str(self.raw), str(self.preprocessed), str(self.results))))


def use_work_root(work: WorkLayout | Path | str) -> NnunetFolders:
    """Make nnU-Net read and write under `work` (folders are created)."""
    folders = NnunetFolders.of(work)
    for variable, value in folders.as_env().items():
        Path(value).mkdir(parents=True, exist_ok=True)
        os.environ[variable] = value
    _rebind_eager_paths(folders.as_env())
    return folders


def _rebind_eager_paths(values: dict[str, str]) -> None:
    """Only for nnunetv2 versions that copied the folder strings at import."""
    paths = sys.modules.get("nnunetv2.paths")
    if paths is None or all(not isinstance(getattr(paths, v, None), (str, type(None))) for v in values):
        return  # not imported yet, or lazy (2.8): nothing is stale
    for name, module in list(sys.modules.items()):
        if name.startswith("nnunetv2") and module is not None:
            for variable, value in values.items():
                if isinstance(getattr(module, variable, 0), (str, type(None))):
                    setattr(module, variable, value)


@contextlib.contextmanager
def scoped_env(**variables: str | int | None) -> Iterator[None]:
    """Set environment variables for the duration of a block (None = unset)."""
    saved = {k: os.environ.get(k) for k in variables}
    try:
        for key, value in variables.items():
            _set_env(key, value)
        yield
    finally:
        for key, value in saved.items():
            _set_env(key, value)


def _set_env(key: str, value: str | int | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = str(value)


def select_device(preference: str | torch.device = "auto") -> torch.device:
    """`auto`: CUDA when available, else CPU; `cpu`/`cuda` (or `cuda:N`) force
    (cuda fails loudly when absent). A `torch.device` is taken as it is."""
    if isinstance(preference, torch.device):
        return preference
    preference = (preference or "auto").lower()
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cpu":
        return torch.device("cpu")
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
        return torch.device(preference)
    raise ValueError(f"unknown device preference {preference!r}; use 'auto', 'cpu' or 'cuda'")


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and containers' cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: `threads`, or every available CPU.

    torch would otherwise pick the host's core count, which oversubscribes a
    container limited to fewer CPUs.
    """
    n = threads if threads and threads > 0 else available_cpus()
    torch.set_num_threads(n)
    return n


def default_augmentation_workers(device: torch.device) -> int:
    """Augmentation processes per training: none on CPU (they would compete with
    the network for the same cores), up to 12 beside a GPU (nnU-Net's default)."""
    if device.type == "cpu":
        return 0
    return max(1, min(12, available_cpus() - 1))


def cpu_has_native_bfloat16() -> bool:
    """True on x86 CPUs with AVX-512 BF16 or AMX-BF16 (Linux /proc/cpuinfo flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags
