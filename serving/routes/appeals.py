"""Appeals (申诉) of inspection results and of the labels.

A technician (through the property system, role ``system``, or the quality team) appeals with
a reason; a reviewer (role ``quality``) decides once. ``target``:

* ``inspection`` (default): a *failed* inspection result; ``upheld`` marks it overturned — it
  stays recorded, but no longer counts as a failure in dossiers, KPIs and ``repairqc export``.
* ``rework``: the rework link of an order (the repeat order was a different fault or caused by
  the resident); ``upheld`` overrides the order's ``rework`` label to 0.
* ``dissatisfaction``: the order's dissatisfaction (the complaint / low rating was not about
  the repair); ``upheld`` overrides its ``dissatisfied`` label to 0.

Label overrides (``models.labels.apply_label_overrides``) reach dossiers and reports read from
the store, and ``repairqc export`` writes them to ``label_overrides.csv`` for ``repairqc label``
(retraining). ``rejected`` leaves everything standing. One open or upheld appeal per result /
order and target; a rejected one may be appealed again with new grounds; the full history
(every appeal and its decision) is kept.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, status

from serving.deps import get_state, require
from serving.routes.outcomes import ERROR_RESPONSES, FieldErrorRoute, store_errors
from serving.schemas import AppealDecisionIn, AppealIn, AppealOut
from serving.state import ServiceState

router = APIRouter(route_class=FieldErrorRoute)


@router.post(
    "/v1/appeals",
    response_model=AppealOut,
    status_code=status.HTTP_201_CREATED,
    summary="Appeal an inspection result, a rework link or a dissatisfaction (维修人员申诉)",
    responses={
        404: {"description": "no such inspection result or order"},
        409: {
            "description": "nothing to appeal (result passed, no rework link, no complaint), "
            "or already an open/upheld appeal"
        },
        **ERROR_RESPONSES,
    },
)
def create(
    body: AppealIn,
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality", "system")),  # noqa: B008
) -> dict[str, Any]:
    """Record the appeal (``pending``); the technician must be the order's technician."""
    with store_errors():
        return state.store.create_appeal(
            body.inspection_id,
            body.technician_id,
            body.reason,
            target=body.target,
            order_id=body.order_id,
        )


@router.get(
    "/v1/appeals",
    response_model=list[AppealOut],
    summary="Appeals, oldest first",
    responses=ERROR_RESPONSES,
)
def list_appeals(
    status_: str | None = Query(
        None, alias="status", pattern="^(pending|upheld|rejected)$", description="filter"
    ),
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality")),  # noqa: B008
) -> list[dict[str, Any]]:
    """Every appeal, optionally of one status (``pending`` is the reviewer's to-do list)."""
    return state.store.list_appeals(status_)


@router.get(
    "/v1/appeals/{appeal_id}",
    response_model=AppealOut,
    summary="One appeal",
    responses={404: {"description": "no such appeal"}, **ERROR_RESPONSES},
)
def get_appeal(
    appeal_id: str,
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality")),  # noqa: B008
) -> dict[str, Any]:
    """The appeal and its decision, if any."""
    with store_errors():
        return state.store.get_appeal(appeal_id)


@router.post(
    "/v1/appeals/{appeal_id}/decision",
    response_model=AppealOut,
    summary="Decide an appeal: upheld overturns the result or the label (申诉裁决)",
    responses={
        404: {"description": "no such appeal"},
        409: {"description": "the appeal is already decided"},
        **ERROR_RESPONSES,
    },
)
def decide(
    appeal_id: str,
    body: AppealDecisionIn,
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality")),  # noqa: B008
) -> dict[str, Any]:
    """Record the final decision (a decided appeal cannot be decided again)."""
    with store_errors():
        return state.store.decide_appeal(appeal_id, body.decision, body.reviewer, body.note)
