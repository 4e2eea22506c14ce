"""The inspection queue (质检任务队列) and assignments.

``GET /v1/inspections/queue?community=…&date=…``: the orders flagged for mandatory inspection
(the latest decision of each order), ranked by expected harm = max(rework_risk,
dissatisfaction_prob) × severity(category, priority) from the policy's ``inspection_queue``,
at most the policy's capacity per community and day; undone orders of the previous
``carry_over_days`` stay in the queue. Status: ``done`` once an inspection result is recorded
(``POST /v1/outcomes``), ``overdue`` past the deadline (completion + the priority's
``deadline_hours``) while not done, ``assigned`` with an inspector, else ``open``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, status

from serving.deps import get_state, require
from serving.routes.outcomes import ERROR_RESPONSES, FieldErrorRoute, local_aware, store_errors
from serving.schemas import AssignIn, QueueOut
from serving.state import ServiceState

router = APIRouter(route_class=FieldErrorRoute)


def _today() -> dt.date:
    return (
        local_aware(dt.datetime.now(dt.UTC)).astimezone(dt.timezone(dt.timedelta(hours=8))).date()
    )


@router.get(
    "/v1/inspections/queue",
    response_model=QueueOut,
    summary="Today's inspection queue of a community, by expected harm (质检任务队列)",
    responses={404: {"description": "no stored order of that community"}, **ERROR_RESPONSES},
)
def queue(
    community: str | None = Query(
        None,
        min_length=1,
        max_length=64,
        description="小区 id (community_id); omitted: every community, each within capacity",
        examples=["C001"],
    ),
    date: dt.date | None = Query(  # noqa: B008
        None, description="the local day (Asia/Shanghai), default today", examples=["2024-05-02"]
    ),
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality")),  # noqa: B008
) -> dict[str, Any]:
    """Flagged orders of the day, ordered by expected harm, within capacity, with status."""
    if community is not None and not state.store.has_community(community):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"community {community} has no orders")
    return state.store.inspection_queue(community, date or _today(), state.policy.inspection_queue)


@router.post(
    "/v1/inspections/{order_id}/assign",
    summary="Assign an inspector to a flagged order (指派质检员)",
    responses={
        404: {"description": "the order was never scored"},
        409: {"description": "the order is not flagged, or already inspected"},
        **ERROR_RESPONSES,
    },
)
def assign(
    order_id: str,
    body: AssignIn,
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality")),  # noqa: B008
) -> dict[str, Any]:
    """Record the assignment (the latest wins; re-assigning is allowed until it is done)."""
    with store_errors():
        return state.store.assign_inspection(order_id, body.inspector)
