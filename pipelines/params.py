"""Reading ``params.yaml``: the one place pipeline configuration comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Load the whole params file (a missing file means all defaults)."""
    p = Path(path)
    if not p.exists():
        return {}
    return yaml.safe_load(p.read_text(encoding="utf-8")) or {}


def section(path: str | Path, name: str) -> dict[str, Any]:
    """One top-level block of params.yaml (empty when absent)."""
    return dict(load_params(path).get(name) or {})
