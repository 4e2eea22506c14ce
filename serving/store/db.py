"""Engine, migrations and the store's queries (the only module that writes SQL).

Concurrency: every write is one short transaction. On SQLite the database runs in WAL mode with
a busy timeout, so concurrent requests queue for the single writer instead of failing; on
PostgreSQL the usual MVCC applies. Idempotency races (two requests scoring the same order at the
same moment) are settled by the unique constraint on decisions: the loser's insert is skipped
and it returns the winner's row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from models.labels import LabelConfig
from models.schemas import ORDERS, TECHNICIANS, TIMEZONE, UNITS, Table
from serving.store import tables as T
from serving.store.quality import QualityLoopStore

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
#: Seconds a SQLite writer waits for the lock before failing (requests queue, never drop).
SQLITE_BUSY_TIMEOUT_S = 30
#: Roles of API keys and what they may do (checked in ``serving.deps``).
ROLES: tuple[str, ...] = ("system", "quality", "admin")
#: Prefix of every key: recognisable in a leaked-secret scan.
KEY_PREFIX = "rqc_"


def utcnow() -> dt.datetime:
    """Timezone-aware now (UTC): what every ``*_at`` column of the service records."""
    return dt.datetime.now(dt.UTC)


def make_engine(url: str) -> Engine:
    """Engine for ``url``; SQLite gets WAL, a busy timeout and a created parent folder."""
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
        )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: durable across process crashes, one fsync per checkpoint
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def upgrade(engine: Engine) -> None:
    """Apply all alembic migrations (idempotent: a store at head is left alone)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


# --------------------------------------------------------------------------------------------
# Row conversion
# --------------------------------------------------------------------------------------------


def _to_db(value: Any) -> Any:
    """A typed pandas cell as a DB value (NA -> None, timestamps -> UTC datetimes)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.tz_convert("UTC").to_pydatetime() if value.tzinfo else value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def frame_rows(frame: pd.DataFrame, table: Table) -> list[dict[str, Any]]:
    """Contract columns of a typed frame as DB rows."""
    cols = [c for c in table.names if c in frame]
    if len(frame) <= 16:  # a few rows: per cell (column-wise has a fixed cost per column)
        return [
            {c: _to_db(v) for c, v in zip(cols, row, strict=True)}
            for row in frame[cols].itertuples(index=False, name=None)
        ]
    values = [_column_to_db(frame[c]) for c in cols]  # column-wise: ~4x faster per row
    return [dict(zip(cols, row, strict=True)) for row in zip(*values, strict=True)]


def _column_to_db(s: pd.Series) -> list[Any]:
    """:func:`_to_db` of every cell of a typed column, converted column-wise."""
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        utc = s.dt.tz_convert("UTC")
        return [None if v is pd.NaT else v.to_pydatetime() for v in utc.astype(object)]
    if s.dtype.kind in "fiub" or isinstance(s.dtype, pd.StringDtype) or s.dtype == object:
        na = s.isna().to_numpy()
        out = s.astype(object).tolist()
        for i in np.flatnonzero(na):
            out[i] = None
        return [v.item() if isinstance(v, np.generic) else v for v in out]
    return [_to_db(v) for v in s]


def content_hash(row: dict[str, Any]) -> str:
    """SHA-256 of an order's contract fields: what "the same order" means for idempotency."""
    canon = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}
    blob = json.dumps(canon, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _typed_frame(rows: Sequence[Any], table: Table) -> pd.DataFrame:
    """DB rows back into a typed contract frame (timestamps in Asia/Shanghai)."""
    frame = pd.DataFrame([dict(r._mapping) for r in rows], columns=table.names)
    for c in table.columns:
        s = frame[c.name]
        if c.dtype == "timestamp":
            ts = pd.to_datetime(s, utc=False)
            ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts
            frame[c.name] = ts.dt.tz_convert(TIMEZONE).astype(f"datetime64[ns, {TIMEZONE}]")
        elif c.dtype == "date":
            frame[c.name] = pd.to_datetime(s).astype("datetime64[ns]")
        elif c.dtype == "bool":
            frame[c.name] = s.astype("boolean")
        elif c.dtype == "int":
            frame[c.name] = pd.to_numeric(s).astype("Int64")
        elif c.dtype == "float":
            frame[c.name] = pd.to_numeric(s).astype("float64")
        else:
            frame[c.name] = s.astype("string")
    return frame


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class Store(QualityLoopStore):
    """Queries of the audit store over one engine.

    The quality loop's records (outcomes, inspections, queue, rectification, appeals) and the
    frames the reports read are methods of :class:`serving.store.quality.QualityLoopStore`.
    """

    def __init__(self, engine: Engine, label_config: LabelConfig | None = None):
        self.engine = engine
        #: Rework window of the automatic rework links (the labels' definition and window).
        self.label_config = label_config or LabelConfig()

    # ---- orders and side tables ---------------------------------------------------------
    def upsert_orders(self, rows: list[dict[str, Any]], hashes: list[str]) -> int:
        """Insert new orders, update changed ones (a correction is the newest truth).

        New and changed orders are linked to the earlier orders they rework (an outcome of
        kind ``rework``, see :meth:`link_reworks`).

        Returns the number of rows inserted or changed (what the history refresh counts).
        """
        if not rows:
            return 0
        now = utcnow()
        ids = [r["order_id"] for r in rows]
        with self.engine.begin() as conn:
            known = dict(
                conn.execute(
                    sa.select(T.orders.c.order_id, T.orders.c.input_hash).where(
                        T.orders.c.order_id.in_(ids)
                    )
                ).all()
            )
            new = [
                {**r, "input_hash": h, "received_at": now}
                for r, h in zip(rows, hashes, strict=True)
                if r["order_id"] not in known
            ]
            changed = [
                {**r, "input_hash": h, "received_at": now}
                for r, h in zip(rows, hashes, strict=True)
                if r["order_id"] in known and known[r["order_id"]] != h
            ]
            if new:
                conn.execute(_insert_ignore(self.engine, T.orders, "order_id"), new)
            for r in changed:
                conn.execute(
                    T.orders.update().where(T.orders.c.order_id == r["order_id"]).values(**r)
                )
            if changed:  # a corrected order keeps the follow-ups recorded for it
                self.fold_followups([r["order_id"] for r in changed], conn)
            if new or changed:  # same transaction: an order is never stored without its links
                self.link_reworks(new + changed, conn=conn)
        return len(new) + len(changed)

    def upsert_side(self, table: sa.Table, contract: Table, rows: list[dict[str, Any]]) -> None:
        """Insert or replace technicians / units (the latest master data wins)."""
        if not rows:
            return
        now = utcnow()
        key = contract.key
        with self.engine.begin() as conn:
            ids = [r[key] for r in rows]
            conn.execute(table.delete().where(table.c[key].in_(ids)))
            conn.execute(table.insert(), [{**r, "received_at": now} for r in rows])

    def orders_frame(self, order_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Stored orders (all, or those of ``order_ids``) as a typed contract frame."""
        q = sa.select(*[T.orders.c[c] for c in ORDERS.names])
        with self.engine.connect() as conn:
            if order_ids is None:
                rows = conn.execute(q).all()
            else:
                ids = list(dict.fromkeys(order_ids))
                rows = []
                for i in range(0, len(ids), 500):
                    rows += conn.execute(q.where(T.orders.c.order_id.in_(ids[i : i + 500]))).all()
        return _typed_frame(rows, ORDERS)

    def side_frame(self, which: str) -> pd.DataFrame | None:
        """Stored technicians or units as a typed frame, None when there are none."""
        table, contract = (
            (T.technicians, TECHNICIANS) if which == "technicians" else (T.units, UNITS)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*[table.c[c] for c in contract.names])).all()
        return _typed_frame(rows, contract) if rows else None

    def order_count(self) -> int:
        """Number of stored orders."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(T.orders)).scalar())

    # ---- decisions ----------------------------------------------------------------------
    def find_decisions(
        self, keys: Iterable[tuple[str, str]], model_version: str | None
    ) -> dict[str, dict[str, Any]]:
        """Latest recorded decision per (order_id, input_hash); of ``model_version`` if given."""
        keys = list(keys)
        if not keys:
            return {}
        wanted = dict(keys)
        q = sa.select(T.decisions).where(T.decisions.c.order_id.in_(list(wanted)))
        if model_version is not None:
            q = q.where(T.decisions.c.model_version == model_version)
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(q.order_by(T.decisions.c.created_at)).mappings():
                if wanted.get(r["order_id"]) == r["input_hash"]:
                    out[r["order_id"]] = dict(r)
        return out

    def insert_decisions(self, rows: list[dict[str, Any]]) -> int:
        """Record decisions; a concurrent duplicate (same order, input, model) is skipped.

        One transaction, one ``executemany``. Returns the rows inserted (-1 when the driver
        does not say): fewer than given means another request recorded some first.
        """
        if not rows:
            return 0
        with self.engine.begin() as conn:
            res = conn.execute(
                _insert_ignore(self.engine, T.decisions, "order_id", "input_hash", "model_version"),
                rows,
            )
        return res.rowcount if res.rowcount is not None else -1

    def slots_used(self, community_id: str, day_start: dt.datetime, day_end: dt.datetime) -> int:
        """Capacity mode: model-flagged decisions of a community completed in a local day."""
        q = sa.select(sa.func.count()).where(
            T.decisions.c.community_id == community_id,
            T.decisions.c.completed_at >= day_start,
            T.decisions.c.completed_at < day_end,
            T.decisions.c.mandatory_inspection.is_(True),
        )
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar())

    # ---- outcomes -------------------------------------------------------------------------
    def add_outcomes(self, rows: list[dict[str, Any]]) -> int:
        """Record raw outcomes (``order_id``, ``kind``, ``value``, ``source``) as they are.

        Kept for callers of the first API version; the quality loop records typed outcomes
        with :meth:`add_followups` and :meth:`add_inspections`.
        """
        if rows:
            now = utcnow()
            with self.engine.begin() as conn:
                conn.execute(T.outcomes.insert(), [{**r, "recorded_at": now} for r in rows])
        return len(rows)

    # ---- API keys -------------------------------------------------------------------------
    def create_key(self, role: str, note: str | None = None) -> tuple[str, str]:
        """Create a key of ``role``; returns ``(key_id, key)``. Only the hash is stored."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        with self.engine.begin() as conn:
            conn.execute(
                T.api_keys.insert().values(
                    key_id=key_id,
                    key_hash=hash_key(key),
                    role=role,
                    note=note,
                    created_at=utcnow(),
                )
            )
        return key_id, key

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key by id; False when there is no such active key."""
        with self.engine.begin() as conn:
            res = conn.execute(
                T.api_keys.update()
                .where(T.api_keys.c.key_id == key_id, T.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return bool(res.rowcount)

    def list_keys(self) -> list[dict[str, Any]]:
        """Key ids, roles, notes and dates (never the keys)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(T.api_keys).order_by(T.api_keys.c.created_at)).mappings()
            return [{k: v for k, v in r.items() if k != "key_hash"} for r in rows]

    def role_of(self, key: str) -> str | None:
        """Role of an active key, None for an unknown or revoked one."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(T.api_keys.c.role).where(
                    T.api_keys.c.key_hash == hash_key(key), T.api_keys.c.revoked_at.is_(None)
                )
            ).scalar()


def hash_key(key: str) -> str:
    """SHA-256 of a key: keys are 256-bit random, so a plain hash is not brute-forceable."""
    return hashlib.sha256(key.encode()).hexdigest()


def _insert_ignore(engine: Engine, table: sa.Table, *conflict: str) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` for SQLite and PostgreSQL (idempotent writes)."""
    name = engine.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # pragma: no cover - other databases: plain insert, the constraint still guards
        return table.insert()
    return insert(table).on_conflict_do_nothing(index_elements=list(conflict))
