"""The quality loop's part of the audit store: outcomes, inspections, queue, rectification, appeals.

Everything here is *append-only history*: a follow-up or inspection result is never updated in
place — a correction is a new row, and reads take the latest (``is_latest``); an identical
re-send is absorbed by a content hash (idempotent, the caller is told ``duplicate``). Appeals
never delete a result either: an upheld appeal marks it ``overturned`` at read time, so the
original result and the decision that overturned it both stay auditable.

The ``*_frame`` methods are what reports, dossiers and ``repairqc export`` read: pandas frames
with fixed columns (empty frames keep them), timestamps as ``datetime64[ns, Asia/Shanghai]``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from models.schemas import TIMEZONE
from serving.store import tables as T

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from models.labels import LabelConfig
    from models.sampling import InspectionQueue

#: Outcome kinds of the ``outcomes`` table written by the quality loop.
FOLLOWUP = "followup"
REWORK = "rework"
#: Follow-up fields and the contract's outcome columns of the order they fill.
FOLLOWUP_TO_ORDER: dict[str, str] = {
    "rating": "rating",
    "comment": "feedback_comment",
    "complaint": "complaint",
}
#: Kinds of inspection results: internal (内部质检) and third-party (第三方抽检).
INSPECTION_KINDS: tuple[str, ...] = ("internal", "third_party")
#: Stored statuses of a rectification item; ``overdue`` is derived (past deadline, not done).
RECTIFICATION_STATUSES: tuple[str, ...] = ("open", "in_progress", "done", "verified")
RECTIFICATION_VIEW_STATUSES: tuple[str, ...] = (*RECTIFICATION_STATUSES, "overdue")
#: Allowed status moves: a failed re-inspection sends a done item back to work; verified is final.
RECTIFICATION_MOVES: dict[str, tuple[str, ...]] = {
    "open": ("in_progress", "done"),
    "in_progress": ("open", "done"),
    "done": ("in_progress", "verified"),
    "verified": (),
}
#: A reviewer's decisions on an appeal; ``pending`` until decided.
APPEAL_DECISIONS: tuple[str, ...] = ("upheld", "rejected")
#: What an appeal disputes: an inspection result, the order's rework link (the repeat order
#: was a different fault or the resident's doing) or its dissatisfaction (the complaint or low
#: rating was not about the repair). The label an upheld label appeal overrides (to 0).
APPEAL_TARGETS: tuple[str, ...] = ("inspection", "rework", "dissatisfaction")
APPEAL_TARGET_LABEL: dict[str, str] = {"rework": "rework", "dissatisfaction": "dissatisfied"}
#: Statuses of a queue item.
QUEUE_STATUSES: tuple[str, ...] = ("open", "assigned", "done", "overdue")
#: Ids per ``IN (...)`` list (SQLite's variable limit is far above; keeps statements small).
_CHUNK = 500

DECISION_COLUMNS = [
    "decision_id",
    "order_id",
    "community_id",
    "completed_at",
    "created_at",
    "model_version",
    "policy_version",
    "rework_risk",
    "dissatisfaction_prob",
    "risk_level",
    "mandatory_inspection",
    "inspection_reasons",
    "third_party_sample",
    "inclusion_probability",
    "draw_u",
    "reasons",
]
OUTCOME_COLUMNS = [
    "outcome_id",
    "order_id",
    "kind",
    "rating",
    "comment",
    "complaint",
    "observed_at",
    "rework_order_id",
    "rework_via",
    "value",
    "source",
    "recorded_at",
    "is_latest",
]
INSPECTION_COLUMNS = [
    "inspection_id",
    "kind",
    "order_id",
    "passed",
    "defect_codes",
    "inspector",
    "agency",
    "notes",
    "photos",
    "inspected_at",
    "recorded_at",
    "source",
    "overturned",
    "appeal_id",
    "counts_as_failure",
    "is_latest",
]
RECTIFICATION_COLUMNS = [
    "rectification_id",
    "title",
    "owner",
    "deadline",
    "status",
    "stored_status",
    "cause_category",
    "cause_defect_code",
    "cause_technician_id",
    "cause_community_id",
    "source_order_id",
    "evidence",
    "reinspection_passed",
    "reinspection_note",
    "reinspected_at",
    "done_at",
    "created_at",
    "updated_at",
]
APPEAL_COLUMNS = [
    "appeal_id",
    "target",
    "inspection_id",
    "order_id",
    "rework_order_id",
    "technician_id",
    "reason",
    "status",
    "submitted_at",
    "reviewer",
    "decision_note",
    "decided_at",
]


class NotFoundError(LookupError):
    """The addressed record does not exist (the API answers 404)."""


class ConflictError(ValueError):
    """The request contradicts the record's state (the API answers 409)."""


class InvalidError(ValueError):
    """A field is invalid in a way only the store can tell (the API answers 422)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def utc(value: Any) -> dt.datetime | None:
    """A stored or given time as an aware UTC datetime (SQLite returns naive UTC values)."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def content_hash(payload: dict[str, Any]) -> str:
    """SHA-256 of an outcome's content: what "the same outcome sent again" means."""
    canon = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in payload.items()}
    blob = json.dumps(canon, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _local(values: Iterable[Any]) -> pd.Series:
    """Datetimes (naive = UTC, or aware) as a ``datetime64[ns, Asia/Shanghai]`` series."""
    vals = [utc(v) for v in values]
    s = pd.to_datetime(pd.Series([v.replace(tzinfo=None) if v else None for v in vals]))
    s = s.astype("datetime64[ns]").dt.tz_localize("UTC")
    return s.dt.tz_convert(TIMEZONE).astype(f"datetime64[ns, {TIMEZONE}]")


def _frame(rows: list[dict[str, Any]], columns: list[str], times: Sequence[str]) -> pd.DataFrame:
    """Rows as a frame with exactly ``columns``; ``times`` typed Asia/Shanghai (empty too)."""
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.reset_index(drop=True)
    for c in times:
        if len(frame):
            frame[c] = _local(frame[c].tolist())
        else:
            frame[c] = pd.Series([], dtype=f"datetime64[ns, {TIMEZONE}]")
    return frame


def _chunks(items: Iterable[Any]) -> Iterator[list[Any]]:
    items = list(items)
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _insert_ignore(conn: Connection, table: sa.Table, *conflict: str) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL (idempotent appends)."""
    name = conn.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # pragma: no cover - other databases: plain insert, the constraint still guards
        return table.insert()
    return insert(table).on_conflict_do_nothing(index_elements=list(conflict))


def _link_hash(rework_order_id: str) -> str:
    """``content_hash({"rework_order_id": rework_order_id})`` without building an encoder."""
    text = '{"rework_order_id": ' + _JSON_STR(rework_order_id) + "}"
    return hashlib.sha256(text.encode()).hexdigest()


#: What ``json.dumps(..., ensure_ascii=False)`` writes for a string (the C encoder).
_JSON_STR = json.encoder.encode_basestring


def _new_id(prefix: str) -> str:
    return f"{prefix}{_now():%Y%m%d}-{secrets.token_hex(4)}"


class QualityLoopStore:
    """Quality-loop queries; mixed into :class:`serving.store.db.Store` (same engine)."""

    engine: Engine
    label_config: LabelConfig

    # ---- orders as the loop needs them --------------------------------------------------
    def order_facts(self, order_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Stored orders by id: status, times (UTC), technician, community, category, priority."""
        o = T.orders.c
        cols = [
            o.order_id,
            o.status,
            o.reported_at,
            o.completed_at,
            o.technician_id,
            o.community_id,
            o.category,
            o.priority,
            o.unit_id,
        ]
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(set(order_ids)):
                for r in conn.execute(sa.select(*cols).where(o.order_id.in_(chunk))).mappings():
                    d = dict(r)
                    d["reported_at"] = utc(d["reported_at"])
                    d["completed_at"] = utc(d["completed_at"])
                    out[d["order_id"]] = d
        return out

    def has_community(self, community_id: str) -> bool:
        """Whether any stored order belongs to the community (a typo must not look empty)."""
        with self.engine.connect() as conn:
            q = sa.select(T.orders.c.order_id).where(T.orders.c.community_id == community_id)
            return conn.execute(q.limit(1)).first() is not None

    # ---- outcomes in --------------------------------------------------------------------
    def _append(
        self,
        table: sa.Table,
        rows: list[dict[str, Any]],
        kind_of: Any,
    ) -> list[dict[str, Any]]:
        """Append content-hashed rows idempotently; per row its id and whether it was known.

        Every row is inserted with ``ON CONFLICT DO NOTHING`` and read back; a row is ours (not
        a duplicate) when it carries this call's ``recorded_at``: exact under concurrent
        identical requests, where a read-before-write check would let several callers believe
        they recorded the one row.
        """
        if not rows:
            return []
        now = _now()
        keys = [(r["order_id"], kind_of(r), r["content_hash"]) for r in rows]
        with self.engine.begin() as conn:
            from serving.store.db import lock_order  # db imports this module

            conn.execute(
                _insert_ignore(conn, table, "order_id", "kind", "content_hash"),
                lock_order(
                    conn,
                    [{**r, "recorded_at": now} for r in rows],
                    ("order_id", "kind", "content_hash"),
                ),
            )
            got = self._ids_of(conn, table, keys)
        seen: set[tuple[str, str, str]] = set()
        out = []
        for k in keys:
            row_id, at = got[k]
            out.append({"id": row_id, "order_id": k[0], "duplicate": at != now or k in seen})
            seen.add(k)
        return out

    @staticmethod
    def _ids_of(
        conn: Connection, table: sa.Table, keys: list[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], tuple[int, dt.datetime | None]]:
        c = table.c
        wanted = set(keys)
        out: dict[tuple[str, str, str], tuple[int, dt.datetime | None]] = {}
        for chunk in _chunks({k[0] for k in keys}):  # by order id: indexed
            q = sa.select(c.id, c.order_id, c.kind, c.content_hash, c.recorded_at).where(
                c.order_id.in_(chunk)
            )
            for r in conn.execute(q):
                k = (r.order_id, r.kind, r.content_hash)
                if k in wanted:
                    out[k] = (r.id, utc(r.recorded_at))
        return out

    def add_followups(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Record follow-up results (回访), validated by the caller.

        Rows: ``order_id, rating, comment, complaint, followed_up_at`` (aware datetime) and
        optional ``source``.

        Returns per row ``{"id", "order_id", "duplicate"}``; an identical re-send is a
        duplicate and adds nothing.
        """
        recs = []
        for r in rows:
            value = {
                "rating": r.get("rating"),
                "comment": r.get("comment"),
                "complaint": r.get("complaint"),
            }
            at = utc(r["followed_up_at"])
            recs.append(
                {
                    "order_id": r["order_id"],
                    "kind": FOLLOWUP,
                    "value": value,
                    "source": r.get("source"),
                    "observed_at": at,
                    "content_hash": content_hash({**value, "followed_up_at": at}),
                }
            )
        got = self._append(T.outcomes, recs, lambda r: FOLLOWUP)
        fresh = {g["order_id"] for g in got if not g["duplicate"]}
        if fresh:
            with self.engine.begin() as conn:
                self.fold_followups(fresh, conn)
        return got

    def fold_followups(self, order_ids: Iterable[str], conn: Connection) -> int:
        """Write the recorded follow-ups into the stored orders' outcome columns.

        Why: the stored orders are the history of every later score (as-of features, the
        recent-complaint rule) and of the reports; a follow-up recorded through the loop must
        reach them like one that came with the order. Per field (``rating``,
        ``feedback_comment``, ``complaint``) the latest follow-up giving a value wins; fields
        no follow-up gives keep the order's own value. The orders' ``input_hash`` is left
        alone, so re-sending the original order is still recognised as the same order.
        Returns the number of orders updated.
        """
        c = T.outcomes.c
        latest: dict[str, dict[str, Any]] = defaultdict(dict)
        for chunk in _chunks(set(order_ids)):
            q = (
                sa.select(c.order_id, c.value)
                .where(c.kind == FOLLOWUP, c.order_id.in_(chunk))
                .order_by(c.recorded_at, c.id)
            )
            for oid, value in conn.execute(q):
                for src, dst in FOLLOWUP_TO_ORDER.items():
                    v = (value or {}).get(src)
                    if v is not None:
                        latest[oid][dst] = v
        for oid in sorted(latest):  # one lock order for concurrent writers (``lock_order``)
            vals = latest[oid]
            conn.execute(T.orders.update().where(T.orders.c.order_id == oid).values(**vals))
        return len(latest)

    def add_inspections(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Record inspection results (内部质检 / 第三方抽检), validated by the caller.

        Rows: ``order_id, kind (internal|third_party), passed, defect_codes, inspector,
        agency, notes, photos, inspected_at`` and optional ``source``.

        Returns per row ``{"id", "order_id", "duplicate"}`` (the id is the ``inspection_id``
        an appeal refers to).
        """
        recs = []
        for r in rows:
            if r["kind"] not in INSPECTION_KINDS:
                raise InvalidError(f"kind: must be one of {', '.join(INSPECTION_KINDS)}")
            body = {
                "passed": bool(r["passed"]),
                "defect_codes": list(r.get("defect_codes") or []),
                "inspector": r["inspector"],
                "agency": r.get("agency"),
                "notes": r.get("notes"),
                "photos": list(r.get("photos") or []),
                "inspected_at": utc(r["inspected_at"]),
            }
            recs.append(
                {
                    **body,
                    "order_id": r["order_id"],
                    "kind": r["kind"],
                    "source": r.get("source"),
                    "content_hash": content_hash({**body, "kind": r["kind"]}),
                }
            )
        return self._append(T.inspection_results, recs, lambda r: r["kind"])

    # ---- automatic rework links -----------------------------------------------------------
    def link_reworks(self, rows: list[dict[str, Any]], conn: Connection | None = None) -> int:
        """Record which earlier orders the given (just stored) orders rework, or are reworked by.

        The definition is the label's (:func:`models.labels.rework_labels`, window from
        ``self.label_config``): the first later not-cancelled order on the same unit and
        category reported within the window after a completion, or the first one naming the
        order as its ``parent_order_id``. The link is an outcome of kind ``rework`` on the
        earlier order with ``{"rework_order_id", "via"}``; links are idempotent, so a re-sent
        order adds nothing, and an order that arrives before its parent is linked when the
        parent comes. Returns the number of new links.

        Why not call ``rework_labels`` here: this runs inside every ``POST /v1/score``, and the
        pandas path costs ~10 ms per call against a p99 goal of 15 ms per order; the few rows
        of a home are checked in plain Python instead (:func:`first_reworks`, microseconds),
        and a test checks that it agrees with ``rework_labels`` on a simulated operation.
        """
        if conn is None:
            with self.engine.begin() as c:
                return self.link_reworks(rows, conn=c)
        ids = {r["order_id"] for r in rows}
        window = dt.timedelta(days=float(self.label_config.rework_window_days))
        reported = [utc(r.get("reported_at")) for r in rows]
        scope = {
            "units": {r.get("unit_id") for r in rows if r.get("unit_id")},
            "order_ids": {r.get("parent_order_id") for r in rows if r.get("parent_order_id")},
            "parents": ids,
            "pairs": {(r.get("unit_id"), r.get("category")) for r in rows},
            "since": min((t for t in reported if t is not None), default=None),
            "window": window,
        }
        if len(rows) >= VECTOR_LINK_ORDERS:
            first = _first_reworks_vectorised(conn, ids, scope, window)
        else:
            first = self._first_reworks_rows(conn, ids, scope, window)
        now = _now()
        links = []
        for oid, (reported_at, later, via) in first.items():
            if oid not in ids and later not in ids:
                continue  # an old link, recorded when one of its orders arrived
            links.append(
                {
                    "order_id": oid,
                    "kind": REWORK,
                    "value": {"rework_order_id": later, "via": via},
                    "source": "auto",
                    "observed_at": reported_at,
                    "content_hash": _link_hash(later),
                    "recorded_at": now,
                }
            )
        if not links:
            return 0
        from serving.store.db import insert_ignore_many  # db imports this module

        n = insert_ignore_many(conn, T.outcomes, ("order_id", "kind", "content_hash"), links)
        return max(n, 0)

    @staticmethod
    def _first_reworks_rows(
        conn: Connection, ids: set[str], scope: dict[str, Any], window: dt.timedelta
    ) -> dict[str, tuple[dt.datetime, str, str]]:
        """:func:`first_reworks` of every order the new ``ids`` can change, per home in Python.

        The home's orders that can matter: same category, and completed or reported since one
        window before the batch's first report (every earlier order a batch order can rework,
        and every order competing to be its first rework, lies after that).
        """
        found: dict[str, _Order] = {}
        _fetch_orders(conn, found, **scope)
        # earlier orders a new order may rework: same home + category (all of that home's
        # orders are fetched already) or its parent (whose home and children may not be)
        earlier = set(ids)
        parents = set()
        groups = _groups(found.values())
        for oid in ids:
            n = found.get(oid)
            if n is None or n.status == "cancelled" or n.reported_at is None:
                continue
            for o in groups.get((n.unit_id, n.category), ()):
                if o.completed_at is not None and o.completed_at < n.reported_at <= (
                    o.completed_at + window
                ):
                    earlier.add(o.order_id)
            if n.parent_order_id in found and n.parent_order_id not in ids:
                parents.add(n.parent_order_id)
        others = (earlier - ids) | parents
        if others:  # their children (a rework elsewhere may come first) and the parents' homes
            _fetch_orders(
                conn,
                found,
                units={found[p].unit_id for p in parents if found[p].unit_id},
                order_ids=set(),
                parents=others,
            )
            earlier |= parents
            groups = _groups(found.values())
        return first_reworks(found, earlier, window, groups)

    # ---- inspection queue -------------------------------------------------------------------
    def latest_decisions(
        self,
        *,
        community_id: str | None = None,
        completed_from: dt.datetime | None = None,
        completed_to: dt.datetime | None = None,
        order_ids: Iterable[str] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """The latest decision per order (a re-score supersedes), optionally filtered."""
        d = T.decisions.c
        q = sa.select(T.decisions)
        if community_id is not None:
            q = q.where(d.community_id == community_id)
        if completed_from is not None:
            q = q.where(d.completed_at >= completed_from)
        if completed_to is not None:
            q = q.where(d.completed_at < completed_to)
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            if order_ids is None:
                queries = [q]
            else:
                queries = [q.where(d.order_id.in_(ch)) for ch in _chunks(set(order_ids))]
            for qq in queries:
                for r in conn.execute(qq.order_by(d.created_at, d.decision_id)).mappings():
                    out[r["order_id"]] = dict(r)
        return out

    def _inspected(self, conn: Connection, order_ids: Iterable[str]) -> set[str]:
        c = T.inspection_results.c
        done: set[str] = set()
        for ch in _chunks(order_ids):
            done.update(
                conn.execute(sa.select(c.order_id).where(c.order_id.in_(ch)).distinct()).scalars()
            )
        return done

    def _assignees(self, conn: Connection, order_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        c = T.inspection_assignments.c
        out: dict[str, dict[str, Any]] = {}
        for ch in _chunks(order_ids):
            q = sa.select(c.order_id, c.inspector, c.assigned_at).where(c.order_id.in_(ch))
            for r in conn.execute(q.order_by(c.assigned_at, c.id)).mappings():
                out[r["order_id"]] = dict(r)
        return out

    def inspection_queue(
        self,
        community_id: str | None,
        day: dt.date,
        cfg: InspectionQueue,
        now: dt.datetime | None = None,
    ) -> dict[str, Any]:
        """The community's inspection queue for a local day (质检任务队列).

        ``community_id`` None: every community, each within its own capacity.
        Candidates: orders whose latest decision requires a mandatory inspection, completed on
        ``day`` (Asia/Shanghai), plus those completed in the ``carry_over_days`` before it that
        are still not inspected. Ranked by expected harm = max(rework_risk,
        dissatisfaction_prob) × severity(category, priority), highest first; the first
        ``capacity_per_community_day`` are the day's queue, the rest are counted in
        ``overflow``. Status: ``done`` once any inspection result is recorded, else
        ``overdue`` past ``due_at`` (completion + the priority's deadline), else ``assigned``
        with an assignee, else ``open``.
        """
        now = utc(now) or _now()
        tz = pd.Timestamp(day).tz_localize(TIMEZONE)
        day_start = tz.tz_convert("UTC").to_pydatetime()
        day_end = (tz + pd.Timedelta(days=1)).tz_convert("UTC").to_pydatetime()
        window_start = day_start - dt.timedelta(days=cfg.carry_over_days)
        decisions = self.latest_decisions(
            community_id=community_id, completed_from=window_start, completed_to=day_end
        )
        flagged = {k: v for k, v in decisions.items() if v["mandatory_inspection"]}
        facts = self.order_facts(flagged)
        with self.engine.connect() as conn:
            done = self._inspected(conn, flagged)
            assigned = self._assignees(conn, flagged)
        items = []
        for oid, d in flagged.items():
            completed = utc(d["completed_at"])
            if completed is None:
                continue
            if completed < day_start and oid in done:
                continue  # yesterday's finished work is not today's queue
            f = facts.get(oid, {})
            category, priority = f.get("category"), f.get("priority")
            severity = cfg.severity(str(category), str(priority))
            risk = max(float(d["rework_risk"]), float(d["dissatisfaction_prob"]))
            due = completed + dt.timedelta(
                hours=float(cfg.deadline_hours.get(str(priority), max(cfg.deadline_hours.values())))
            )
            who = assigned.get(oid)
            if oid in done:
                status = "done"
            elif now > due:
                status = "overdue"
            elif who is not None:
                status = "assigned"
            else:
                status = "open"
            items.append(
                {
                    "decision_id": d["decision_id"],
                    "order_id": oid,
                    "community_id": d["community_id"],
                    "category": category,
                    "priority": priority,
                    "technician_id": f.get("technician_id"),
                    "completed_at": _iso(completed),
                    "rework_risk": float(d["rework_risk"]),
                    "dissatisfaction_prob": float(d["dissatisfaction_prob"]),
                    "severity": severity,
                    "expected_harm": risk * severity,
                    "status": status,
                    "assignee": who["inspector"] if who else None,
                    "due_at": _iso(due),
                    "inspection_reasons": list(d["inspection_reasons"] or []),
                    "reasons": list(d["reasons"] or []),
                }
            )

        def rank(x: dict[str, Any]) -> tuple[float, str, str]:
            return (-x["expected_harm"], x["completed_at"], x["order_id"])

        cap = cfg.capacity_per_community_day
        per_community: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for it in items:
            per_community[it["community_id"]].append(it)
        shown = []
        for its in per_community.values():  # capacity is per community and day
            shown += sorted(its, key=rank)[:cap]
        shown.sort(key=rank)
        counts = dict.fromkeys(QUEUE_STATUSES, 0)
        for it in shown:
            counts[it["status"]] += 1
        return {
            "date": day.isoformat(),
            "community": community_id,
            "capacity": cap,
            "counts": counts,
            "overflow": len(items) - len(shown),
            "items": shown,
        }

    def assign_inspection(self, order_id: str, inspector: str) -> dict[str, Any]:
        """Assign a flagged, not yet inspected order to an inspector (latest assignment wins)."""
        decision = self.latest_decisions(order_ids=[order_id]).get(order_id)
        if decision is None:
            raise NotFoundError(f"order {order_id} was never scored")
        if not decision["mandatory_inspection"]:
            raise ConflictError(f"order {order_id} is not flagged for inspection")
        now = _now()
        with self.engine.begin() as conn:
            if self._inspected(conn, [order_id]):
                raise ConflictError(f"order {order_id} is already inspected")
            conn.execute(
                T.inspection_assignments.insert().values(
                    order_id=order_id, inspector=inspector, assigned_at=now
                )
            )
        return {"order_id": order_id, "inspector": inspector, "assigned_at": _iso(now)}

    # ---- rectification ------------------------------------------------------------------------
    def create_rectification(self, data: dict[str, Any]) -> dict[str, Any]:
        """Open a rectification item (fields validated by the caller); an event is recorded."""
        now = _now()
        row = {
            "rectification_id": _new_id("RX"),
            "title": data["title"],
            "owner": data["owner"],
            "deadline": utc(data["deadline"]),
            "status": "open",
            "cause_category": data.get("cause_category"),
            "cause_defect_code": data.get("cause_defect_code"),
            "cause_technician_id": data.get("cause_technician_id"),
            "cause_community_id": data.get("cause_community_id"),
            "source_order_id": data.get("source_order_id"),
            "evidence": list(data.get("evidence") or []),
            "reinspection_passed": None,
            "reinspection_note": None,
            "reinspected_at": None,
            "done_at": None,
            "created_at": now,
            "updated_at": now,
        }
        with self.engine.begin() as conn:
            conn.execute(T.rectifications.insert().values(**row))
            conn.execute(
                T.rectification_events.insert().values(
                    rectification_id=row["rectification_id"],
                    action="created",
                    changes=_jsonable(row),
                    at=now,
                )
            )
        return self.get_rectification(row["rectification_id"])

    def get_rectification(self, rectification_id: str, now: dt.datetime | None = None) -> dict:
        """One item with its derived status and its event history (404 if unknown)."""
        with self.engine.connect() as conn:
            r = self._rectification_row(conn, rectification_id)
            events = self._events(conn, rectification_id)
        return {**_rect_view(dict(r), now), "history": events}

    @staticmethod
    def _rectification_row(conn: Connection, rectification_id: str, lock: bool = False) -> Any:
        """The stored item (a row mapping); NotFoundError (404) when there is none.

        ``lock``: the caller will write what it derives from the row (evidence appended, a
        status move checked against the current one), so the row is locked first, until the
        caller's transaction ends: a no-op update, which takes the row lock on PostgreSQL and
        the write lock on SQLite (whose driver begins the transaction at the first write).
        Without it two concurrent changes read the same row and the later write dropped the
        earlier one's evidence (both backends; ``SELECT … FOR UPDATE`` is ignored by SQLite).
        """
        c = T.rectifications.c
        if lock:
            conn.execute(
                T.rectifications.update()
                .where(c.rectification_id == rectification_id)
                .values(updated_at=c.updated_at)
            )
        q = sa.select(T.rectifications).where(c.rectification_id == rectification_id)
        r = conn.execute(q).mappings().first()
        if r is None:
            raise NotFoundError(f"rectification {rectification_id} does not exist")
        return r

    def _events(self, conn: Connection, rectification_id: str) -> list[dict[str, Any]]:
        e = T.rectification_events.c
        q = (
            sa.select(e.action, e.changes, e.at)
            .where(e.rectification_id == rectification_id)
            .order_by(e.at, e.id)
        )
        return [{**dict(r), "at": _iso(r["at"])} for r in conn.execute(q).mappings()]

    def rectification_events(self, rectification_id: str) -> list[dict[str, Any]]:
        """Every recorded change of an item, oldest first."""
        with self.engine.connect() as conn:
            return self._events(conn, rectification_id)

    def list_rectifications(
        self,
        status: str | None = None,
        community_id: str | None = None,
        now: dt.datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Items (derived status), optionally of one status / community, by deadline."""
        q = sa.select(T.rectifications).order_by(
            T.rectifications.c.deadline, T.rectifications.c.rectification_id
        )
        if community_id is not None:
            q = q.where(T.rectifications.c.cause_community_id == community_id)
        with self.engine.connect() as conn:
            rows = [_rect_view(dict(r), now) for r in conn.execute(q).mappings()]
        return [r for r in rows if status is None or r["status"] == status]

    def update_rectification(self, rectification_id: str, changes: dict[str, Any]) -> dict:
        """Apply changes (validated fields); status moves follow :data:`RECTIFICATION_MOVES`.

        ``verified`` needs a passed re-inspection (given now or before); a failed
        re-inspection of a ``done`` item sends it back to ``in_progress``. Evidence given is
        appended (evidence is never lost). Every change is an event with old and new values.
        """
        now = _now()
        with self.engine.begin() as conn:
            r = self._rectification_row(conn, rectification_id, lock=True)
            cur = dict(r)
            new: dict[str, Any] = {}
            for k in ("title", "owner", "cause_category", "cause_defect_code"):
                if changes.get(k) is not None and changes[k] != cur[k]:
                    new[k] = changes[k]
            for k in ("cause_technician_id", "cause_community_id", "source_order_id"):
                if changes.get(k) is not None and changes[k] != cur[k]:
                    new[k] = changes[k]
            if changes.get("deadline") is not None:
                new["deadline"] = utc(changes["deadline"])
            if changes.get("evidence"):
                new["evidence"] = list(cur["evidence"] or []) + list(changes["evidence"])
            if changes.get("reinspection_passed") is not None:
                new["reinspection_passed"] = bool(changes["reinspection_passed"])
                new["reinspection_note"] = changes.get("reinspection_note")
                new["reinspected_at"] = now
            elif changes.get("reinspection_note") is not None:
                raise InvalidError("reinspection_note: needs reinspection_passed")
            status = changes.get("status")
            if status is None and new.get("reinspection_passed") is False:
                status = "in_progress" if cur["status"] == "done" else None
            if status is not None and status != cur["status"]:
                if status not in RECTIFICATION_STATUSES:
                    raise InvalidError(
                        f"status: must be one of {', '.join(RECTIFICATION_STATUSES)}"
                    )
                if status not in RECTIFICATION_MOVES[cur["status"]]:
                    raise ConflictError(f"status: cannot move from {cur['status']} to {status}")
                passed = new.get("reinspection_passed", cur["reinspection_passed"])
                if status == "verified" and passed is not True:
                    raise ConflictError("status: verified needs a passed re-inspection")
                new["status"] = status
                if status == "done":
                    new["done_at"] = now
            if not new:
                return self.get_rectification(rectification_id)
            new["updated_at"] = now
            conn.execute(
                T.rectifications.update()
                .where(T.rectifications.c.rectification_id == rectification_id)
                .values(**new)
            )
            diff = {k: [cur.get(k), v] for k, v in new.items() if k != "updated_at"}
            conn.execute(
                T.rectification_events.insert().values(
                    rectification_id=rectification_id,
                    action="updated",
                    changes=_jsonable(diff),
                    at=now,
                )
            )
        return self.get_rectification(rectification_id)

    def delete_rectification(self, rectification_id: str) -> dict[str, Any]:
        """Withdraw an item opened by mistake: only while ``open`` with no work recorded.

        The row goes, its history stays (a ``deleted`` event with the last state). Checked
        and deleted under the row's lock: a change made meanwhile is either seen (409) or
        waits and finds no item (404).
        """
        now = _now()
        with self.engine.begin() as conn:
            r = self._rectification_row(conn, rectification_id, lock=True)
            item = {**_rect_view(dict(r)), "history": self._events(conn, rectification_id)}
            if item["stored_status"] != "open" or len(item["history"]) > 1:
                raise ConflictError(
                    f"rectification {rectification_id} has progress; close it instead of deleting"
                )
            conn.execute(
                T.rectifications.delete().where(
                    T.rectifications.c.rectification_id == rectification_id
                )
            )
            snapshot = {k: v for k, v in item.items() if k != "history"}
            conn.execute(
                T.rectification_events.insert().values(
                    rectification_id=rectification_id,
                    action="deleted",
                    changes=_jsonable(snapshot),
                    at=now,
                )
            )
        return {"rectification_id": rectification_id, "deleted": True}

    # ---- appeals ------------------------------------------------------------------------------
    def _inspection(self, conn: Connection, inspection_id: int) -> dict[str, Any] | None:
        r = (
            conn.execute(
                sa.select(T.inspection_results).where(T.inspection_results.c.id == inspection_id)
            )
            .mappings()
            .first()
        )
        return dict(r) if r is not None else None

    def create_appeal(
        self,
        inspection_id: int | None,
        technician_id: str,
        reason: str,
        *,
        target: str = "inspection",
        order_id: str | None = None,
    ) -> dict:
        """A technician appeals (申诉); one open or upheld appeal per result / order and target.

        ``target`` ``inspection`` (default): a failed inspection result (``inspection_id``).
        ``rework``: the rework link of ``order_id`` (the earlier order) — the repeat order was
        a different fault or caused by the resident. ``dissatisfaction``: the dissatisfaction
        of ``order_id`` — the complaint / low rating was not about the repair. The technician
        must be the one who did the order (when the order names one).
        """
        if target not in APPEAL_TARGETS:
            raise InvalidError(f"target: must be one of {', '.join(APPEAL_TARGETS)}")
        try:
            if target == "inspection":
                if inspection_id is None:
                    raise InvalidError("inspection_id: required when target is inspection")
                return self._create_appeal(inspection_id, technician_id, reason)
            if order_id is None:
                raise InvalidError(f"order_id: required when target is {target}")
            return self._create_label_appeal(target, order_id, technician_id, reason)
        except sa.exc.IntegrityError as exc:  # a concurrent appeal won (uq_appeals_open*)
            what = f"inspection {inspection_id}" if target == "inspection" else f"order {order_id}"
            raise ConflictError(f"{what} already has an open or upheld {target} appeal") from exc

    def _create_label_appeal(
        self, target: str, order_id: str, technician_id: str, reason: str
    ) -> dict:
        now = _now()
        o = T.orders.c
        with self.engine.begin() as conn:
            order = (
                conn.execute(
                    sa.select(
                        o.technician_id, o.status, o.rating, o.complaint, o.feedback_comment
                    ).where(o.order_id == order_id)
                )
                .mappings()
                .first()
            )
            if order is None:
                raise NotFoundError(f"order {order_id} does not exist")
            if order["technician_id"] and order["technician_id"] != technician_id:
                raise InvalidError(f"technician_id: {technician_id} did not do order {order_id}")
            rework_order_id = None
            if target == "rework":
                c = T.outcomes.c
                links = conn.execute(
                    sa.select(c.value, c.observed_at)
                    .where(c.order_id == order_id, c.kind == REWORK)
                    .order_by(c.observed_at, c.id)
                ).all()
                if not links:
                    raise ConflictError(f"order {order_id} has no rework link: nothing to appeal")
                first = links[0].value if isinstance(links[0].value, dict) else {}
                rework_order_id = first.get("rework_order_id")
            else:
                rating = order["rating"]
                low = rating is not None and rating <= self.label_config.dissatisfied_max_rating
                if not (order["complaint"] or low or order["feedback_comment"]):
                    raise ConflictError(
                        f"order {order_id} has no complaint, low rating or comment: "
                        "nothing to appeal"
                    )
            a = T.appeals.c
            appeal_id = _insert_appeal(
                conn,
                (a.order_id == order_id) & (a.target == target),
                f"order {order_id} already has {target} appeal",
                target=target,
                inspection_id=None,
                order_id=order_id,
                rework_order_id=rework_order_id,
                technician_id=technician_id,
                reason=reason,
                submitted_at=now,
            )
        return self.get_appeal(appeal_id)

    def _create_appeal(self, inspection_id: int, technician_id: str, reason: str) -> dict:
        now = _now()
        with self.engine.begin() as conn:
            ins = self._inspection(conn, inspection_id)
            if ins is None:
                raise NotFoundError(f"inspection {inspection_id} does not exist")
            if ins["passed"]:
                raise ConflictError(f"inspection {inspection_id} passed: nothing to appeal")
            tech = conn.execute(
                sa.select(T.orders.c.technician_id).where(T.orders.c.order_id == ins["order_id"])
            ).scalar()
            if tech and tech != technician_id:
                raise InvalidError(
                    f"technician_id: {technician_id} did not do order {ins['order_id']}"
                )
            a = T.appeals.c
            appeal_id = _insert_appeal(
                conn,
                (a.inspection_id == inspection_id) & (a.target == "inspection"),
                f"inspection {inspection_id} already has appeal",
                target="inspection",
                inspection_id=inspection_id,
                order_id=ins["order_id"],
                technician_id=technician_id,
                reason=reason,
                submitted_at=now,
            )
        return self.get_appeal(appeal_id)

    def get_appeal(self, appeal_id: str) -> dict[str, Any]:
        """One appeal (404 if unknown)."""
        with self.engine.connect() as conn:
            r = (
                conn.execute(sa.select(T.appeals).where(T.appeals.c.appeal_id == appeal_id))
                .mappings()
                .first()
            )
        if r is None:
            raise NotFoundError(f"appeal {appeal_id} does not exist")
        return _appeal_view(dict(r))

    def list_appeals(self, status: str | None = None) -> list[dict[str, Any]]:
        """Appeals, oldest first, optionally of one status."""
        q = sa.select(T.appeals).order_by(T.appeals.c.submitted_at, T.appeals.c.appeal_id)
        if status is not None:
            q = q.where(T.appeals.c.status == status)
        with self.engine.connect() as conn:
            return [_appeal_view(dict(r)) for r in conn.execute(q).mappings()]

    def decide_appeal(
        self, appeal_id: str, decision: str, reviewer: str, note: str | None
    ) -> dict[str, Any]:
        """Record the reviewer's final decision.

        ``upheld`` overturns the inspection result (target ``inspection``) or overrides the
        order's label to 0 (targets ``rework`` / ``dissatisfaction``:
        :meth:`label_overrides_frame`); ``rejected`` changes nothing but the record.
        """
        if decision not in APPEAL_DECISIONS:
            raise InvalidError(f"decision: must be one of {', '.join(APPEAL_DECISIONS)}")
        now = _now()
        with self.engine.begin() as conn:
            res = conn.execute(
                T.appeals.update()
                .where(T.appeals.c.appeal_id == appeal_id, T.appeals.c.status == "pending")
                .values(status=decision, reviewer=reviewer, decision_note=note, decided_at=now)
            )
            if not res.rowcount:
                exists = conn.execute(
                    sa.select(T.appeals.c.status).where(T.appeals.c.appeal_id == appeal_id)
                ).scalar()
                if exists is None:
                    raise NotFoundError(f"appeal {appeal_id} does not exist")
                raise ConflictError(f"appeal {appeal_id} is already decided ({exists})")
        return self.get_appeal(appeal_id)

    def order_history(self, order_id: str) -> dict[str, Any]:
        """An order's recorded outcomes as JSON-ready records (oldest first)."""
        out = self.outcomes_frame(order_id=order_id)
        ins = self.inspections_frame(order_id=order_id)
        ap = self.appeals_frame(order_id=order_id)
        return {
            "order_id": order_id,
            "followups": _records(
                out[out["kind"] == FOLLOWUP].drop(columns=["rework_order_id", "rework_via"])
            ),
            "reworks": _records(
                out[out["kind"] == REWORK][
                    ["outcome_id", "rework_order_id", "rework_via", "observed_at", "recorded_at"]
                ]
            ),
            "inspections": _records(ins),
            "appeals": _records(ap),
        }

    # ---- frames for reports, dossiers and export --------------------------------------------
    def decisions_frame(
        self,
        start: Any = None,
        end: Any = None,
        *,
        latest_only: bool = True,
    ) -> pd.DataFrame:
        """Decisions of orders completed in ``[start, end)`` (any bound may be None).

        ``start``/``end``: dates or timestamps; naive ones are Asia/Shanghai local time.
        ``latest_only`` (default) keeps the latest decision per order (a re-score supersedes;
        the draw is the same, π may differ): one row per order, what Horvitz–Thompson needs.
        ``inspection_reasons`` is the list of reason codes; ``draw_u`` the keyed uniform draw
        (sampled when ``draw_u < inclusion_probability``); ``reasons`` the recorded
        business-language reasons (list of ``{code, text, feature, value, contribution}``).
        """
        d = T.decisions.c
        q = sa.select(*[d[c] for c in DECISION_COLUMNS])
        if start is not None:
            q = q.where(d.completed_at >= _bound(start))
        if end is not None:
            q = q.where(d.completed_at < _bound(end))
        with self.engine.connect() as conn:
            rows = [
                dict(r) for r in conn.execute(q.order_by(d.created_at, d.decision_id)).mappings()
            ]
        if latest_only:
            rows = list({r["order_id"]: r for r in rows}.values())
        for r in rows:
            r["inspection_reasons"] = [x.get("code") for x in (r["inspection_reasons"] or [])]
        frame = _frame(rows, DECISION_COLUMNS, ("completed_at", "created_at"))
        for c in ("rework_risk", "dissatisfaction_prob", "inclusion_probability", "draw_u"):
            frame[c] = frame[c].astype("float64")
        for c in ("mandatory_inspection", "third_party_sample"):
            frame[c] = frame[c].astype("bool")
        return frame

    def outcomes_frame(self, *, order_id: str | None = None) -> pd.DataFrame:
        """Every recorded outcome, oldest first: follow-ups, rework links (and legacy kinds).

        Follow-ups fill ``rating``/``comment``/``complaint`` and ``observed_at`` (the
        follow-up time); rework links fill ``rework_order_id``, ``rework_via``
        (``parent_order_id`` | ``same_unit_category``) and ``observed_at`` (the rework's
        report). ``is_latest`` marks the latest row per order and kind (latest wins: a
        corrected follow-up supersedes the earlier one).
        """
        c = T.outcomes.c
        q = sa.select(
            c.id, c.order_id, c.kind, c.value, c.source, c.observed_at, c.recorded_at
        ).order_by(c.recorded_at, c.id)
        if order_id is not None:  # one order's history (GET /v1/outcomes/{order_id})
            q = q.where(c.order_id == order_id)
        rows = []
        with self.engine.connect() as conn:
            for r in conn.execute(q).mappings():
                v = r["value"] if isinstance(r["value"], dict) else {}
                rows.append(
                    {
                        "outcome_id": r["id"],
                        "order_id": r["order_id"],
                        "kind": r["kind"],
                        "rating": v.get("rating") if r["kind"] == FOLLOWUP else None,
                        "comment": v.get("comment") if r["kind"] == FOLLOWUP else None,
                        "complaint": v.get("complaint") if r["kind"] == FOLLOWUP else None,
                        "observed_at": r["observed_at"],
                        "rework_order_id": v.get("rework_order_id")
                        if r["kind"] == REWORK
                        else None,
                        "rework_via": v.get("via") if r["kind"] == REWORK else None,
                        "value": r["value"],
                        "source": r["source"],
                        "recorded_at": r["recorded_at"],
                    }
                )
        latest = {(r["order_id"], r["kind"]): r["outcome_id"] for r in rows}
        for r in rows:
            r["is_latest"] = latest[(r["order_id"], r["kind"])] == r["outcome_id"]
        frame = _frame(rows, OUTCOME_COLUMNS, ("observed_at", "recorded_at"))
        frame["rating"] = pd.to_numeric(frame["rating"]).astype("Int64")
        frame["complaint"] = frame["complaint"].astype("boolean")
        frame["is_latest"] = frame["is_latest"].astype("bool")
        return frame

    def inspections_frame(self, *, order_id: str | None = None) -> pd.DataFrame:
        """One row per inspection result (internal | third_party), oldest inspection first.

        ``overturned`` (with ``appeal_id``): an appeal against the result was upheld, so it
        no longer counts as a failure — ``counts_as_failure`` = not passed and not
        overturned is what dossiers, labels and the export use. ``is_latest`` marks the
        latest result per order and kind (by inspection time, then recording).
        """
        c = T.inspection_results.c
        a = T.appeals.c
        with self.engine.connect() as conn:
            rows = [
                dict(r)
                for r in conn.execute(
                    sa.select(T.inspection_results)
                    .where(c.order_id == order_id if order_id is not None else sa.true())
                    .order_by(c.inspected_at, c.recorded_at, c.id)
                ).mappings()
            ]
            upheld = dict(
                conn.execute(
                    sa.select(a.inspection_id, a.appeal_id).where(
                        a.status == "upheld",
                        a.target == "inspection",
                        a.order_id == order_id if order_id is not None else sa.true(),
                    )
                ).all()
            )
        out = []
        for r in rows:
            appeal = upheld.get(r["id"])
            out.append(
                {
                    "inspection_id": r["id"],
                    "kind": r["kind"],
                    "order_id": r["order_id"],
                    "passed": bool(r["passed"]),
                    "defect_codes": list(r["defect_codes"] or []),
                    "inspector": r["inspector"],
                    "agency": r["agency"],
                    "notes": r["notes"],
                    "photos": list(r["photos"] or []),
                    "inspected_at": r["inspected_at"],
                    "recorded_at": r["recorded_at"],
                    "source": r["source"],
                    "overturned": appeal is not None,
                    "appeal_id": appeal,
                    "counts_as_failure": (not r["passed"]) and appeal is None,
                }
            )
        latest = {(r["order_id"], r["kind"]): r["inspection_id"] for r in out}
        for r in out:
            r["is_latest"] = latest[(r["order_id"], r["kind"])] == r["inspection_id"]
        frame = _frame(out, INSPECTION_COLUMNS, ("inspected_at", "recorded_at"))
        for col in ("passed", "overturned", "counts_as_failure", "is_latest"):
            frame[col] = frame[col].astype("bool")
        frame["inspection_id"] = frame["inspection_id"].astype("int64")
        return frame

    def rectifications_frame(self, now: dt.datetime | None = None) -> pd.DataFrame:
        """Every rectification item, with its derived status.

        ``status`` is derived (``overdue`` past the deadline while not done),
        ``stored_status`` is what was recorded; ``done_at`` when it was (last) marked done —
        the "after" of an effectiveness comparison.
        """
        with self.engine.connect() as conn:
            rows = [
                _rect_view(dict(r), now)
                for r in conn.execute(sa.select(T.rectifications)).mappings()
            ]
        for r in rows:
            for k in ("deadline", "reinspected_at", "done_at", "created_at", "updated_at"):
                r[k] = utc(pd.Timestamp(r[k])) if r[k] else None
        frame = _frame(
            rows,
            RECTIFICATION_COLUMNS,
            ("deadline", "reinspected_at", "done_at", "created_at", "updated_at"),
        )
        frame["reinspection_passed"] = frame["reinspection_passed"].astype("boolean")
        return frame

    def appeals_frame(self, *, order_id: str | None = None) -> pd.DataFrame:
        """Every appeal with its status (pending | upheld | rejected) and decision."""
        with self.engine.connect() as conn:
            rows = [
                dict(r)
                for r in conn.execute(
                    sa.select(*[T.appeals.c[k] for k in APPEAL_COLUMNS])
                    .where(T.appeals.c.order_id == order_id if order_id is not None else sa.true())
                    .order_by(T.appeals.c.submitted_at)
                ).mappings()
            ]
        frame = _frame(rows, APPEAL_COLUMNS, ("submitted_at", "decided_at"))
        frame["inspection_id"] = frame["inspection_id"].astype("Int64")  # none for label appeals
        return frame

    def label_overrides_frame(self) -> pd.DataFrame:
        """The label overrides the upheld label appeals decide (``models.labels`` columns).

        One row per upheld ``rework`` / ``dissatisfaction`` appeal: the order's label
        (``rework`` | ``dissatisfied``) set to 0, ``source`` the appeal id, ``decided_at`` the
        decision time (ISO, Asia/Shanghai), ``reason`` the appeal's reason and the reviewer's
        note. Derived from the appeals on every read, so the appeals stay the only record;
        rejected and pending appeals produce none.
        """
        from models.labels import LABEL_OVERRIDE_COLUMNS

        a = T.appeals.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    a.appeal_id, a.order_id, a.target, a.reason, a.decision_note, a.decided_at
                )
                .where(a.status == "upheld", a.target.in_(list(APPEAL_TARGET_LABEL)))
                .order_by(a.decided_at, a.appeal_id)
            ).all()
        out = [
            {
                "order_id": r.order_id,
                "label": APPEAL_TARGET_LABEL[r.target],
                "value": 0,
                "source": r.appeal_id,
                "decided_at": _iso(r.decided_at),
                "reason": r.reason
                if not r.decision_note
                else f"{r.reason}；复核：{r.decision_note}",
            }
            for r in rows
        ]
        return pd.DataFrame(out, columns=LABEL_OVERRIDE_COLUMNS)


# --------------------------------------------------------------------------------------------
# Rework links: the label's definition on the few orders of a home
# --------------------------------------------------------------------------------------------


class _Order(NamedTuple):
    order_id: str
    unit_id: str | None
    category: str | None
    status: str | None
    reported_at: dt.datetime | None
    completed_at: dt.datetime | None
    parent_order_id: str | None


def _fetch_orders(
    conn: Connection,
    found: dict[str, _Order],
    *,
    units: set[str],
    order_ids: set[str],
    parents: set[str],
    pairs: set[tuple[Any, Any]] | None = None,
    since: dt.datetime | None = None,
    window: dt.timedelta | None = None,
) -> None:
    """Add to ``found`` the orders of ``units``, ``order_ids`` and children of ``parents``.

    Orders of ``units`` only of the (unit, category) ``pairs`` and, with ``since``, only
    those completed or reported after ``since - window`` (the rework rule's reach).
    """
    for r in _fetch_rows(
        conn, found, units=units, order_ids=order_ids, parents=parents, pairs=pairs,
        since=since, window=window,
    ):  # fmt: skip
        found[r[0]] = _Order(r[0], r[1], r[2], r[3], _aware(r[4]), _aware(r[5]), r[6])


def _fetch_rows(
    conn: Connection,
    seen: Any,
    *,
    units: set[str],
    order_ids: set[str],
    parents: set[str],
    pairs: set[tuple[Any, Any]] | None = None,
    since: dt.datetime | None = None,
    window: dt.timedelta | None = None,
) -> Iterator[Any]:
    """The rows :func:`_fetch_orders` adds, raw and in query order.

    Each row is ``(order_id, unit_id, category, status, reported_at, completed_at,
    parent_order_id)`` with the times as the driver returns them (ISO text on SQLite); ids
    ``in seen`` (and those yielded already) are skipped.
    """
    yielded: set[str] = set()
    for by_unit, rows in _order_rows(conn, units, order_ids, parents, since, window):
        for r in rows:
            if r[0] in seen or r[0] in yielded:
                continue
            if by_unit and pairs is not None and (r[1], r[2]) not in pairs:
                continue
            yielded.add(r[0])
            yield r


def _order_rows(
    conn: Connection,
    units: set[str],
    order_ids: set[str],
    parents: set[str],
    since: dt.datetime | None,
    window: dt.timedelta | None,
) -> Iterator[tuple[bool, list[Any]]]:
    """The queries of :func:`_fetch_rows`, one chunk of ids at a time: ``(by_unit, rows)``.

    On SQLite straight through the DBAPI cursor of ``conn`` (its transaction): the same
    statement SQLAlchemy would send, without a ``Row`` and a ``fetchone`` per row, which were
    most of the time of a 10,000-order batch's links (~14,000 rows fetched).
    """
    o = T.orders.c
    cols = [o.order_id, o.unit_id, o.category, o.status, o.reported_at, o.completed_at]
    cols.append(o.parent_order_id)
    lo = since - window if since is not None and window is not None else None
    queries = ((o.unit_id, units), (o.order_id, order_ids), (o.parent_order_id, parents))
    if conn.dialect.name == "sqlite":
        names = ", ".join(c.name for c in cols)
        recent: list[Any] = []
        recent_sql = ""
        if lo is not None:
            recent = [o.completed_at.type._cached_bind_processor(conn.dialect)(lo)] * 2
            recent_sql = " AND (completed_at >= ? OR reported_at >= ?)"
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            for col, values in queries:
                by_unit = col is o.unit_id
                for chunk in _chunks(values - {None}):
                    sql = f"SELECT {names} FROM orders WHERE {col.name} IN "
                    sql += f"({', '.join('?' * len(chunk))})" + (recent_sql if by_unit else "")
                    cursor.execute(sql, [*chunk, *(recent if by_unit else [])])
                    yield by_unit, cursor.fetchall()
        finally:
            cursor.close()
        return
    recent_q = sa.true() if lo is None else sa.or_(o.completed_at >= lo, o.reported_at >= lo)
    for col, values in queries:
        by_unit = col is o.unit_id
        for chunk in _chunks(values - {None}):
            q = sa.select(*cols).where(col.in_(chunk), recent_q if by_unit else sa.true())
            yield by_unit, [tuple(r) for r in conn.execute(q).fetchall()]


#: From this many orders in one call, rework links are found column-wise (numpy) instead of per
#: home in Python; both give the same links (tests). A 10,000-order batch (~14,000 orders
#: fetched): the link search itself ~10x faster, the whole call 0.23 -> ~0.12 s CPU.
VECTOR_LINK_ORDERS = 200
_NAT = np.iinfo(np.int64).min
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)


class _Fetched:
    """Fetched orders as columns, in fetch order (what ``found`` holds in the row path)."""

    def __init__(self) -> None:
        self.pos: dict[str, int] = {}
        self.rows: list[Any] = []

    def __contains__(self, order_id: object) -> bool:
        return order_id in self.pos

    def extend(self, rows: Iterable[Any]) -> None:
        for r in rows:
            self.pos[r[0]] = len(self.rows)
            self.rows.append(r)

    def columns(self) -> dict[str, Any]:
        """Ids, groups (unit, category), status, times (epoch us, ``_NAT``), parents."""
        n = len(self.rows)
        ids, unit, cat, status, rep, done, parent = (
            (list(c) for c in zip(*self.rows, strict=True)) if n else ([] for _ in range(7))
        )
        keys: dict[tuple[Any, Any], int] = {}
        group = np.fromiter(
            (keys.setdefault(k, len(keys)) for k in zip(unit, cat, strict=True)),
            dtype=np.int64,
            count=n,
        )
        rep_us, done_us = _micros(rep), _micros(done)
        live = (np.array(status, dtype=object) != "cancelled") & (rep_us != _NAT)
        completed = np.array([s == "completed" for s in status], dtype=bool)
        return {
            "ids": ids,
            "group": group,
            "live": live,
            "completed": completed & (done_us != _NAT),
            "rep": rep_us,
            "done": done_us,
            "parent": parent,
        }


def _micros(values: list[Any]) -> np.ndarray:
    """Epoch microseconds of stored times (naive values are UTC; None -> ``_NAT``).

    SQLite's text (``YYYY-MM-DD HH:MM:SS.ffffff``, naive UTC) is parsed by numpy in one call;
    anything else (other drivers' datetimes, another text form) per value by :func:`_aware`.
    """
    if all(type(v) is str and len(v) == 26 and v[10] == " " for v in values if v is not None):
        arr = np.array(["NaT" if v is None else v for v in values], dtype="datetime64[us]")
        return arr.astype(np.int64)
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        a = _aware(v)
        out[i] = _NAT if a is None else (a - _EPOCH) // _US
    return out


def _ranks(*arrays: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Dense ranks of the values of ``arrays`` in one common order, and the number of ranks.

    Why: (group, time) pairs become one int64 key ``group * n_ranks + rank`` that sorts and
    searches like the pair (epoch microseconds times group ids would overflow int64).
    """
    values, inverse = np.unique(np.concatenate(arrays), return_inverse=True)
    out, k = [], 0
    for a in arrays:
        out.append(inverse[k : k + len(a)].astype(np.int64))
        k += len(a)
    return out, len(values) + 1


def _first_reworks_vectorised(
    conn: Connection, ids: set[str], scope: dict[str, Any], window: dt.timedelta
) -> dict[str, tuple[dt.datetime, str, str]]:
    """What ``QualityLoopStore._first_reworks_rows`` returns, column-wise (big batches).

    The same two fetches, the same ``earlier`` set and :func:`first_reworks`' rule with its
    ties (the first candidate in fetch order among equal report times), on int64 epoch
    microseconds: the window is exact to the microsecond as in datetime arithmetic.
    """
    w_us = window // _US
    found = _Fetched()
    found.extend(_fetch_rows(conn, found, **scope))
    c = found.columns()
    new = np.fromiter((i in ids for i in c["ids"]), dtype=bool, count=len(c["ids"]))
    # earlier orders of a new order n: same group, live, completed, n.rep - W <= done < n.rep
    q = np.flatnonzero(new & c["live"])
    m = np.flatnonzero(c["live"] & (c["done"] != _NAT))
    earlier = set(ids)
    if len(q) and len(m):
        (r_done, r_lo, r_hi), n_ranks = _ranks(c["done"][m], c["rep"][q] - w_us, c["rep"][q])
        key = c["group"][m] * n_ranks + r_done
        order = np.argsort(key, kind="stable")
        key = key[order]
        lo = np.searchsorted(key, c["group"][q] * n_ranks + r_lo, side="left")
        hi = np.searchsorted(key, c["group"][q] * n_ranks + r_hi, side="left")
        cover = np.zeros(len(m) + 1, dtype=np.int64)
        np.add.at(cover, lo, 1)
        np.add.at(cover, hi, -1)
        hit = m[order[np.cumsum(cover[:-1]) > 0]]
        earlier.update(c["ids"][i] for i in hit.tolist())
    parents = {p for p in (c["parent"][i] for i in q.tolist()) if p in found and p not in ids}
    others = (earlier - ids) | parents
    if others:  # their children (a rework elsewhere may come first) and the parents' homes
        unit_of = {r[0]: r[1] for r in (found.rows[found.pos[p]] for p in parents)}
        found.extend(
            _fetch_rows(
                conn,
                found,
                units={u for u in unit_of.values() if u},
                order_ids=set(),
                parents=others,
            )
        )
        earlier |= parents
        c = found.columns()
    return _first_of(c, [found.pos[i] for i in earlier if i in found], w_us)


def _first_of(
    c: dict[str, Any], rows: list[int], w_us: int
) -> dict[str, tuple[dt.datetime, str, str]]:
    """:func:`first_reworks` of the fetched rows ``rows`` (positions), column-wise."""
    ids, rep, done, parent = c["ids"], c["rep"], c["done"], c["parent"]
    o = np.array(sorted(rows), dtype=np.int64)
    o = o[c["completed"][o]] if len(o) else o
    out: dict[str, tuple[dt.datetime, str, str]] = {}
    if not len(o):
        return out
    cand = np.flatnonzero(c["live"])
    best = np.full(len(o), -1, dtype=np.int64)
    if len(cand):
        # first live order of the same group reported in (done, done + W]; ties: fetch order
        (r_rep, r_done), n_ranks = _ranks(rep[cand], done[o])
        key = c["group"][cand] * n_ranks + r_rep
        order = np.lexsort((cand, key))
        key, cand_sorted = key[order], cand[order]
        at = np.searchsorted(key, c["group"][o] * n_ranks + r_done, side="right")
        ok = at < len(key)
        j = cand_sorted[np.minimum(at, len(key) - 1)]
        ok &= (c["group"][j] == c["group"][o]) & (rep[j] <= done[o] + w_us)
        best = np.where(ok, j, -1)
    # the first (earliest report, then fetch order) live child naming the order as parent
    kids = [i for i in cand.tolist() if parent[i] is not None]
    first_kid: dict[str, int] = {}
    for i in sorted(kids, key=lambda i: (rep[i], i)):
        first_kid.setdefault(parent[i], i)
    for oi, b in zip(o.tolist(), best.tolist(), strict=True):
        kid = first_kid.get(ids[oi])
        if kid is not None and rep[kid] > done[oi] and (b < 0 or rep[kid] < rep[b]):
            b = kid
        if b < 0:
            continue
        via = "parent_order_id" if parent[b] == ids[oi] else "same_unit_category"
        out[ids[oi]] = (_EPOCH + dt.timedelta(microseconds=int(rep[b])), ids[b], via)
    return out


def _aware(v: dt.datetime | str | None) -> dt.datetime | None:
    """:func:`utc` for values read from the store (naive values are UTC)."""
    if v is None:
        return None
    if isinstance(v, str):
        v = dt.datetime.fromisoformat(v)
    return v if v.tzinfo is not None else v.replace(tzinfo=dt.UTC)


def _groups(orders: Iterable[_Order]) -> dict[tuple[Any, Any], list[_Order]]:
    """Not-cancelled orders by (unit, category): the candidates of the same-home rule."""
    out: dict[tuple[Any, Any], list[_Order]] = defaultdict(list)
    for r in orders:
        if r.status != "cancelled" and r.reported_at is not None:
            out[(r.unit_id, r.category)].append(r)
    return out


def first_reworks(
    orders: dict[str, _Order],
    earlier: Iterable[str],
    window: dt.timedelta,
    groups: dict[tuple[Any, Any], list[_Order]] | None = None,
) -> dict[str, tuple[dt.datetime, str, str]]:
    """Per completed order of ``earlier``: ``(reported_at, order_id, via)`` of its rework.

    Exactly :func:`models.labels.rework_labels`' ``rework_order_id`` (the tests compare them on
    a simulated operation): (1) the first not-cancelled order of the same unit and category
    reported in ``(completed_at, completed_at + window]``; (2) the first not-cancelled order
    naming it as parent, if reported after its completion; the earlier of the two wins.
    ``orders`` must hold the order's home and children; ``groups`` is ``_groups(orders)``.
    """
    groups = _groups(orders.values()) if groups is None else groups
    kids: dict[str, list[_Order]] = defaultdict(list)
    for r in orders.values():
        if r.parent_order_id and r.status != "cancelled" and r.reported_at is not None:
            kids[r.parent_order_id].append(r)
    out: dict[str, tuple[dt.datetime, str, str]] = {}
    for oid in earlier:
        o = orders.get(oid)
        if o is None or o.status != "completed" or o.completed_at is None:
            continue
        best: tuple[dt.datetime, str, str] | None = None
        end = o.completed_at + window
        for c in groups.get((o.unit_id, o.category), ()):
            at = c.reported_at
            if o.completed_at < at <= end and (best is None or at < best[0]):
                best = (at, c.order_id, "same_unit_category")
        if oid in kids:
            k = min(kids[oid], key=lambda r: r.reported_at)
            if k.reported_at > o.completed_at and (best is None or k.reported_at < best[0]):
                best = (k.reported_at, k.order_id, "parent_order_id")
        if best is not None:
            if orders[best[1]].parent_order_id == oid:
                best = (best[0], best[1], "parent_order_id")
            out[oid] = best
    return out


# --------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    """An aware time as ISO 8601 in Asia/Shanghai (what quality teams read)."""
    v = utc(value)
    return None if v is None else pd.Timestamp(v).tz_convert(TIMEZONE).isoformat()


def _bound(value: Any) -> dt.datetime:
    """A frame bound (date, string or timestamp; naive = Asia/Shanghai) as aware UTC."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize(TIMEZONE)
    return ts.tz_convert("UTC").to_pydatetime()


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(
        json.dumps(d, default=lambda v: _iso(v) if isinstance(v, dt.datetime) else str(v))
    )


def _rect_view(r: dict[str, Any], now: dt.datetime | None = None) -> dict[str, Any]:
    """A stored item with ISO times and the derived status (overdue past its deadline)."""
    now = utc(now) or _now()
    stored = r["status"]
    deadline = utc(r["deadline"])
    overdue = stored in ("open", "in_progress") and deadline is not None and now > deadline
    out = {k: r.get(k) for k in RECTIFICATION_COLUMNS if k not in ("status", "stored_status")}
    for k in ("deadline", "reinspected_at", "done_at", "created_at", "updated_at"):
        out[k] = _iso(r.get(k))
    out["evidence"] = list(r.get("evidence") or [])
    out["status"] = "overdue" if overdue else stored
    out["stored_status"] = stored
    return {k: out[k] for k in RECTIFICATION_COLUMNS}


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Frame rows as JSON-ready dicts: ISO times, None for missing values."""
    out = []
    for rec in frame.to_dict("records"):
        row = {}
        for k, v in rec.items():
            if isinstance(v, pd.Timestamp):
                v = v.isoformat()
            elif v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v):
                v = None
            elif hasattr(v, "item") and not isinstance(v, list | dict):
                v = v.item()
            row[k] = v
        out.append(row)
    return out


def _appeal_view(r: dict[str, Any]) -> dict[str, Any]:
    out = {k: r.get(k) for k in APPEAL_COLUMNS}
    out["submitted_at"] = _iso(r.get("submitted_at"))
    out["decided_at"] = _iso(r.get("decided_at"))
    return out


__all__ = [
    "APPEAL_DECISIONS",
    "APPEAL_TARGETS",
    "INSPECTION_KINDS",
    "QUEUE_STATUSES",
    "RECTIFICATION_STATUSES",
    "ConflictError",
    "InvalidError",
    "NotFoundError",
    "QualityLoopStore",
]


def _insert_appeal(conn: Connection, same_target: Any, conflict: str, **fields: Any) -> str:
    """Insert a pending appeal unless the same target already has an open or upheld one.

    ``same_target`` selects the target's earlier appeals; ``conflict`` opens the 409 message.
    The check runs in the caller's transaction (the partial unique index backs it under
    concurrent submissions). Returns the new appeal id.
    """
    a = T.appeals.c
    for p in conn.execute(sa.select(a.appeal_id, a.status).where(same_target)).all():
        if p.status in ("pending", "upheld"):
            raise ConflictError(f"{conflict} {p.appeal_id} ({p.status})")
    appeal_id = _new_id("AP")
    conn.execute(T.appeals.insert().values(appeal_id=appeal_id, status="pending", **fields))
    return appeal_id
