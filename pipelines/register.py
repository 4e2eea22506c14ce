"""DVC stage / CLI: register the trained model; promote it to ``champion`` only past the gate.

Reads the MLflow run id from ``<model_dir>/training.json`` (written by ``train``), registers
the run's model as a new version with alias ``challenger``, compares it with the current
``champion`` (``params.yaml: register``) and writes the decision to ``registration.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipelines.params import section

log = logging.getLogger(__name__)


def register_model_dir(
    model_dir: Path, out: Path | None = None, params_path: str | Path = "params.yaml"
) -> dict[str, Any]:
    """Register and gate the model trained into ``model_dir``."""
    from models.registry import MODEL_NAME, GateConfig, register

    info_path = Path(model_dir) / "training.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{info_path}: train the model first (`repairqc train`)")
    run_id = json.loads(info_path.read_text(encoding="utf-8")).get("run_id")
    if not run_id:
        raise ValueError(f"{info_path}: the model was trained without MLflow logging")
    block = section(params_path, "register")
    name = block.pop("model_name", MODEL_NAME)
    decision = register(run_id, GateConfig(**block), name=name)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(decision, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    verb = "promoted to champion" if decision["promoted"] else "kept as challenger"
    log.info("%s v%s %s: %s", name, decision["version"], verb, "; ".join(decision["reasons"]))
    return decision
