"""Engine, migrations and the store's queries (the only module that writes SQL).

Concurrency: every write is one short transaction (a score request passes one connection to
its reads and writes, so its orders, rework links and decisions commit together). On SQLite
the database runs in WAL mode with a busy timeout, so concurrent requests queue for the single
writer instead of failing; on PostgreSQL the usual MVCC applies. Idempotency races (two
requests scoring the same order at the same moment) are settled by the unique constraint on
decisions: the loser's insert is skipped and it returns the winner's row.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
import json
import logging
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from models.labels import LabelConfig
from models.schemas import ORDERS, TECHNICIANS, TIMEZONE, UNITS, Table
from serving.store import tables as T
from serving.store.quality import QualityLoopStore

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
#: Seconds a SQLite writer waits for the lock before failing (requests queue, never drop).
SQLITE_BUSY_TIMEOUT_S = 30
#: WAL size (pages) from which the background checkpointer copies the WAL into the database:
#: SQLite's own ``wal_autocheckpoint`` default, so the WAL stays as small as before.
WAL_CHECKPOINT_PAGES = 1000
#: How often the background checkpointer looks at the WAL's size (one ``stat``).
WAL_CHECKPOINT_POLL_S = 0.25
#: Roles of API keys and what they may do (checked in ``serving.deps``).
ROLES: tuple[str, ...] = ("system", "quality", "admin")
#: Prefix of every key: recognisable in a leaked-secret scan.
KEY_PREFIX = "rqc_"
#: Most API keys whose role a store remembers (see ``Store.cached_role_of``).
KEY_CACHE_MAX = 1024


def utcnow() -> dt.datetime:
    """Timezone-aware now (UTC): what every ``*_at`` column of the service records."""
    return dt.datetime.now(dt.UTC)


def json_text(value: Any) -> str:
    """JSON columns' serializer: orjson (~10x stdlib ``json.dumps`` on the decisions' reasons).

    The text differs from ``json.dumps``' (UTF-8 instead of ASCII escapes, no spaces); what
    reads back is the same value. A value orjson refuses (e.g. a non-string dict key) goes
    through ``json.dumps`` as before.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        return json.dumps(value)


def postgres_driver(url: str | sa.engine.URL) -> sa.engine.URL:
    """``url`` with the driver the project ships (psycopg 3) when a PostgreSQL URL names none.

    Why: ``postgresql://…`` (and the older ``postgres://…``) make SQLAlchemy load psycopg2,
    which is not a dependency, so the service failed at start with "No module named
    'psycopg2'"; an explicit driver (``postgresql+psycopg2://``) is left as given.
    """
    parsed = sa.engine.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str, autocheckpoint: bool = True) -> Engine:
    """Engine for ``url``: SQLite with WAL, a busy timeout and its folder; PostgreSQL in UTC.

    PostgreSQL sessions run in UTC so that times read back are the times written (see
    ``_utc_session``).

    ``autocheckpoint=False``: the engine's connections never checkpoint the WAL themselves
    (``wal_autocheckpoint=0``); the owner must run a :class:`WalCheckpointer`, or the WAL only
    shrinks when the last connection closes. The service does: otherwise the commit that
    crosses SQLite's 1,000-page threshold copies the WAL into the database inside a request
    (~4 % of a 10,000-order batch's CPU), although a committed WAL transaction is durable
    without the checkpoint.

    Why ``synchronous=NORMAL`` is enough for an audit store: in WAL mode a commit is durable
    across a crash of the *process* (the service) at once; only a power loss or OS crash can
    lose the last transactions before the next WAL checkpoint, never corrupt the database. The
    callers of ``POST /v1/score`` re-send what was not answered (decisions are idempotent), so
    such a loss is repaired by the retry, and ``FULL`` would cost one fsync per request.
    """
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
            json_serializer=json_text,
        )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: durable across process crashes, one fsync per checkpoint
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
            if not autocheckpoint:
                cur.execute("PRAGMA wal_autocheckpoint=0")
            cur.close()

        return engine
    engine = sa.create_engine(postgres_driver(url), pool_pre_ping=True, json_serializer=json_text)
    if engine.dialect.name == "postgresql":

        @sa.event.listens_for(engine, "connect")
        def _utc_session(dbapi_conn: Any, _record: Any) -> None:
            # Why: PostgreSQL returns timestamptz values in the session's time zone (the
            # server's default, e.g. Asia/Shanghai), SQLite the UTC values written. In UTC,
            # every time read back is what the service wrote and shows (a replayed decision's
            # created_at is the same text as when it was made), whatever the server's setting.
            # Committed: a SET inside a transaction that is rolled back (the pool's reset on
            # return) would be undone.
            cur = dbapi_conn.cursor()
            cur.execute("SET TIME ZONE 'UTC'")
            cur.close()
            dbapi_conn.commit()

    return engine


class WalCheckpointer:
    """Checkpoints a SQLite WAL from a background thread instead of inside the committing request.

    Why: with SQLite's automatic checkpoint, the writer whose commit pushes the WAL past
    ``wal_autocheckpoint`` pages copies it into the database before its request can answer.
    Here the engine's connections have autocheckpoint off (``make_engine(autocheckpoint=False)``)
    and this thread runs the same ``PASSIVE`` checkpoint SQLite would, once the WAL file
    exceeds the same threshold, on its own connection (the sqlite3 driver releases the GIL
    while it runs, so a request thread keeps its core). Durability is unchanged: a committed
    transaction is in the WAL (durable across a process crash at once, as before); the
    checkpoint only moves it into the main file. A ``PASSIVE`` checkpoint never blocks
    readers or writers. Not SQLite, or an in-memory database: :meth:`start` does nothing.
    """

    def __init__(
        self,
        engine: Engine,
        pages: int = WAL_CHECKPOINT_PAGES,
        poll_seconds: float = WAL_CHECKPOINT_POLL_S,
    ):
        self.engine = engine
        self.pages = pages
        self.poll_seconds = poll_seconds
        self.checkpoints = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        path = engine.url.database if engine.dialect.name == "sqlite" else None
        self._wal = Path(f"{path}-wal") if path and path != ":memory:" else None

    def start(self) -> None:
        """Start the thread (idempotent; nothing to do off SQLite files)."""
        if self._wal is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and checkpoint once more (what was committed lands in the file)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self.checkpoint()

    def checkpoint(self) -> None:
        """One ``PASSIVE`` checkpoint (copies what no reader still needs; never waits)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self.checkpoints += 1

    def _due(self, page_size: int) -> bool:
        try:
            return self._wal is not None and self._wal.stat().st_size > self.pages * page_size
        except FileNotFoundError:
            return False

    def _loop(self) -> None:
        with self.engine.connect() as conn:
            page_size = int(conn.exec_driver_sql("PRAGMA page_size").scalar() or 4096)
        while not self._stop.wait(self.poll_seconds):
            if self._due(page_size):
                try:
                    self.checkpoint()
                except Exception:  # noqa: BLE001 - retried at the next poll; never kill the loop
                    log.warning("WAL checkpoint failed", exc_info=True)


#: Key of the PostgreSQL advisory lock held while migrating (any constant of this project).
MIGRATION_LOCK_KEY = 0x72717C5F6D6967  # "rqc_mig"


def upgrade(engine: Engine, target: str = "head") -> None:
    """Apply the alembic migrations up to ``target`` (idempotent: a store there is left alone).

    ``target``: a revision id; the service always migrates to ``head``, tests also build a
    store of an earlier revision to check that upgrading keeps its rows.

    Service processes starting together on a fresh store (several workers) ran the
    migration at once, and all but one failed on tables or the version row the first had just
    created. So it runs under a lock, and the others wait, then find the store at head: on
    PostgreSQL a transaction-level advisory lock; on SQLite the database's write lock, taken
    with ``BEGIN IMMEDIATE`` before alembic reads the version (the sqlite3 driver would run
    the DDL outside any transaction otherwise); a waiting process retries for the busy timeout.
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)


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
    """SHA-256 of an order's contract fields: what "the same order" means for idempotency.

    The text hashed must never change (stored hashes are compared with new ones): it is
    ``json.dumps(canon, sort_keys=True, ensure_ascii=False, default=str)``, through one
    encoder built once (``json.dumps`` with options builds one per call).
    """
    canon = {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()}
    return hashlib.sha256(_HASH_ENCODER.encode(canon).encode()).hexdigest()


#: ``json.dumps(..., sort_keys=True, ensure_ascii=False, default=str)`` as an encoder object.
_HASH_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)
#: The encoder's string writer (``ensure_ascii=False``), the C function it calls per string.
_JSON_STR = json.encoder.encode_basestring
#: From this many rows, :func:`content_hashes` writes the hashed text column-wise.
_HASH_COLUMNS_ROWS = 32


def content_hashes(
    rows: list[dict[str, Any]], columns: dict[str, list[Any]] | None = None
) -> list[str]:
    """``[content_hash(r) for r in rows]``, the text written column-wise (~4x faster).

    The hashed text must be exactly the encoder's, so this path only takes rows with the same
    keys and values of the types the service's rows hold, each written as the C encoder writes
    it: ``str`` (``encode_basestring``), ``None``, ``bool``, ``int`` and ``float``
    (``repr``; NaN/Infinity as the encoder spells them) and UTC-or-other aware ``datetime``
    (its ``isoformat()`` as a string). Anything else: :func:`content_hash` per row.

    ``columns``: the rows' values per key, when the caller has them (the rows are built from
    them: same keys in every row).
    """
    if len(rows) < _HASH_COLUMNS_ROWS:
        return [content_hash(r) for r in rows]
    keys = rows[0].keys()
    if columns is None and any(r.keys() != keys for r in rows):
        return [content_hash(r) for r in rows]
    names = sorted(keys)
    fragments = []
    for k in names:
        frag = _json_fragments(columns[k] if columns is not None else [r[k] for r in rows])
        if frag is None:
            return [content_hash(r) for r in rows]
        fragments.append(frag)
    template = "{" + ", ".join(_JSON_STR(k).replace("%", "%%") + ": %s" for k in names) + "}"
    sha = hashlib.sha256
    return [sha((template % t).encode()).hexdigest() for t in zip(*fragments, strict=True)]


def _utc_isoformats(values: list[dt.datetime]) -> list[str]:
    """``[v.isoformat() for v in values]`` for UTC datetimes, from numpy (~4x faster).

    ``isoformat`` writes the microseconds only when there are some.
    """
    us = _utc_micros(values)
    whole, micro = np.divmod(us, 1_000_000)
    with_us = np.datetime_as_string(us.astype("datetime64[us]"), unit="us")
    no_us = np.datetime_as_string(whole.astype("datetime64[s]"), unit="s")
    return [
        (a if m else b) + "+00:00"
        for a, b, m in zip(with_us.tolist(), no_us.tolist(), (micro != 0).tolist(), strict=True)
    ]


def _json_fragments(values: list[Any]) -> list[str] | None:
    """Each value as ``_HASH_ENCODER`` writes it in a row (None: a type this path leaves out)."""
    types = set(map(type, values))
    if types <= {str, type(None)}:
        enc = _JSON_STR
        return ["null" if v is None else enc(v) for v in values]
    if types <= {dt.datetime, type(None)}:
        present = [v for v in values if v is not None]
        if present and all(v.tzinfo is dt.UTC for v in present):  # the service's rows
            texts = _utc_isoformats(present)
        else:
            texts = [v.isoformat() for v in present]
        it = iter(texts)
        return ["null" if v is None else f'"{next(it)}"' for v in values]
    if types <= {bool, int, float, type(None)}:
        out = []
        for v in values:
            if v is None:
                out.append("null")
            elif v is True:
                out.append("true")
            elif v is False:
                out.append("false")
            elif type(v) is float and not math.isfinite(v):
                out.append("NaN" if v != v else ("Infinity" if v > 0 else "-Infinity"))
            else:
                out.append(repr(v))
        return out
    return None


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

    def __init__(
        self,
        engine: Engine,
        label_config: LabelConfig | None = None,
        key_cache_seconds: float = 5.0,
    ):
        self.engine = engine
        #: Rework window of the automatic rework links (the labels' definition and window).
        self.label_config = label_config or LabelConfig()
        #: How long a key's role (or its absence) is remembered: a key revoked by another
        #: process (the CLI) stops working within this time; in this process at once.
        self.key_cache_seconds = key_cache_seconds
        self._keys = _key_cache(engine)

    @contextmanager
    def transaction(self, conn: Connection | None = None) -> Iterator[Connection]:
        """``conn`` when the caller has one open (its transaction), else a new transaction."""
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as c:
            yield c

    # ---- orders and side tables ---------------------------------------------------------
    def upsert_orders(
        self,
        rows: list[dict[str, Any]],
        hashes: list[str],
        conn: Connection | None = None,
        columns: dict[str, list[Any]] | None = None,
        known: dict[str, str] | None = None,
    ) -> int:
        """Insert new orders, update changed ones (a correction is the newest truth).

        New and changed orders are linked to the earlier orders they rework (an outcome of
        kind ``rework``, see :meth:`link_reworks`).

        Returns the number of rows inserted or changed (what the history refresh counts).
        ``conn``: the caller's transaction (the score request's), else one of its own.
        ``columns``: the rows' values per column (the score request has them), read by the
        insert instead of every row. ``known``: :meth:`order_hashes` of the rows, looked up
        by the caller in ``conn``'s transaction (else here).
        """
        if not rows:
            return 0
        with self.transaction(conn) as conn:
            write, finish = self.upsert_orders_steps(rows, hashes, conn, columns, known)
            if write is not None:
                write()
            return finish()

    def upsert_orders_steps(
        self,
        rows: list[dict[str, Any]],
        hashes: list[str],
        conn: Connection,
        columns: dict[str, list[Any]] | None = None,
        known: dict[str, str] | None = None,
    ) -> tuple[Callable[[], int] | None, Callable[[], int]]:
        """:meth:`upsert_orders` in ``conn``'s transaction as two steps: ``(write, finish)``.

        ``write`` (None: no new order) inserts the new orders, prepared already (values
        converted): it only executes statements, so a caller may run it on another thread
        while it works on something else (the sqlite3 driver releases the GIL while SQLite
        inserts). ``finish`` then updates the changed orders and records the rework links,
        and returns what :meth:`upsert_orders` returns. Nothing else may use ``conn`` between
        the two, and ``finish`` must run after ``write`` has returned.
        """
        now = utcnow()
        if known is None:
            known = self.order_hashes([r["order_id"] for r in rows], conn)
        fresh = [i for i, r in enumerate(rows) if r["order_id"] not in known]
        new = [rows[i] for i in fresh]
        changed = [
            {**r, "input_hash": h, "received_at": now}
            for r, h in zip(rows, hashes, strict=True)
            if r["order_id"] in known and known[r["order_id"]] != h
        ]
        write = None
        if new:  # the rows as given, their hash and arrival as extra columns (no copies)
            extra = {"input_hash": [hashes[i] for i in fresh], "received_at": [now] * len(new)}
            if columns is not None:  # the new rows' values, column by column
                every = len(fresh) == len(rows)
                extra |= {c: v if every else [v[i] for i in fresh] for c, v in columns.items()}
            write = prepare_insert_ignore(conn, T.orders, ("order_id",), new, extra)

        def finish() -> int:
            for r in lock_order(conn, changed, ("order_id",)):
                conn.execute(
                    T.orders.update().where(T.orders.c.order_id == r["order_id"]).values(**r)
                )
            if changed:  # a corrected order keeps the follow-ups recorded for it
                self.fold_followups([r["order_id"] for r in changed], conn)
            if new or changed:  # same transaction: an order is never stored without its links
                self.link_reworks(new + changed, conn=conn)
            return len(new) + len(changed)

        return write, finish

    def order_hashes(self, ids: list[str], conn: Connection) -> dict[str, str]:
        """Stored ``input_hash`` of each order of ``ids`` that is stored (in ``conn``'s view)."""
        select = "SELECT order_id, input_hash FROM orders WHERE order_id IN "
        raw = _rows_by_ids(conn, select, ids)
        if raw is None:
            raw = conn.execute(
                sa.select(T.orders.c.order_id, T.orders.c.input_hash).where(
                    T.orders.c.order_id.in_(ids)
                )
            ).all()
        return dict(raw)

    def upsert_side(self, table: sa.Table, contract: Table, rows: list[dict[str, Any]]) -> None:
        """Insert or replace technicians / units (the latest master data wins).

        PostgreSQL: one ``INSERT … ON CONFLICT DO UPDATE`` of every column (a column a row
        does not give becomes NULL, as with a replace), in key order. Why not delete + insert
        as on SQLite: two requests carrying the same master data at once both deleted the old
        rows, and the later insert failed on the earlier one's new rows (duplicate key).
        """
        if not rows:
            return
        now = utcnow()
        key = contract.key
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert

                names = [c.name for c in table.columns if c.name != "received_at"]
                full = [{**{n: r.get(n) for n in names}, "received_at": now} for r in rows]
                stmt = insert(table)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[key],
                    set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name != key},
                )
                conn.execute(stmt, lock_order(conn, full, (key,)))
                return
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
        self,
        keys: Iterable[tuple[str, str]],
        model_version: str | None,
        conn: Connection | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Latest recorded decision per (order_id, input_hash); of ``model_version`` if given."""
        keys = list(keys)
        if not keys:
            return {}
        wanted = dict(keys)
        out: dict[str, dict[str, Any]] = {}
        with self.transaction(conn) as conn:
            # SQLite: which orders have a matching decision at all, straight through the DBAPI
            # (a new order, the common case, then needs no ORM query: ~0.3 ms of one order)
            found = _rows_by_ids(
                conn,
                "SELECT order_id, input_hash FROM decisions WHERE order_id IN ",
                list(wanted),
                *(("model_version = ?", model_version) if model_version is not None else ()),
            )
            if found is not None:
                wanted = {i: h for i, h in found if wanted.get(i) == h}
                if not wanted:
                    return out
            q = sa.select(T.decisions).where(T.decisions.c.order_id.in_(list(wanted)))
            if model_version is not None:
                q = q.where(T.decisions.c.model_version == model_version)
            for r in conn.execute(q.order_by(T.decisions.c.created_at)).mappings():
                if wanted.get(r["order_id"]) == r["input_hash"]:
                    out[r["order_id"]] = dict(r)
        return out

    def insert_decisions(
        self,
        rows: list[dict[str, Any]],
        conn: Connection | None = None,
        columns: dict[str, list[Any]] | None = None,
    ) -> int:
        """Record decisions; a concurrent duplicate (same order, input, model) is skipped.

        One ``executemany`` (in ``conn``'s transaction if given). Returns the rows inserted (-1
        when the driver does not say): fewer than given means another request recorded some
        first. ``columns``: the rows' values per column (the scorer has them; read instead of
        every row, and a column holding one object converts it once).
        """
        if not rows:
            return 0
        with self.transaction(conn) as conn:
            return self.prepare_decisions(rows, conn, columns)()

    def prepare_decisions(
        self,
        rows: list[dict[str, Any]],
        conn: Connection,
        columns: dict[str, list[Any]] | None = None,
    ) -> Callable[[], int]:
        """:meth:`insert_decisions` prepared (values converted): call it to execute the insert.

        Like ``upsert_orders_steps``' ``write``, it may run on another thread while nothing
        else uses ``conn``. ``rows`` may be empty dicts when ``columns`` holds every value.
        """
        return prepare_insert_ignore(
            conn, T.decisions, ("order_id", "input_hash", "model_version"), rows, columns
        )

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
        most = T.api_keys.c.note.type.length  # PostgreSQL enforces it (SQLite would not)
        if note is not None and len(note) > most:
            raise ValueError(f"note: at most {most} characters (got {len(note)})")
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
        self.forget_keys()  # an unknown key remembered as such may be this one
        return key_id, key

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key by id; False when there is no such active key."""
        with self.engine.begin() as conn:
            res = conn.execute(
                T.api_keys.update()
                .where(T.api_keys.c.key_id == key_id, T.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        self.forget_keys()  # the revoked key stops working in this process at once
        return bool(res.rowcount)

    def list_keys(self) -> list[dict[str, Any]]:
        """Key ids, roles, notes and dates (never the keys)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(T.api_keys).order_by(T.api_keys.c.created_at)).mappings()
            return [{k: v for k, v in r.items() if k != "key_hash"} for r in rows]

    def role_of(self, key: str) -> str | None:
        """Role of an active key, None for an unknown or revoked one (always from the DB)."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(T.api_keys.c.role).where(
                    T.api_keys.c.key_hash == hash_key(key), T.api_keys.c.revoked_at.is_(None)
                )
            ).scalar()

    def cached_role_of(self, key: str) -> str | None:
        """:meth:`role_of`, remembered for ``key_cache_seconds`` (the request path's lookup).

        Why: a key lookup is a DB round trip on every request. Keys created or revoked through
        this store clear the cache at once; a change made by another process (``keys revoke``
        on the CLI) is seen within ``key_cache_seconds``. At most ``KEY_CACHE_MAX`` keys are
        remembered (random wrong keys cannot grow the cache without bound).
        """
        h = hash_key(key)
        now = time.monotonic()
        cache = self._keys
        hit = cache.entries.get(h)
        if hit is not None and now - hit[1] < self.key_cache_seconds:
            return hit[0]
        generation = cache.entries
        role = self.role_of(key)
        with cache.lock:
            if cache.entries is generation:  # not forgotten meanwhile (a revoke during lookup)
                if len(generation) >= KEY_CACHE_MAX:
                    generation.clear()
                generation[h] = (role, now)
        return role

    def forget_keys(self) -> None:
        """Drop every remembered key role of this database (a key was created or revoked)."""
        with self._keys.lock:
            self._keys.entries = {}


class _KeyCache:
    """Remembered key roles of one database, shared by every ``Store`` of it in the process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[str, tuple[str | None, float]] = {}


_KEY_CACHES: dict[str, _KeyCache] = {}
_KEY_CACHES_LOCK = threading.Lock()


def _key_cache(engine: Engine) -> _KeyCache:
    """The key cache of ``engine``'s database (a revoke through any store of it clears it)."""
    url = engine.url.render_as_string(hide_password=True)
    with _KEY_CACHES_LOCK:
        return _KEY_CACHES.setdefault(url, _KeyCache())


def hash_key(key: str) -> str:
    """SHA-256 of a key: keys are 256-bit random, so a plain hash is not brute-forceable."""
    return hashlib.sha256(key.encode()).hexdigest()


#: Ids per ``IN (...)`` of the DBAPI lookups (below SQLite's variable limit of 32,766).
_IN_CHUNK = 10_000


def _rows_by_ids(
    conn: Connection, select_in: str, ids: list[str], *also: str
) -> list[tuple[Any, ...]] | None:
    """Rows of ``select_in + "(?, ...)"`` over ``ids`` on SQLite; None on other databases.

    Through the DBAPI cursor of ``conn`` (its transaction), in chunks; elsewhere the caller
    runs its SQLAlchemy query. ``also``: one more condition and its value, e.g.
    ``("model_version = ?", version)``. Why: SQLAlchemy's statement building and row
    processing cost ~0.15-0.3 ms per call, more than the whole lookup of one order.
    """
    if conn.dialect.name != "sqlite":
        return None
    extra_sql, extra = (f" AND {also[0]}", [also[1]]) if also else ("", [])
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            sql = f"{select_in}({', '.join('?' * len(chunk))}){extra_sql}"
            out += cursor.execute(sql, [*chunk, *extra]).fetchall()
        return out
    finally:
        cursor.close()


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


def lock_order(conn: Connection, rows: list[dict[str, Any]], key: Sequence[str]) -> list[Any]:
    """``rows`` sorted by ``key``'s values on databases with row locks (not SQLite).

    Why: on PostgreSQL an insert waits for a concurrent transaction's uncommitted row with the
    same key, and an update locks its row until commit. Two requests writing the same rows in
    different orders (a batch and its reverse, two workers) each held a row the other wanted:
    a deadlock, one request failed. Written in one order, the later writer only waits. SQLite
    has a single writer: rows are returned as given.
    """
    if conn.dialect.name == "sqlite" or len(rows) < 2:
        return rows
    return sorted(rows, key=lambda r: tuple(str(r[k]) for k in key))


def insert_ignore_many(
    conn: Connection,
    table: sa.Table,
    conflict: tuple[str, ...],
    rows: list[dict[str, Any]],
    extra: dict[str, list[Any]] | None = None,
) -> int:
    """``executemany`` of :func:`_insert_ignore`; the rows inserted (-1 when unknown).

    See :func:`prepare_insert_ignore` (this runs what it prepares at once).
    """
    return prepare_insert_ignore(conn, table, conflict, rows, extra)()


def prepare_insert_ignore(
    conn: Connection,
    table: sa.Table,
    conflict: tuple[str, ...],
    rows: list[dict[str, Any]],
    extra: dict[str, list[Any]] | None = None,
) -> Callable[[], int]:
    """:func:`insert_ignore_many` with the rows' values converted now; call it to execute.

    ``extra``: more columns, one value per row (as if each row had them), without copying
    the rows; a column of ``extra`` that the rows have too is read from ``extra``.

    Why not ``conn.execute(stmt, rows)`` on SQLite: SQLAlchemy converts every bound value of
    every row through the column types' processors (datetimes to text, JSON through the
    serializer, one dict per row), which was half the CPU of a 10,000-order request. Here the
    statement is compiled once per column set and the rows become tuples with the same
    conversions per *column* (:func:`_sqlite_converters`), so the stored text is what
    SQLAlchemy stores; a column holding one object in every row (a batch's arrival time) is
    converted once. Other databases take SQLAlchemy's path (the driver's own executemany),
    the rows in the order of their conflict key (:func:`lock_order`).
    """
    if not rows:
        return lambda: 0
    extra = extra or {}
    cols = (*(c for c in rows[0] if c not in extra), *extra)
    if conn.dialect.name != "sqlite" or _needs_defaults(table, cols):
        if extra:
            rows = [
                {**r, **dict(zip(extra, vals, strict=True))}
                for r, vals in zip(rows, zip(*extra.values(), strict=True), strict=True)
            ]
        rows = lock_order(conn, rows, conflict)

        def execute() -> int:
            res = conn.execute(_insert_ignore(conn.engine, table, *conflict), rows)
            return res.rowcount if res.rowcount is not None else -1

        return execute
    if any(len(r) != len(rows[0]) for r in rows):
        raise ValueError(f"{table.name}: rows of one insert must have the same columns")
    sql, order, convs = _compiled_insert(conn.dialect, table, conflict, cols)
    columns = []
    for c, conv in zip(order, convs, strict=True):
        values = extra[c] if c in extra else [r[c] for r in rows]
        if len(values) != len(rows):
            raise ValueError(f"{table.name}.{c}: {len(values)} values for {len(rows)} rows")
        if conv is None:
            columns.append(values)
        elif len(values) > 1 and all(v is values[0] for v in values):
            columns.append([conv(values[0])] * len(values))
        elif getattr(conv, "utc_text", False) and len(values) >= _VECTOR_ROWS:
            columns.append(_utc_texts(values, conv))
        else:
            columns.append([conv(v) for v in values])
    params = list(zip(*columns, strict=True))
    return lambda: _execute_rows(conn, sql, params)


#: Rows per multi-row ``INSERT … VALUES (…), (…)`` of :func:`_execute_rows` (SQLite).
MULTI_ROWS = 500


def _execute_rows(conn: Connection, sql: str, params: list[tuple[Any, ...]]) -> int:
    """``executemany(sql, params)`` on SQLite, ``MULTI_ROWS`` rows per statement; rows changed.

    Why: ``executemany`` steps SQLite once per row and releases the GIL around each step, so a
    10,000-row insert on the store's writer thread took the GIL back 10,000 times and
    ran in turns with the request thread instead of beside it. A multi-row ``VALUES`` statement
    is bound at once and stepped once: SQLite inserts its rows without the GIL. Same rows,
    same order, same ``ON CONFLICT`` rule (a row conflicting with an earlier row of the same
    statement is skipped as in separate statements); the rest (fewer than a chunk) and any
    statement not of the expected form go through ``executemany``.
    """
    n_cols = len(params[0]) if params else 0
    dbapi = conn.connection.dbapi_connection
    limit = dbapi.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # type: ignore[union-attr]
    per = min(MULTI_ROWS, limit // n_cols) if n_cols else 0
    multi = _multi_row_sql(sql, n_cols, per) if per > 1 and len(params) >= per else None
    full = len(params) // per * per if multi is not None else 0
    done = 0
    for i in range(0, full, per):
        res = conn.exec_driver_sql(multi, tuple(itertools.chain.from_iterable(params[i : i + per])))
        done = -1 if done < 0 or res.rowcount is None or res.rowcount < 0 else done + res.rowcount
    if full < len(params):
        res = conn.exec_driver_sql(sql, params[full:])
        rest = res.rowcount if res.rowcount is not None else -1
        done = -1 if done < 0 or rest < 0 else done + rest
    return done


@functools.lru_cache(maxsize=64)
def _multi_row_sql(sql: str, n_cols: int, rows: int) -> str | None:
    """``sql`` (one ``VALUES (?, …)`` group of ``n_cols``) with ``rows`` groups; None if not."""
    group = "(" + ", ".join("?" * n_cols) + ")"
    head, sep, tail = sql.partition(" VALUES " + group)
    if not sep or "?" in head or "?" in tail:
        return None
    return head + " VALUES " + ", ".join([group] * rows) + tail


def _needs_defaults(table: sa.Table, cols: tuple[str, ...]) -> bool:
    """Whether a column left out has a Python-side default (only SQLAlchemy's path fills it)."""
    given = set(cols)
    return any(c.default is not None for c in table.columns if c.name not in given)


@functools.lru_cache(maxsize=64)
def _compiled_insert(
    dialect: Any, table: sa.Table, conflict: tuple[str, ...], cols: tuple[str, ...]
) -> tuple[str, list[str], list[Any]]:
    """SQL text, parameter order and per-parameter converters of an insert-ignore of ``cols``."""
    from sqlalchemy.dialects.sqlite import insert

    stmt = insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    compiled = stmt.compile(dialect=dialect, column_keys=list(cols))
    order = list(compiled.positiontup or [])
    if sorted(order) != sorted(cols):  # pragma: no cover - a statement we cannot map
        raise RuntimeError(f"{table.name}: unexpected parameters {order}")
    return compiled.string, order, [_sqlite_converter(table.c[c].type, dialect) for c in order]


def _sqlite_converter(type_: Any, dialect: Any) -> Any:
    """Per-value converter equal to ``type_``'s SQLite bind processor (None: no conversion)."""
    process = type_._cached_bind_processor(dialect)
    if isinstance(type_, sa.JSON):
        if type_.none_as_null:
            return lambda v: None if v is None else json_text(v)
        return json_text  # None -> 'null', as SQLAlchemy's JSON type stores it
    if isinstance(type_, sa.DateTime) and process is not None:
        fmt = getattr(type_, "_storage_format", None) or getattr(
            dialect.type_descriptor(type_), "_storage_format", None
        )
        if fmt != _SQLITE_DATETIME_FORMAT:  # pragma: no cover - a custom storage format
            return process
        datetime_type = dt.datetime

        def to_text(v: Any) -> Any:
            if type(v) is datetime_type:  # 'YYYY-MM-DD HH:MM:SS.ffffff', the offset dropped
                return v.isoformat(" ", "microseconds")[:26]
            return process(v)

        to_text.utc_text = True  # type: ignore[attr-defined]
        return to_text
    return process


#: From this many rows on, a datetime column is rendered to text vectorised (numpy).
_VECTOR_ROWS = 64


def _utc_texts(values: list[Any], conv: Any) -> list[Any]:
    """``[conv(v) for v in values]`` for a column of UTC datetimes, ~10x faster.

    Only when every value is None or a ``datetime`` in UTC (what the service writes), whose
    SQLite text is its UTC wall clock; anything else goes through ``conv`` per value.
    """
    utc, datetime_type = dt.UTC, dt.datetime
    present = [v for v in values if v is not None]
    if not present or not all(type(v) is datetime_type and v.tzinfo is utc for v in present):
        return [conv(v) for v in values]
    texts = np.datetime_as_string(_utc_micros(present).astype("datetime64[us]"), unit="us")
    it = iter(texts.tolist())
    return [None if v is None else next(it).replace("T", " ") for v in values]


def _utc_micros(values: list[dt.datetime]) -> np.ndarray:
    """Epoch microseconds of UTC ``datetime`` objects (exact; pandas converts in C)."""
    try:
        return pd.DatetimeIndex(values).as_unit("us").asi8
    except (ValueError, OverflowError):  # beyond pandas' nanosecond range (years 1677-2262)
        return np.fromiter(
            ((v - _EPOCH_UTC) // _MICROSECOND for v in values), dtype=np.int64, count=len(values)
        )


_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


#: SQLAlchemy's default SQLite ``DATETIME`` storage format (what ``_sqlite_converter`` mirrors).
_SQLITE_DATETIME_FORMAT = (
    "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"
)
