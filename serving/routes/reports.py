"""The improvement report from the service's own store (role ``quality`` or ``admin``).

``GET /v1/reports/improvement?from=D&to=D[&community=C]`` returns exactly the JSON of
``repairqc report --out report.json`` read from this service's store (same builder,
:func:`pipelines.report.build_report`), and ``GET /v1/reports/improvement.html`` the Chinese
page of the same dict. Scores, π and draws are the recorded decisions; features for the drivers,
the dossiers' case-mix and the drift come from the served model over a history built from the
store's orders as they are now (the scoring cache may lag behind by its refresh interval, and the
CLI must give the same numbers).

A report over a month of orders takes seconds, and the dashboard asks for the JSON and the page
of the same period one after the other, so built reports are kept for ``CACHE_SECONDS``
(keyed by the query and the number of stored orders, so new orders invalidate it).
"""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import HTMLResponse, JSONResponse

from serving.deps import get_state, require
from serving.state import ServiceState

router = APIRouter()

#: Seconds a built report is reused for the same query and store size.
CACHE_SECONDS = 120.0
#: params.yaml of the project (KPI SLAs, label windows, report knobs); defaults when absent.
PARAMS_PATH = Path(__file__).resolve().parents[2] / "params.yaml"

_cache: dict[tuple[Any, ...], tuple[float, dict[str, Any]]] = {}
_lock = threading.Lock()


def _unprocessable(field: str, msg: str) -> HTTPException:
    """422 in FastAPI's validation-error shape, naming the query field."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["query", field], "msg": msg, "type": "value_error"}],
    )


def _day(text: str, field: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise _unprocessable(field, f"must be a date YYYY-MM-DD, got {text!r}") from None


def _report(state: ServiceState, start: str, end: str, community: str | None) -> dict[str, Any]:
    from pipelines.report import SourceUnavailableError, build_report

    d0, d1 = _day(start, "from"), _day(end, "to")
    if d1 < d0:
        raise _unprocessable("to", f"must not be before from ({d1} < {d0})")
    store = state.store
    key = (d0, d1, community, store.order_count())
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    served = state.scorer.served
    try:
        report = build_report(
            d0.isoformat(),
            d1.isoformat(),
            community=community,
            params_path=PARAMS_PATH,
            store=store,
            model=served.model,
        )
    except SourceUnavailableError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except ValueError as exc:
        if "--community" in str(exc):
            raise _unprocessable("community", str(exc).replace("--community ", "")) from exc
        raise
    report["source"]["model"] = served.identity.tag
    with _lock:
        for k in [k for k, (t, _) in _cache.items() if now - t >= CACHE_SECONDS]:
            del _cache[k]
        _cache[key] = (now, report)
    return report


_FROM = Query(
    ..., alias="from", description="First day (YYYY-MM-DD) of the period, by reported_at."
)
_TO = Query(..., alias="to", description="Last day (inclusive, YYYY-MM-DD).")
_COMMUNITY = Query(None, description="Only this community_id.")


@router.get(
    "/v1/reports/improvement",
    summary="Improvement report (改进报告) as JSON, from this service's store",
    responses={422: {"description": "a bad date or unknown community (the field is named)"}},
)
def improvement(
    start: str = _FROM,
    end: str = _TO,
    community: str | None = _COMMUNITY,
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality")),  # noqa: B008
) -> JSONResponse:
    """The same JSON as ``repairqc report --out report.json`` over the store."""
    return JSONResponse(_report(state, start, end, community))


@router.get(
    "/v1/reports/improvement.html",
    summary="Improvement report (改进报告) as a self-contained Chinese page",
    response_class=HTMLResponse,
)
def improvement_html(
    start: str = _FROM,
    end: str = _TO,
    community: str | None = _COMMUNITY,
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("quality")),  # noqa: B008
) -> HTMLResponse:
    """The HTML page of the same report (no external assets, no script)."""
    from pipelines.report import render_html

    return HTMLResponse(render_html(_report(state, start, end, community)))
