"""Manifests: exactly which cases and file hashes a global artifact consumed.

A manifest makes a training run reproducible and staleness visible: two
manifests with the same digest describe the same inputs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flare_core.io import write_json


@dataclass
class Manifest:
    """Cases consumed (id -> {role: sha256}) and cases left out (id -> reason)."""

    name: str
    cases: dict[str, dict[str, str]] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """Hash of the consumed inputs only, so details never cause retraining."""
        payload = json.dumps(self.cases, sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "digest": self.digest}

    def write(self, path: Path) -> Path:
        return write_json(self.to_dict(), path)

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        data = json.loads(Path(path).read_text())
        data.pop("digest", None)
        return cls(**data)
