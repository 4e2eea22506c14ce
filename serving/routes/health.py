"""Liveness, readiness and what model is served."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status

from serving.deps import get_state, require
from serving.schemas import ModelInfo
from serving.state import ServiceState

router = APIRouter()


@router.get("/health", summary="Alive (the process answers)")
def health() -> dict[str, str]:
    """Liveness: no dependency is checked, so a slow model load does not get us killed."""
    return {"status": "ok"}


@router.get("/ready", summary="Ready (models loaded, store reachable)")
def ready(request: Request, response: Response) -> dict[str, str]:
    """Readiness: 200 once the model is loaded, 503 before."""
    if getattr(request.app.state, "service", None) is None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"status": "loading"}
    return {"status": "ready"}


@router.get("/v1/model", response_model=ModelInfo, summary="The served model")
def model_info(
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("system", "quality")),  # noqa: B008
) -> ModelInfo:
    """Names, versions, run id, trained-until and evaluation metrics of both heads."""
    served = state.scorer.served
    ident = served.identity
    return ModelInfo(
        name=ident.name,
        version=ident.version,
        alias=None if state.settings.model_dir else state.settings.model_alias,
        source=ident.source,
        run_id=ident.run_id,
        trained_until=ident.trained_until,
        heads=ident.head_versions(),
        metrics=ident.metrics,
        reasons_mode=served.reasoner.mode,
        policy_version=state.policy.version,
    )
