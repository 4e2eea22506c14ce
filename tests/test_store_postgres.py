"""The audit store on PostgreSQL as on SQLite: migrations, types, times, idempotency, concurrency.

The API and quality-loop test modules run on both backends through the ``backend`` fixture
(``tests/conftest.py``); this module adds what only a second backend can show: the migrations
create exactly the declared schema on PostgreSQL, the open-appeal indexes stay partial, values
read back are the values written (types, time zones: the test server runs in Asia/Shanghai,
not UTC), the same orders get the same decisions on both backends, re-scores under a newer
model are kept beside the first decision, and two service processes scoring overlapping orders
at once lose or duplicate nothing.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient

from models.schemas import ORDERS, TECHNICIANS, UNITS
from serving.main import create_app
from serving.store import tables as T
from serving.store.db import Store, WalCheckpointer, content_hash, frame_rows, make_engine, upgrade
from tests.serving_fixtures import auth, payload, serve_copy, train_model_dir
from tests.synth_orders import make_orders

#: Decision fields that differ between two services by construction (random id, clock).
_PER_SERVICE = ("decision_id", "created_at")


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    """A second model (another seed): what a reload to a newer champion serves."""
    model_dir, _ = train_model_dir(tmp_path_factory.mktemp("pgother") / "model", seed=12)
    return model_dir


def _migrated_diff(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), T.metadata)


def _alembic(engine: sa.Engine, command_name: str, target: str) -> None:
    from alembic import command
    from alembic.config import Config

    from serving.store.db import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, command_name)(cfg, target)


def _store_url(database_url: str | None, tmp_path) -> str:
    return database_url or f"sqlite:///{tmp_path / 'store.db'}"


@pytest.mark.postgres
def test_migrations_downgrade_to_nothing_and_back(postgres_url):
    """Every downgrade runs on PostgreSQL too; back at head, autogenerate sees no difference
    between the migrations and the tables (``test_serving_store`` checks the first upgrade)."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    _alembic(engine, "downgrade", "base")
    assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
    upgrade(engine)
    assert _migrated_diff(engine) == []
    engine.dispose()


@pytest.mark.slow
def test_service_processes_starting_together_migrate_once(database_url, tmp_path):
    """Four workers starting at once on a fresh store: each runs the migrations at start;
    one migrates, the others wait and find the store at head (none fails). On both backends:
    on SQLite, two or three of four failed ("table api_keys already exists") before the
    migration took the write lock."""
    url = _store_url(database_url, tmp_path)
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; from serving.store.db import make_engine, upgrade; "
        "e = make_engine(sys.argv[1]); upgrade(e); e.dispose()"
    )
    root = Path(__file__).resolve().parents[1]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url], cwd=root, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == [0] * 4, [err[-500:] for rc, err in results if rc]
    engine = make_engine(url)
    assert _migrated_diff(engine) == []
    engine.dispose()


@pytest.mark.postgres
def test_a_postgresql_url_without_a_driver_uses_the_shipped_one(postgres_url):
    """``postgresql://`` and ``postgres://`` (what people write) use psycopg 3, the driver the
    project ships; SQLAlchemy's default, psycopg2, is not installed."""
    for scheme in ("postgresql://", "postgres://"):
        engine = make_engine(postgres_url.replace("postgresql+psycopg://", scheme, 1))
        assert engine.dialect.driver == "psycopg"
        upgrade(engine)
        assert _migrated_diff(engine) == []
        engine.dispose()


@pytest.mark.postgres
def test_open_appeal_indexes_are_partial(postgres_url):
    """A full unique index would allow one appeal per result ever (a rejected appeal would
    block every later one): both indexes must carry their WHERE clause."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    with engine.connect() as conn:
        defs = dict(
            conn.execute(
                sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'appeals'")
            ).all()
        )
    engine.dispose()
    for name in ("uq_appeals_open", "uq_appeals_open_label"):
        assert defs[name].startswith("CREATE UNIQUE INDEX") and " WHERE " in defs[name], defs[name]


@pytest.mark.postgres
def test_the_wal_checkpointer_does_nothing_off_sqlite(postgres_url):
    engine = make_engine(postgres_url, autocheckpoint=False)
    ckpt = WalCheckpointer(engine)
    ckpt.start()
    assert ckpt._thread is None
    ckpt.stop()
    engine.dispose()


@pytest.mark.postgres
def test_sessions_stay_in_utc_after_a_rollback(postgres_url):
    """The service's sessions read times in UTC on a server in another zone, also after the
    pool's reset (a rollback) and for times written in another zone."""
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW timezone").scalar() == "UTC"
        conn.rollback()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW timezone").scalar() == "UTC"
        at = dt.datetime(2026, 3, 1, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
        back = conn.execute(sa.select(sa.literal(at, sa.DateTime(timezone=True)))).scalar()
    assert back == at and back.utcoffset() == dt.timedelta(0)
    engine.dispose()


def test_stored_orders_read_back_as_written(tmp_path, database_url):
    """Every contract type survives the store: timestamps (as instants, whatever the server's
    time zone), dates, booleans, integers, floats, text and missing values; the column-wise
    path (a big batch) and the per-row path (a few orders) alike."""
    url = _store_url(database_url, tmp_path)
    engine = make_engine(url)
    upgrade(engine)
    store = Store(engine)
    orders, techs, units, _ = make_orders(300, seed=21, days=60, n_tech=6, n_units=40)
    orders.loc[orders.index[7], "urge_count"] = 3_000_000_000  # no contract maximum: 64 bits
    for part in (orders.iloc[:5], orders.iloc[5:]):  # <= 16 rows: per cell; else column-wise
        rows = frame_rows(part, ORDERS)
        assert store.upsert_orders(rows, [content_hash(r) for r in rows]) == len(part)
    store.upsert_side(T.technicians, TECHNICIANS, frame_rows(techs, TECHNICIANS))
    store.upsert_side(T.units, UNITS, frame_rows(units, UNITS))

    def same(got: pd.DataFrame, want: pd.DataFrame, key: str, names: list[str]) -> None:
        got = got.set_index(key).sort_index()
        want = want[names].set_index(key).sort_index()
        pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)

    same(store.orders_frame(), orders, "order_id", ORDERS.names)
    same(store.side_frame("technicians"), techs, "technician_id", TECHNICIANS.names)
    same(store.side_frame("units"), units, "unit_id", UNITS.names)
    # a correction is the newest truth; re-sending the same order changes nothing
    first = frame_rows(orders.iloc[:1], ORDERS)
    assert store.upsert_orders(first, [content_hash(first[0])]) == 0
    fixed = [{**first[0], "rating": 1 if first[0]["rating"] != 1 else 2}]
    assert store.upsert_orders(fixed, [content_hash(fixed[0])]) == 1
    assert int(store.orders_frame([fixed[0]["order_id"]])["rating"].iloc[0]) == fixed[0]["rating"]
    engine.dispose()


def _service(root, model_dir, url, **kw):
    settings, url = serve_copy(root, model_dir, database_url=url, **kw)
    return settings, url


def _keys(url: str) -> dict[str, str]:
    engine = make_engine(url)
    upgrade(engine)  # what the service does at start
    store = Store(engine)
    keys = {role: store.create_key(role)[1] for role in ("system", "quality", "admin")}
    engine.dispose()
    return keys


def _decisions(client, keys, orders, **params) -> list[dict]:
    r = client.post(
        "/v1/score", json={"orders": orders}, params=params, headers=auth(keys["system"])
    )
    assert r.status_code == 200, r.text[:500]
    return r.json()["decisions"]


def _wait_for_binned_reasons(client, seconds: float = 30.0) -> None:
    """Until the service has switched from exact to binned reasons (a background thread does
    once the store holds a reference sample): the reasons of both services compared alike."""
    import time

    state = client.app.state.service
    end = time.monotonic() + seconds
    while state.scorer.served.reasoner.mode != "binned":
        assert time.monotonic() < end, "reasons never switched to binned"
        time.sleep(0.05)


@pytest.mark.postgres
def test_same_orders_get_the_same_decisions_on_both_backends(trained, tmp_path, postgres_url):
    """Scores, flags, draws, reasons and the audit trail do not depend on the database: a
    SQLite and a PostgreSQL service scoring the same orders answer the same, field by field."""
    model_dir, done = trained
    hist, new = payload(done.iloc[:-60]), payload(done.iloc[-60:])
    answers, trails = [], []
    for name, url in (("sqlite", None), ("postgresql", postgres_url)):
        settings, url = _service(tmp_path / name, model_dir, url)
        keys = _keys(url)
        with TestClient(create_app(settings)) as client:
            _decisions(client, keys, hist)
            _wait_for_binned_reasons(client)
            batch = _decisions(client, keys, new[:40])
            single = [_decisions(client, keys, [o])[0] for o in new[40:]]
            replayed = _decisions(client, keys, new[:3])
            assert all(d["replayed"] for d in replayed)
            assert replayed == [{**d, "replayed": True} for d in batch[:3]]
            for d in batch + single + replayed:  # one way to write a time, whatever the store
                assert dt.datetime.fromisoformat(d["created_at"]).utcoffset() == dt.timedelta(0)
            answers.append(batch + single)
            r = client.get(f"/v1/decisions/{new[0]['order_id']}", headers=auth(keys["quality"]))
            assert r.status_code == 200
            trails.append(r.json())
    strip = [[{k: v for k, v in d.items() if k not in _PER_SERVICE} for d in a] for a in answers]
    assert strip[0] == strip[1]
    assert [{k: v for k, v in d.items() if k not in _PER_SERVICE} for d in trails[0]] == [
        {k: v for k, v in d.items() if k not in _PER_SERVICE} for d in trails[1]
    ]
    for trail in trails:
        for d in trail:
            assert dt.datetime.fromisoformat(d["created_at"]).utcoffset() == dt.timedelta(0)
            assert isinstance(d["mandatory_inspection"], bool)
            assert isinstance(d["reasons"], list) and isinstance(d["model_versions"], dict)


@pytest.mark.slow
def test_a_rescore_under_a_newer_model_keeps_both_decisions(
    trained, other_model, tmp_path, database_url
):
    """Idempotency is per model: the same order under a reloaded, different model gets a second
    decision with ``rescore=true``; the first stays in the audit trail, plain re-sends return
    the latest one."""
    model_dir, done = trained
    other_dir = other_model
    settings, url = _service(tmp_path, model_dir, database_url)
    keys = _keys(url)
    orders = payload(done.iloc[-30:])
    with TestClient(create_app(settings)) as client:
        _decisions(client, keys, payload(done.iloc[:-30]))
        first = _decisions(client, keys, orders[:5])
        shutil.rmtree(settings.model_dir)
        shutil.copytree(other_dir, settings.model_dir)
        r = client.post("/v1/admin/reload", headers=auth(keys["admin"]))
        assert r.status_code == 200, r.text
        plain = _decisions(client, keys, orders[:5])
        assert [d["decision_id"] for d in plain] == [d["decision_id"] for d in first]
        again = _decisions(client, keys, orders[:5], rescore="true")
        assert not any(d["replayed"] for d in again)
        assert {d["decision_id"] for d in again}.isdisjoint(d["decision_id"] for d in first)
        assert [d["model_versions"] for d in again] != [d["model_versions"] for d in first]
        latest = _decisions(client, keys, orders[:5])
        assert [d["decision_id"] for d in latest] == [d["decision_id"] for d in again]
        assert _decisions(client, keys, orders[:5], rescore="true") == latest
        trail = client.get(f"/v1/decisions/{orders[0]['order_id']}", headers=auth(keys["quality"]))
        assert [d["decision_id"] for d in trail.json()] == [
            first[0]["decision_id"],
            again[0]["decision_id"],
        ]


@pytest.mark.slow
def test_two_service_processes_scoring_overlapping_orders_lose_and_duplicate_nothing(
    trained, tmp_path, database_url
):
    """Two services on one store (two worker processes), 8 threads sending overlapping single
    orders and small batches (the same ids in different orders): every request answers 200,
    every order has exactly one decision, every answer for an order names that decision, and
    the store holds each order and decision once."""
    model_dir, done = trained
    settings, url = _service(tmp_path / "a", model_dir, database_url)
    other, _ = _service(tmp_path / "b", model_dir, url)
    keys = _keys(url)
    orders = payload(done.iloc[-120:])
    with TestClient(create_app(settings)) as a, TestClient(create_app(other)) as b:
        _decisions(a, keys, payload(done.iloc[:-120]))
        jobs = []
        for rep in range(3):  # every order three times, alone or in a batch, through a or b
            for i, o in enumerate(orders):
                jobs.append(((a, b)[(i + rep) % 2], [o]))
            for i in range(0, len(orders), 12):
                chunk = orders[i : i + 12]
                jobs.append(((b, a)[rep % 2], chunk[::-1] if rep % 2 else chunk))
        start = threading.Barrier(8)

        def send(job):
            client, body = job
            try:
                start.wait(timeout=5)
            except threading.BrokenBarrierError:
                pass
            return client.post("/v1/score", json={"orders": body}, headers=auth(keys["system"]))

        with ThreadPoolExecutor(8) as ex:
            rs = list(ex.map(send, jobs))
    assert [r.status_code for r in rs] == [200] * len(rs), next(
        r.text[:500] for r in rs if r.status_code != 200
    )
    seen: dict[str, set[str]] = {}
    for r in rs:
        for d in r.json()["decisions"]:
            seen.setdefault(d["order_id"], set()).add(d["decision_id"])
    assert set(seen) == {o["order_id"] for o in orders}
    assert all(len(v) == 1 for v in seen.values()), {k: v for k, v in seen.items() if len(v) > 1}
    engine = make_engine(url)
    ids = [o["order_id"] for o in orders]
    with engine.connect() as conn:
        n_dec = conn.execute(
            sa.select(sa.func.count()).where(T.decisions.c.order_id.in_(ids))
        ).scalar()
        n_ord = conn.execute(
            sa.select(sa.func.count()).where(T.orders.c.order_id.in_(ids))
        ).scalar()
        stored = dict(
            conn.execute(
                sa.select(T.decisions.c.order_id, T.decisions.c.decision_id).where(
                    T.decisions.c.order_id.in_(ids)
                )
            ).all()
        )
        dup_links = conn.execute(
            sa.select(sa.func.count()).select_from(
                sa.select(T.outcomes.c.order_id, T.outcomes.c.kind, T.outcomes.c.content_hash)
                .group_by(T.outcomes.c.order_id, T.outcomes.c.kind, T.outcomes.c.content_hash)
                .having(sa.func.count() > 1)
                .subquery()
            )
        ).scalar()
    engine.dispose()
    assert n_dec == n_ord == len(orders)
    assert stored == {k: next(iter(v)) for k, v in seen.items()}
    assert dup_links == 0


def _at_once(*calls) -> list[BaseException]:
    """Run the calls in threads released together; the exceptions they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(calls))

    def run(call):
        try:
            start.wait(timeout=10)
            call()
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_writes_of_the_same_rows_in_any_order_neither_deadlock_nor_fail(
    tmp_path, database_url
):
    """Two writers (requests of two service processes) storing the same new orders, master
    data and follow-ups, in opposite orders, at the same moment: on PostgreSQL rows are
    locked in one order (no deadlock) and master data is upserted (no duplicate key), so
    both succeed and the store holds each row once."""
    url = _store_url(database_url, tmp_path)
    engine = make_engine(url)
    upgrade(engine)
    store = Store(engine)
    orders, techs, units, _ = make_orders(3000, seed=8, days=200, n_tech=10, n_units=80)
    rows = frame_rows(orders, ORDERS)
    tech_rows = frame_rows(techs, TECHNICIANS)

    def upsert(part):
        return lambda: store.upsert_orders(part, [content_hash(r) for r in part])

    errors = []
    for k in range(0, len(rows), 300):
        part = rows[k : k + 300]
        errors += _at_once(upsert(part), upsert(part[::-1]))
        errors += _at_once(
            lambda: store.upsert_side(T.technicians, TECHNICIANS, tech_rows),
            lambda: store.upsert_side(T.technicians, TECHNICIANS, tech_rows[::-1]),
        )
    followups = [
        {
            "order_id": r["order_id"],
            "rating": 2,
            "comment": "师傅来了两次才修好",
            "complaint": True,
            "followed_up_at": dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
        }
        for r in rows[:200]
    ]
    errors += _at_once(
        lambda: store.add_followups(followups), lambda: store.add_followups(followups[::-1])
    )
    assert not errors, [repr(e)[:300] for e in errors]
    assert store.order_count() == len(rows)
    assert len(store.side_frame("technicians")) == len(techs)
    stored = store.orders_frame([r["order_id"] for r in rows[:200]])
    assert (stored["rating"] == 2).all() and stored["complaint"].all()
    with engine.connect() as conn:
        n_fu = conn.execute(
            sa.select(sa.func.count()).where(T.outcomes.c.kind == "followup")
        ).scalar()
    assert n_fu == 200
    engine.dispose()


def test_concurrent_rectification_updates_lose_no_evidence(tmp_path, database_url):
    """Eight people adding evidence to one rectification item at once: every photo is kept
    and every change is an event (a read-modify-write without a row lock lost all but one
    on PostgreSQL)."""
    engine = make_engine(_store_url(database_url, tmp_path))
    upgrade(engine)
    store = Store(engine)
    rid = store.create_rectification(
        {
            "title": "漏水返修整改",
            "owner": "维修主管",
            "deadline": dt.datetime(2026, 4, 1, tzinfo=dt.UTC),
        }
    )["rectification_id"]
    photos = [f"https://e/{i}.jpg" for i in range(8)]
    errors = _at_once(
        *[(lambda p=p: store.update_rectification(rid, {"evidence": [p]})) for p in photos]
    )
    assert not errors, [repr(e)[:300] for e in errors]
    item = store.get_rectification(rid)
    assert sorted(item["evidence"]) == photos
    assert len(item["history"]) == 1 + len(photos)
    engine.dispose()
