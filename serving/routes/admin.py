"""Admin (reload, policy) and quality (decisions) routes; outcomes: ``serving.routes.outcomes``."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, status

from serving.deps import get_state, require
from serving.model_source import ModelLoadError
from serving.state import ServiceState
from serving.store import tables as T
from serving.store.quality import utc

router = APIRouter()


@router.post(
    "/v1/admin/reload",
    summary="Load the current champion atomically",
    responses={409: {"description": "the new model was refused; the old one keeps serving"}},
)
def reload(
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("admin")),  # noqa: B008
) -> dict[str, Any]:
    """Load and check the model, then swap; a broken or incompatible model is refused (409)."""
    old = state.scorer.served.identity.tag
    try:
        ident = state.reload()
    except ModelLoadError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"model refused, still serving {old}: {exc}"
        ) from exc
    return {"previous": old, "serving": ident.tag}


@router.get("/v1/admin/policy", summary="The inspection and sampling policy in force")
def policy(
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("admin")),  # noqa: B008
) -> dict[str, Any]:
    """The validated policy, with the solved sampling base."""
    return {**dataclasses.asdict(state.policy), "sampling_base": state.scorer.base}


@router.get("/v1/decisions/{order_id}", summary="Every recorded decision of an order")
def decisions(
    order_id: str,
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality")),  # noqa: B008
) -> list[dict[str, Any]]:
    """The audit trail of one order, oldest first (404 when it was never scored).

    Times as aware UTC (SQLite reads them back naive, PostgreSQL in the session's zone): one
    way to write a time, whatever the store.
    """
    with state.engine.connect() as conn:
        rows = conn.execute(
            sa.select(T.decisions)
            .where(T.decisions.c.order_id == order_id)
            .order_by(T.decisions.c.created_at)
        ).mappings()
        out = [{k: utc(v) if isinstance(v, dt.datetime) else v for k, v in r.items()} for r in rows]
    if not out:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"order {order_id} was never scored")
    return out
