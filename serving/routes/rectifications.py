"""Rectification items (问题整改): CRUD under ``/v1/rectifications`` (role ``quality``).

An item targets a cause (a category, a defect code, a technician and/or a community), has an
owner and a deadline, and moves ``open → in_progress → done → verified``; ``verified`` needs a
passed re-inspection and a failed one sends a done item back to ``in_progress``. ``overdue`` is
derived: past the deadline while not done. Every change is kept as an event (``history``);
evidence is only ever appended. ``DELETE`` withdraws an item opened by mistake (only while open
without any change); its history stays.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, status

from serving.deps import get_state, require
from serving.routes.outcomes import (
    ERROR_RESPONSES,
    UNPROCESSABLE,
    FieldErrorRoute,
    local_aware,
    store_errors,
)
from serving.schemas import RectificationIn, RectificationOut, RectificationUpdate
from serving.state import ServiceState
from serving.store.quality import RECTIFICATION_VIEW_STATUSES

router = APIRouter(route_class=FieldErrorRoute)
_404 = {404: {"description": "no such rectification item"}}
_409 = {409: {"description": "the status cannot move that way / the item has progress"}}


@router.post(
    "/v1/rectifications",
    response_model=RectificationOut,
    status_code=status.HTTP_201_CREATED,
    summary="Open a rectification item (新建整改项)",
    responses=ERROR_RESPONSES,
)
def create(
    body: RectificationIn,
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality")),  # noqa: B008
) -> dict[str, Any]:
    """Open an item; ``source_order_id``, when given, must be a stored order."""
    data = body.model_dump()
    data["deadline"] = local_aware(body.deadline)
    if body.source_order_id and not state.store.order_facts([body.source_order_id]):
        raise HTTPException(
            UNPROCESSABLE, [f"source_order_id: unknown order {body.source_order_id}"]
        )
    return state.store.create_rectification(data)


@router.get(
    "/v1/rectifications",
    response_model=list[RectificationOut],
    summary="Rectification items, by deadline (整改清单)",
    responses=ERROR_RESPONSES,
)
def list_items(
    status_: str | None = Query(
        None,
        alias="status",
        pattern="^(" + "|".join(RECTIFICATION_VIEW_STATUSES) + ")$",
        description="open, in_progress, done, verified or overdue",
    ),
    community: str | None = Query(None, max_length=64, description="cause_community_id"),
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality")),  # noqa: B008
) -> list[dict[str, Any]]:
    """Every item (derived status), optionally of one status or community."""
    return state.store.list_rectifications(status=status_, community_id=community)


@router.get(
    "/v1/rectifications/{rectification_id}",
    response_model=RectificationOut,
    summary="One rectification item with its history",
    responses={**_404, **ERROR_RESPONSES},
)
def get_item(
    rectification_id: str,
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality")),  # noqa: B008
) -> dict[str, Any]:
    """The item and every recorded change."""
    with store_errors():
        return state.store.get_rectification(rectification_id)


@router.patch(
    "/v1/rectifications/{rectification_id}",
    response_model=RectificationOut,
    summary="Update an item: progress, evidence, re-inspection (整改进度/复查)",
    responses={**_404, **_409, **ERROR_RESPONSES},
)
def update_item(
    rectification_id: str,
    body: RectificationUpdate,
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality")),  # noqa: B008
) -> dict[str, Any]:
    """Apply the given fields; status moves are checked, evidence is appended."""
    changes = body.model_dump(exclude_unset=True)
    if body.deadline is not None:
        changes["deadline"] = local_aware(body.deadline)
    with store_errors():
        return state.store.update_rectification(rectification_id, changes)


@router.delete(
    "/v1/rectifications/{rectification_id}",
    summary="Withdraw an item opened by mistake (history kept)",
    responses={**_404, **_409, **ERROR_RESPONSES},
)
def delete_item(
    rectification_id: str,
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality")),  # noqa: B008
) -> dict[str, Any]:
    """Only an untouched open item can go; anything with progress is closed instead."""
    with store_errors():
        return state.store.delete_rectification(rectification_id)
