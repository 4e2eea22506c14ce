"""Which model the service serves, and what it says about itself.

The registry path resolves the ``champion`` alias through :mod:`models.registry`. Its version,
run id and metrics need the MLflow client; ``models.registry`` has no function for them yet,
so :func:`_registry_identity` imports mlflow here, lazily and only at load — remove it once
``models.registry`` offers an alias-info function (asked of the risk-model owner).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.estimators import HEADS, RiskModel


@dataclass(frozen=True)
class ModelIdentity:
    """What ``/v1/model`` reports and every decision records."""

    name: str
    version: str
    source: str
    run_id: str | None = None
    trained_until: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """The model version key of decisions (``name/version``)."""
        return f"{self.name}/{self.version}"

    def head_versions(self) -> dict[str, str]:
        """Version per head (both heads ship in one registered model)."""
        return {head: self.tag for head in HEADS}


class ModelLoadError(RuntimeError):
    """The model could not be loaded or is incompatible with this service."""


def _dir_identity(model_dir: Path, name: str) -> ModelIdentity:
    """Identity of a model directory: content hash as version, training.json / metrics.json."""
    pkl = model_dir / "artifacts" / "risk_model.pkl"
    digest = hashlib.sha256(pkl.read_bytes()).hexdigest()[:12] if pkl.exists() else "unknown"
    info: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    if (model_dir / "training.json").exists():
        info = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))
    if (model_dir / "metrics.json").exists():
        raw = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
        metrics = {k: float(v) for k, v in raw.items() if isinstance(v, int | float)}
    return ModelIdentity(
        name=name,
        version=f"dir-{digest}",
        source=str(model_dir),
        run_id=info.get("run_id"),
        trained_until=info.get("trained_until") or info.get("test_start") or info.get("until"),
        metrics=metrics,
    )


def check_compatible(model: Any) -> RiskModel:
    """Refuse anything that is not a usable two-head :class:`RiskModel`."""
    if not isinstance(model, RiskModel):
        raise ModelLoadError(f"not a RiskModel: {type(model).__name__}")
    missing = [h for h in HEADS if h not in model.heads]
    if missing:
        raise ModelLoadError(f"model lacks head(s) {missing}")
    for h in HEADS:
        head = model.heads[h]
        if not hasattr(head, "booster_") or list(head.feature_names_) != list(model.feature_names):
            raise ModelLoadError(f"head {h} is not fitted on the model's features")
    return model


def load_from_dir(model_dir: Path, name: str) -> tuple[RiskModel, ModelIdentity]:
    """Load a saved model directory (``repairqc train`` output)."""
    from models.registry import load_risk_model

    try:
        model = load_risk_model(Path(model_dir))
    except Exception as exc:  # any unpickling failure means "broken model"
        raise ModelLoadError(f"{model_dir}: {exc}") from exc
    return check_compatible(model), _dir_identity(Path(model_dir), name)


def _registry_identity(name: str, alias: str) -> ModelIdentity:
    """Version, run id, metrics of ``name@alias`` (workaround: see the module docstring)."""
    import mlflow
    from mlflow import MlflowClient

    from models.registry import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    mv = client.get_model_version_by_alias(name, alias)
    metrics: dict[str, float] = {}
    until = None
    if mv.run_id:
        run = client.get_run(mv.run_id)
        metrics = dict(run.data.metrics)
        until = run.data.params.get("until")
    return ModelIdentity(
        name=name,
        version=str(mv.version),
        source=f"models:/{name}@{alias}",
        run_id=mv.run_id,
        trained_until=until,
        metrics=metrics,
    )


def load_from_registry(name: str, alias: str) -> tuple[RiskModel, ModelIdentity]:
    """Load ``models:/name@alias`` through :mod:`models.registry` (the pyfunc's RiskModel)."""
    from models.registry import load_model

    try:
        identity = _registry_identity(name, alias)
        pyfunc = load_model(f"models:/{name}@{alias}")
        model = pyfunc.unwrap_python_model().model
    except ModelLoadError:
        raise
    except Exception as exc:  # registry unreachable, alias missing, broken artifact
        raise ModelLoadError(f"models:/{name}@{alias}: {exc}") from exc
    return check_compatible(model), identity
