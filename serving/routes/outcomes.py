"""``POST /v1/outcomes``: follow-up and inspection results in; ``GET /v1/outcomes/{order_id}``.

Validation is strict and names the field: shape errors (a rating of 7, an unknown field, a
photo that is not an http(s) URL, a failed inspection without a defect code, a third-party
result without its agency) and facts only the store knows (the order is unknown, the result
predates the order's completion, it lies in the future) all come back as one 422 whose
``detail`` lists every problem as ``"<path>: <problem>"``, e.g.
``"followups[0].rating: Input should be less than or equal to 5"``.

Unknown ``order_id``: 422, not 404 — the order id is a field of the body, and the request as a
whole is what is wrong (the outcome arrived before the order was ever sent to
``POST /v1/score``; send the order first). A request is atomic: nothing is recorded unless every
outcome is valid. Re-sending an identical outcome is safe: it is reported as ``duplicate`` and
adds nothing; a *different* outcome for the same order is a new record (history is kept, the
latest wins for reads).
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from models.schemas import TIMEZONE
from serving.deps import get_state, require
from serving.schemas import FollowupIn, InspectionIn, OutcomesIn, OutcomesOut
from serving.state import ServiceState
from serving.store.quality import ConflictError, InvalidError, NotFoundError, utc

#: Clock skew tolerated between the caller's and the service's clock for "not in the future".
CLOCK_SKEW = dt.timedelta(minutes=5)
_LOCAL = dt.timezone(dt.timedelta(hours=8), TIMEZONE)  # Asia/Shanghai has no DST
_FIELD_MSG = re.compile(r"^([a-z_]+): (.+)$", re.S)
UNPROCESSABLE = status.HTTP_422_UNPROCESSABLE_CONTENT


def field_error(err: dict[str, Any]) -> str:
    """A pydantic error as ``"<path>: <problem>"`` (``followups[0].rating: …``)."""
    loc = list(err.get("loc") or ())
    if err.get("type") == "json_invalid":  # loc is a character position, not a field
        at = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        return f"body: {err.get('msg', 'invalid JSON')}{at}"
    if loc and loc[0] in ("body", "query", "path"):
        where_kind = loc.pop(0)
    else:
        where_kind = ""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    m = _FIELD_MSG.match(msg)
    if m and not path.endswith(m.group(1)):  # a model-level check naming its field
        path = f"{path}.{m.group(1)}" if path else m.group(1)
        msg = m.group(2)
    return f"{path or where_kind or 'body'}: {msg}"


class FieldErrorRoute(APIRoute):
    """Routes whose 422 lists ``"<path>: <problem>"`` strings (auth is still checked first)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The default handler, with validation errors rewritten as field messages."""
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise HTTPException(UNPROCESSABLE, [field_error(e) for e in exc.errors()]) from exc

        return route


@contextmanager
def store_errors() -> Iterator[None]:
    """Store refusals as HTTP errors: unknown 404, wrong state 409, invalid field 422."""
    try:
        yield
    except NotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except ConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except InvalidError as exc:
        raise HTTPException(UNPROCESSABLE, [str(exc)]) from exc


def local_aware(value: dt.datetime) -> dt.datetime:
    """A given time as aware UTC; without an offset it is Asia/Shanghai (the contract's rule)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_LOCAL)
    return value.astimezone(dt.UTC)


def check_outcomes(
    facts: dict[str, dict[str, Any]],
    followups: list[FollowupIn],
    inspections: list[InspectionIn],
    now: dt.datetime,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """What only the store can tell: order known, time after completion and not in the future.

    ``facts`` is :meth:`Store.order_facts` of the ids. Returns the store rows of both kinds
    (times aware UTC) and every problem as ``"<path>: <problem>"`` (API and CLI share this).
    """
    errors: list[str] = []

    def check(where: str, order_id: str, name: str, at: dt.datetime) -> None:
        fact = facts.get(order_id)
        if fact is None:
            errors.append(
                f"{where}.order_id: unknown order {order_id} (send it to POST /v1/score first)"
            )
            return
        done = utc(fact.get("completed_at"))
        if done is not None and at < done:
            shown = done.astimezone(_LOCAL).strftime("%Y-%m-%d %H:%M:%S")
            errors.append(f"{where}.{name}: before the order's completion ({shown})")
        if at > now + CLOCK_SKEW:
            errors.append(f"{where}.{name}: in the future")

    fu_rows, in_rows = [], []
    for i, f in enumerate(followups):
        at = local_aware(f.followed_up_at)
        check(f"followups[{i}]", f.order_id, "followed_up_at", at)
        fu_rows.append({**f.model_dump(), "followed_up_at": at})
    for i, r in enumerate(inspections):
        at = local_aware(r.inspected_at)
        check(f"inspections[{i}]", r.order_id, "inspected_at", at)
        in_rows.append({**r.model_dump(), "inspected_at": at})
    return fu_rows, in_rows, errors


router = APIRouter(route_class=FieldErrorRoute)

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or unknown API key"},
    403: {"description": "the key's role may not do this"},
    422: {
        "description": "invalid input: every problem as `<path>: <problem>`",
        "content": {
            "application/json": {
                "example": {
                    "detail": [
                        "followups[0].rating: Input should be less than or equal to 5",
                        "inspections[0].order_id: unknown order WO1 (send it to POST "
                        "/v1/score first)",
                    ]
                }
            }
        },
    },
}


@router.post(
    "/v1/outcomes",
    response_model=OutcomesOut,
    summary="Record follow-up and inspection results (回访、内部质检、第三方抽检)",
    responses=ERROR_RESPONSES,
)
def record_outcomes(
    body: OutcomesIn,
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality", "system")),  # noqa: B008
) -> OutcomesOut:
    """Validate every outcome, then record all of them (atomic; identical re-sends are no-ops).

    An inspection result makes its order *done* in the inspection queue; a failed one can be
    appealed (``POST /v1/appeals`` with the returned ``inspections[i].id``).
    """
    ids = {f.order_id for f in body.followups} | {r.order_id for r in body.inspections}
    facts = state.store.order_facts(ids)
    fu, ins, errors = check_outcomes(facts, body.followups, body.inspections, utc(_now()))
    if errors:
        raise HTTPException(UNPROCESSABLE, errors)
    with store_errors():
        got_fu = state.store.add_followups(fu)
        got_in = state.store.add_inspections(ins)
    refresh_history(state, {g["order_id"] for g in got_fu if not g["duplicate"]})
    dup = sum(r["duplicate"] for r in got_fu + got_in)
    return OutcomesOut(
        recorded=len(got_fu) + len(got_in) - dup,
        duplicates=dup,
        followups=got_fu,
        inspections=got_in,
    )


def refresh_history(state: ServiceState, order_ids: set[str]) -> None:
    """Hand orders whose follow-ups were just folded into the store to the served history.

    A follow-up changes a *stored* order (its rating / comment / complaint), which later
    scores read as history (the technician's and home's past outcomes, the recent-complaint
    rule): the history cache folds such corrections in at its next rebuild.
    """
    if not order_ids:
        return
    frame = state.store.orders_frame(order_ids)
    add = state.cache.add
    if "corrected" in inspect.signature(add).parameters:
        add(frame.iloc[:0], corrected=frame)
    else:  # a cache without a corrections channel: re-added orders replace their old rows
        add(frame)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@router.get(
    "/v1/outcomes/{order_id}",
    summary="Everything recorded after an order's completion (its quality history)",
    responses={404: {"description": "unknown order"}, **ERROR_RESPONSES},
)
def order_outcomes(
    order_id: str,
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality")),  # noqa: B008
) -> dict[str, Any]:
    """Follow-ups, inspection results (with ``overturned``), rework links and appeals."""
    if order_id not in state.store.order_facts([order_id]):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"order {order_id} is unknown")
    return state.store.order_history(order_id)
