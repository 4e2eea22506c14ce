"""``POST /v1/score``: validate, store, score, decide, record.

A batch with bad orders: by default the request is atomic — a 422 lists every bad order (its
index, id and ``field:problem`` reasons, exactly as the file quarantine names them) and
nothing is stored or scored, so the caller fixes and re-sends the batch (re-sending is safe:
decisions are idempotent). With ``?partial=true`` the valid orders are stored and scored and
the bad ones come back in ``rejected``; no good order is lost either way.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.routing import APIRoute
from starlette.background import BackgroundTask

from models.schemas import ORDERS, TECHNICIANS, UNITS, Table
from models.validation import REASON, SOURCE_ROW, validate_records
from serving.deps import get_state, require
from serving.engine import GC_PAUSE_ORDERS, gc_paused
from serving.schemas import ORDER_NONE, Decision, Rejected, ScoreRequest, ScoreResponse
from serving.state import ServiceState
from serving.store import tables as T
from serving.store.db import frame_rows


class _OrjsonRequest(Request):
    """A request whose JSON body is parsed by orjson (~3x the stdlib's speed on a big batch).

    Whatever orjson refuses (numbers beyond 64 bits, ``NaN``, UTF-16 bodies, lone surrogates,
    ...) goes through the stdlib parser as before, so every body parses to the same values,
    or fails with the same ``json_invalid`` 422, as with Starlette's own ``Request.json``.
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                self._json = json.loads(body)
        return self._json


class _OrjsonRoute(APIRoute):
    """The score route's request class (FastAPI's documented custom-request pattern)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_with_orjson(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return parse_with_orjson


router = APIRouter(route_class=_OrjsonRoute)
log = logging.getLogger(__name__)

#: Requests of at most this many orders go through the scorer's coalescer (big batches are
#: already batches; they are scored on their own request thread).
COALESCE_MAX_ORDERS = 32


#: Id columns (``string``) of each contract table: stored as ``String(ID_LENGTH)``.
_ID_COLUMNS = {
    t.name: tuple(c.name for c in t.columns if c.dtype == "string")
    for t in (ORDERS, TECHNICIANS, UNITS)
}


def _unstorable(raw: list[dict[str, Any]], table: Table) -> dict[int, list[str]]:
    """Per row, the values the store cannot hold as given (``field:problem`` items).

    ``too_long``: an id longer than the store's id columns (``ID_LENGTH``); ``nul_character``:
    text holding a NUL character (code point 0). Why here: PostgreSQL refuses both (the insert
    failed: a 500) and SQLite stores them, so they are checked before either sees the row,
    and the caller gets the 422 naming the field on every backend. A loop over the raw dicts:
    ~2 us per order.
    """
    cols = _ID_COLUMNS[table.name]
    limit = T.ID_LENGTH
    out: dict[int, list[str]] = {}
    for i, r in enumerate(raw):
        for c, v in r.items():
            if type(v) is str:
                if "\x00" in v:
                    out.setdefault(i, []).append(f"{c}:nul_character")
                if len(v) > limit and c in cols and len(v.strip()) > limit:
                    out.setdefault(i, []).append(f"{c}:too_long")
    return out


def _errors(raw: list[dict[str, Any]], table: Table) -> tuple[pd.DataFrame, list[Rejected]]:
    """Validate rows of a contract table; typed valid rows and the rejected ones."""
    res = validate_records(raw, table)  # record-wise for a few orders, else vectorised
    q = res.quarantine
    bad: dict[int, list[str]] = {
        int(i): str(r).split(";")
        for i, r in zip(q[SOURCE_ROW].tolist(), q[REASON].tolist(), strict=True)
    }
    valid = res.valid
    unstorable = _unstorable(raw, table)
    if unstorable:
        for i, errs in unstorable.items():
            bad.setdefault(i, []).extend(errs)
        valid = valid[~valid[SOURCE_ROW].isin(list(unstorable)).to_numpy(dtype=bool)]
    if table is ORDERS:
        status = valid["status"].to_numpy(dtype=object, na_value=None)
        not_done = status != "completed"
        if not_done.any():
            for i in valid.loc[not_done, SOURCE_ROW]:
                bad.setdefault(int(i), []).append("status:not_completed")
            valid = valid[~not_done]
    rejected = []
    for i, errs in sorted(bad.items()):
        key = raw[i].get(table.key)
        label = f"{table.name}[{i}]" + (f" ({key})" if key else "")
        rejected.append(
            Rejected(index=i, order_id=key, errors=errs, message=f"{label}: {';'.join(errs)}")
        )
    # the ``source_row`` column stays: dropping a column of a fresh frame costs ~0.4 ms, more
    # than validating one order; the store and the history read contract columns by name
    return valid, rejected


#: Fields of a public decision taken from the recorded row as they are.
_AS_RECORDED = [k for k in Decision.model_fields if k not in ("created_at", "replayed")]


def _public(
    d: dict[str, Any], replayed: bool, texts: dict[int, tuple[Any, str]] | None = None
) -> dict[str, Any]:
    """A recorded decision as the response's ``Decision`` JSON object.

    A plain dict, serialised once by orjson: the rows are built by the service itself, so
    validating them again through pydantic (~90 us per decision) would only cost time; the
    response shape is still the declared ``ScoreResponse`` (tests check it).

    ``texts``: ``created_at`` texts already written in this response, by the time object's
    ``id`` (a batch's new decisions share one ``created_at`` object: one ``isoformat``).
    """
    created = d["created_at"]
    hit = None if texts is None else texts.get(id(created))
    if hit is not None and hit[0] is created:
        text = hit[1]
    else:
        aware = created
        if isinstance(created, dt.datetime) and created.tzinfo is None:
            aware = created.replace(tzinfo=dt.UTC)
        text = aware.isoformat() if isinstance(aware, dt.datetime) else str(aware)
        if texts is not None:
            texts[id(created)] = (created, text)
    out = {k: d[k] for k in _AS_RECORDED}
    out["created_at"] = text
    out["replayed"] = replayed
    return out


def _json(body: dict[str, Any]) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


@router.post(
    "/v1/score",
    response_model=ScoreResponse,
    summary="Score completed orders (1 to 10,000) and record the decisions",
    responses={
        401: {"description": "missing or unknown API key"},
        403: {"description": "the key's role may not score"},
        422: {"description": "invalid orders: each bad order named with `field:problem`"},
    },
)
def score(
    body: ScoreRequest,
    partial: bool = Query(False, description="Score the valid orders, return the bad ones."),
    rescore: bool = Query(
        False, description="Decide again under the served model; earlier decisions are kept."
    ),
    state: ServiceState = Depends(get_state),  # noqa: B008
    _role: str = Depends(require("system")),  # noqa: B008
) -> Response:
    """Store each order (history for later scores), score it as of its completion, decide."""
    n = len(body.orders)
    limit = state.settings.max_batch
    if not 1 <= n <= limit:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"orders: 1 to {limit} orders per request (got {n})",
        )
    if n < GC_PAUSE_ORDERS:
        return _score(body, partial, rescore, state)
    with gc_paused():  # a big batch: its validation frames and response rows too
        return _score(body, partial, rescore, state)


def _score(body: ScoreRequest, partial: bool, rescore: bool, state: ServiceState) -> Response:
    """The route's work after the size check (see :func:`score`)."""
    n = len(body.orders)
    # validated orders are dicts (``OrderIn`` is a TypedDict); absent fields become None
    raw = [{**ORDER_NONE, **o} for o in body.orders]
    if (
        n <= COALESCE_MAX_ORDERS
        and not body.technicians
        and not body.units
        and not _unstorable(raw, ORDERS)  # such a request takes the path that names the field
    ):
        # validated and scored together with concurrent small requests; None: some order is
        # invalid, and the request takes the path below (validated alone, exact messages)
        done = state.scorer.coalescer.submit_raw(raw, rescore, flush_later=True)
        if done is not None:
            response = _respond(state, *done, [])
            # the order's history append runs after the response is sent (the next scoring
            # waits for it under the history lock, so it still sees this order as history)
            response.background = BackgroundTask(_flush, state)
            return response
    orders, rejected = _errors(raw, ORDERS)
    side: list[tuple[Any, Table, pd.DataFrame]] = []
    for rows, table, sql in (
        (body.technicians, TECHNICIANS, T.technicians),
        (body.units, UNITS, T.units),
    ):
        if rows:
            valid, bad = _errors([r.model_dump() for r in rows], table)
            rejected += bad
            side.append((sql, table, valid))
    state.metrics.rejected.inc(len(rejected))
    if rejected and not partial:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, [r.model_dump() for r in rejected]
        )
    for sql, table, valid in side:
        state.store.upsert_side(sql, table, frame_rows(valid, table))
    if side:
        state.cache.add(orders.iloc[:0], side_changed=True)
    if not len(orders):
        return _json({"decisions": [], "rejected": [r.model_dump() for r in rejected]})
    if len(orders) <= COALESCE_MAX_ORDERS:  # scored together with concurrent small requests
        records, replayed = state.scorer.coalescer.submit(orders, rescore)
    else:  # a big batch's answer is written while its decisions are inserted (not sent yet)
        prepared: list[tuple[list[dict[str, Any]], bytes]] = []
        records, replayed = state.scorer.score(
            orders,
            rescore=rescore,
            prepare=lambda recs, again: prepared.append((recs, _body(recs, again, rejected))),
        )
        if prepared and prepared[-1][0] is records:
            return _respond(state, records, replayed, rejected, prepared[-1][1])
    return _respond(state, records, replayed, rejected)


def _flush(state: ServiceState) -> None:
    """Append the deferred order to the history (see ``Scorer.score(defer_append=True)``)."""
    try:
        state.scorer.flush()
    except Exception:  # noqa: BLE001 - the next score() retries the append first
        log.exception("deferred history append failed")


def _respond(
    state: ServiceState,
    records: list[dict[str, Any]],
    replayed: list[bool],
    rejected: list[Rejected],
    body: bytes | None = None,
) -> Response:
    """Count the decisions in the metrics and answer them (with the rejected orders).

    ``body``: the answer's JSON, written already (:func:`_body` of the same arguments).
    """
    m = state.metrics
    # counted per request and label (one locked ``inc`` each), not per decision: a
    # 10,000-order batch made ~40,000 metric calls
    fresh = [d for d, again in zip(records, replayed, strict=True) if not again]
    if len(fresh) < len(records):
        m.replays.inc(len(records) - len(fresh))
    if fresh:
        m.scores.inc(len(fresh))
        for level, n in Counter(d["risk_level"] for d in fresh).items():
            m.levels.labels(level).inc(n)
        sampled = sum(1 for d in fresh if d["third_party_sample"])
        m.samples.inc(sampled)
        flags = Counter(f["code"] for d in fresh for f in d["inspection_reasons"])
        for code, n in flags.items():
            m.flags.labels(code).inc(n)
    if body is None:
        body = _body(records, replayed, rejected)
    return Response(body, media_type="application/json")


def _body(records: list[dict[str, Any]], replayed: list[bool], rejected: list[Rejected]) -> bytes:
    """The JSON of a score response: the decisions as the API shows them, the rejected orders."""
    texts: dict[int, tuple[Any, str]] = {}
    return orjson.dumps(
        {
            "decisions": [
                _public(d, again, texts) for d, again in zip(records, replayed, strict=True)
            ],
            "rejected": [r.model_dump() for r in rejected],
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
