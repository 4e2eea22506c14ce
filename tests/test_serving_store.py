"""Audit store: migrations match the tables, keys are hashed, PII is masked in logs."""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from typer.testing import CliRunner

from pipelines.cli import app
from serving.observability import JsonFormatter, mask_pii
from serving.store import tables as T
from serving.store.db import Store, make_engine, upgrade


def test_migrations_create_exactly_the_declared_tables(tmp_path, database_url):
    """What alembic's autogenerate compares, on each backend (PostgreSQL with a test server)."""
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'a.db'}")
    upgrade(engine)
    upgrade(engine)  # idempotent
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), T.metadata)
    assert diff == []


def test_a_store_of_an_earlier_revision_upgrades_keeping_its_rows(tmp_path, database_url):
    """A deployed store is migrated in place when the service is upgraded: the later
    revisions (0004 copies the SQLite tables to make the keys NOT NULL, 0005 widens integers)
    keep every row and value and end at exactly the declared schema."""
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0003")
    at = "2026-01-01 08:00:00"
    order = (
        "INSERT INTO orders (order_id, community_id, unit_id, area_type, channel, category,"
        " priority, description, reported_at, status, urge_count, input_hash, received_at)"
        " VALUES (:id, 'C1', :unit, 'indoor', 'app', 'plumbing', 'normal', '厨房漏水',"
        " :at, 'completed', :urges, 'h', :at)"
    )
    with engine.begin() as conn:
        for i in range(40):
            params = {"id": f"O{i}", "unit": f"U{i % 7}", "at": at, "urges": i}
            conn.execute(sa.text(order), params)
        for i in range(7):
            conn.execute(
                sa.text(
                    "INSERT INTO units (unit_id, community_id, building_year, received_at)"
                    " VALUES (:u, 'C1', 2001, :at)"
                ),
                {"u": f"U{i}", "at": at},
            )
    upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT order_id, unit_id, urge_count, description FROM orders")
        ).fetchall()
        units = conn.execute(sa.text("SELECT count(*) FROM units")).scalar()
        diff = compare_metadata(MigrationContext.configure(conn), T.metadata)
    assert sorted((r[0], r[1], r[2], r[3]) for r in rows) == sorted(
        (f"O{i}", f"U{i % 7}", i, "厨房漏水") for i in range(40)
    )
    assert units == 7
    assert diff == []
    engine.dispose()


def test_keys_are_stored_hashed_and_roles_checked(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    upgrade(engine)
    store = Store(engine)
    key_id, key = store.create_key("quality", note="品质部")
    assert store.role_of(key) == "quality"
    assert store.role_of(key + "x") is None
    with engine.connect() as conn:
        stored = conn.execute(sa.select(T.api_keys.c.key_hash)).scalar()
    assert key not in stored and len(stored) == 64
    assert store.revoke_key(key_id) and store.role_of(key) is None


def test_keys_cli_prints_a_key_once(tmp_path, monkeypatch, database_url):
    monkeypatch.setenv("REPAIRQC_DATABASE_URL", database_url or f"sqlite:///{tmp_path / 'k.db'}")
    r = CliRunner().invoke(app, ["keys", "create", "--role", "system"])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[0]
    assert key.startswith("rqc_")
    listed = CliRunner().invoke(app, ["keys", "list"]).stdout
    assert "system" in listed and key not in listed
    bad = CliRunner().invoke(app, ["keys", "create", "--role", "root"])
    assert bad.exit_code == 2 and "role must be one of system, quality, admin" in bad.output
    long = CliRunner().invoke(app, ["keys", "create", "--role", "system", "--note", "x" * 201])
    assert long.exit_code == 2 and "note: at most 200 characters (got 201)" in long.output


def test_pii_is_masked_in_free_text_and_logs():
    text = "张先生电话13812345678，联系人：李小明，座机021-62345678，身份证110101199003071234"
    masked = mask_pii(text)
    for secret in ("13812345678", "李小明", "张先生", "62345678", "110101199003071234"):
        assert secret not in masked
    rec = logging.makeLogRecord({"msg": "call %s", "args": ("13812345678",), "note": "王女士"})
    out = json.loads(JsonFormatter().format(rec))
    assert "13812345678" not in out["msg"] and out["note"] == "[称呼]"


def test_cached_key_roles_follow_create_and_revoke_at_once(tmp_path, monkeypatch):
    """The request path's key cache: a revoke or create in this process takes effect at once
    (through any store of the database); one made elsewhere within ``key_cache_seconds``."""
    from serving.store import db

    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    upgrade(engine)
    served = Store(engine, key_cache_seconds=60)  # the service's store
    admin = Store(make_engine(f"sqlite:///{tmp_path / 'a.db'}"))  # e.g. a route or the CLI
    key_id, key = admin.create_key("system")
    assert served.cached_role_of(key) == "system"
    # the DB is no longer asked while the role is cached
    monkeypatch.setattr(Store, "role_of", lambda self, k: "admin")
    assert served.cached_role_of(key) == "system"
    monkeypatch.undo()
    assert admin.revoke_key(key_id)
    assert served.cached_role_of(key) is None  # at once, not after the TTL

    # an unknown key is remembered as unknown, until a key is created
    unknown = "rqc_000000000000_" + "x" * 43
    assert served.cached_role_of(unknown) is None
    _, fresh = admin.create_key("quality")
    assert served.cached_role_of(fresh) == "quality"

    # revoked by another process (straight in the DB): refused once the TTL has passed
    with engine.begin() as conn:
        conn.execute(T.api_keys.update().values(revoked_at=db.utcnow()))
    assert served.cached_role_of(fresh) == "quality"  # cached, within the bound
    t = db.time.monotonic()
    monkeypatch.setattr(db.time, "monotonic", lambda: t + 61)
    assert served.cached_role_of(fresh) is None


def test_bulk_insert_stores_what_sqlalchemy_stores(tmp_path):
    """The SQLite bulk path (pre-converted tuples) writes byte-identical rows to
    SQLAlchemy's own executemany: datetimes, missing values, JSON with Chinese text."""
    import datetime as dt

    from serving.store.db import _insert_ignore, insert_ignore_many

    t0 = dt.datetime(2026, 3, 1, 8, 30, 5, 123456, tzinfo=dt.UTC)
    rows = [
        {
            "decision_id": f"d{i}",
            "order_id": f"o{i}",
            "input_hash": "h",
            "model_version": "m@1",
            "model_versions": {"rework": "3", "dissatisfaction": "4"},
            "policy_version": "p1",
            "rework_risk": 0.1 * i,
            "dissatisfaction_prob": 0.25,
            "risk_level": "高",
            "mandatory_inspection": bool(i % 2),
            "inspection_reasons": [{"code": "x", "source": "rule", "text": "近30天投诉"}],
            "third_party_sample": False,
            "inclusion_probability": 1 / 3,
            "draw_u": 0.5,
            "reasons": [{"code": "c", "text": "技师认证未知", "value": None, "contribution": -0.12}]
            if i
            else [],
            "community_id": "C1",
            "completed_at": None if i == 2 else t0 + dt.timedelta(seconds=i),
            "created_at": t0.replace(microsecond=0),
        }
        for i in range(4)
    ]
    # a batch as large as the vectorised datetime path takes (microseconds, None, years)
    for i in range(4, 140):
        r = dict(rows[1], decision_id=f"d{i}", order_id=f"o{i}")
        r["completed_at"] = None if i % 7 == 0 else t0 + dt.timedelta(days=300 * i, microseconds=i)
        r["created_at"] = dt.datetime(2000 + i % 99, 12, 31, 23, 59, 59, 999999 - i, tzinfo=dt.UTC)
        rows.append(r)
    dumps = []
    for bulk in (True, False):
        engine = make_engine(f"sqlite:///{tmp_path / f'{bulk}.db'}")
        upgrade(engine)
        key = ("order_id", "input_hash", "model_version")
        with engine.begin() as conn:
            if bulk:
                assert insert_ignore_many(conn, T.decisions, key, rows) == len(rows)
                assert insert_ignore_many(conn, T.decisions, key, rows[:1]) == 0  # duplicate
            else:
                conn.execute(_insert_ignore(engine, T.decisions, *key), rows)
        with engine.connect() as conn:
            dumps.append(conn.exec_driver_sql("SELECT * FROM decisions ORDER BY 1").all())
            back = Store(engine).find_decisions([("o1", "h")], None)["o1"]
        assert back["reasons"] == rows[1]["reasons"]
        assert back["model_versions"] == rows[1]["model_versions"]
    assert dumps[0] == dumps[1]


def test_content_hash_text_is_unchanged():
    """Stored input hashes are compared with new ones: the hashed text must never change."""
    import datetime as dt

    from serving.store.db import content_hash

    row = {
        "order_id": "O1",
        "description": "电梯按钮失灵",
        "reported_at": dt.datetime(2024, 4, 22, 5, 0, 36, tzinfo=dt.UTC),
        "rating": 3,
        "cost_yuan": 0.5,
        "paid": True,
        "parent_order_id": None,
    }
    # the digest of the first service version (json.dumps, sort_keys, ensure_ascii=False)
    assert content_hash(row) == "cb025d3c9bc419b9dbaa1f7594533f2643c76c2bdfd8aeeea22abc4475925eca"


def test_wal_is_checkpointed_in_the_background_not_by_the_committing_writer(tmp_path):
    """Autocheckpoint off: commits leave the WAL alone; the checkpointer thread copies it."""
    import time

    from serving.store.db import WalCheckpointer

    path = tmp_path / "a.db"
    engine = make_engine(f"sqlite:///{path}", autocheckpoint=False)
    with engine.begin() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        conn.exec_driver_sql("CREATE TABLE t (x TEXT)")

    def write(n: int) -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (?)", [("x" * 2000,) for _ in range(n)])

    write(2500)  # ~5 MB: past SQLite's default autocheckpoint threshold (1,000 pages)
    assert path.stat().st_size < 100_000  # the writer did not copy the WAL into the file
    with sqlite3_connect(path) as raw:  # another reader sees the committed rows (durable)
        assert raw.execute("SELECT count(*) FROM t").fetchone()[0] == 2500
    checkpointer = WalCheckpointer(engine, poll_seconds=0.01)
    assert checkpointer.checkpoints == 0
    checkpointer.start()
    deadline = time.monotonic() + 10
    while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checkpointer.checkpoints >= 1
    assert path.stat().st_size > 2500 * 2000  # the rows are in the database file now
    write(10)
    checkpointer.stop()
    engine.dispose()
    with sqlite3_connect(path) as raw:
        assert raw.execute("SELECT count(*) FROM t").fetchone()[0] == 2510
    # off SQLite files (in memory) there is nothing to checkpoint: start is a no-op
    memory = WalCheckpointer(make_engine("sqlite://"))
    memory.start()
    memory.stop()
    assert memory.checkpoints == 0


def sqlite3_connect(path):
    import contextlib
    import sqlite3

    return contextlib.closing(sqlite3.connect(path))
