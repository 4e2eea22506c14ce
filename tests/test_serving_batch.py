"""Big-batch fast paths of the store and scorer give exactly what the per-row paths give."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.labels import LabelConfig, rework_labels
from models.schemas import ORDERS
from serving.store import quality as Q
from serving.store.db import (
    Store,
    content_hash,
    content_hashes,
    frame_rows,
    make_engine,
    upgrade,
)
from tests.synth_orders import make_orders


def _store(tmp_path, name: str) -> Store:
    engine = make_engine(f"sqlite:///{tmp_path / name}")
    upgrade(engine)
    return Store(engine)


def _tricky_orders() -> pd.DataFrame:
    """Simulated orders plus copies under new ids: same home, category and report times
    (ties between candidate reworks), some cancelled, some naming a parent, some with the
    parent of another copy (children stored before their parents)."""
    orders, *_ = make_orders(1500, seed=5, days=200, n_tech=8, n_units=60)
    rng = np.random.default_rng(3)
    dup = orders.sample(600, replace=True, random_state=2).reset_index(drop=True)
    dup["order_id"] = [f"DUP{i:05d}" for i in range(len(dup))]
    shift = pd.to_timedelta(rng.choice([0, 0, 0, 3600, -7200], size=len(dup)), unit="s")
    for c in ("reported_at", "dispatched_at", "arrived_at", "completed_at"):
        dup[c] = dup[c] + shift
    kids = rng.random(len(dup)) < 0.15
    dup.loc[kids, "parent_order_id"] = rng.choice(orders["order_id"].to_numpy(), kids.sum())
    out = pd.concat([orders, dup], ignore_index=True)
    assert (out["status"] == "cancelled").any() and out["parent_order_id"].notna().any()
    return out.sample(frac=1.0, random_state=4).reset_index(drop=True)  # out of order


def _links(store: Store) -> list[tuple]:
    f = store.outcomes_frame()
    f = f[f["kind"] == "rework"]
    return sorted(
        zip(f["order_id"], f["rework_order_id"], f["rework_via"], f["observed_at"], strict=True)
    )


@pytest.mark.parametrize("sizes", [(2100,), (700, 5, 300, 1, 900, 194)])
def test_vectorised_rework_links_equal_the_row_path(tmp_path, monkeypatch, sizes):
    """Same links (order, rework, via, time) from the column-wise and the per-home code, over
    batches that arrive out of order, with ties, cancellations, parents and corrections."""
    orders = _tricky_orders()
    rows = frame_rows(orders, ORDERS)
    corrected = [dict(r) for r in rows[:150]]
    for r in corrected:  # a correction moves the report a day later (links may change)
        if r["reported_at"] is not None:
            r["reported_at"] = r["reported_at"] + pd.Timedelta(days=1).to_pytimedelta()
    batches, i = [], 0
    for k in sizes:
        batches.append(rows[i : i + k])
        i += k
    batches += [rows[i:], corrected]
    got = {}
    for path, threshold in (("rows", 10**9), ("vector", 1)):
        monkeypatch.setattr(Q, "VECTOR_LINK_ORDERS", threshold)
        store = _store(tmp_path, f"{path}.db")
        for b in batches:
            store.upsert_orders(b, [content_hash(r) for r in b])
        got[path] = _links(store)
    assert len(got["rows"]) > 200
    assert got["vector"] == got["rows"]


def test_vectorised_rework_links_equal_the_labels(tmp_path, monkeypatch):
    """One big batch through the column-wise path: exactly ``rework_labels``' links (the
    labels break ties by frame order, the store by arrival order: stored in frame order)."""
    monkeypatch.setattr(Q, "VECTOR_LINK_ORDERS", 1)
    orders = _tricky_orders()
    store = _store(tmp_path, "one.db")
    rows = frame_rows(orders, ORDERS)
    store.upsert_orders(rows, [content_hash(r) for r in rows])
    lab = rework_labels(orders, LabelConfig())
    expected = {
        (o, r)
        for o, r in zip(orders["order_id"], lab["rework_order_id"], strict=True)
        if isinstance(r, str)
    }
    assert {(o, r) for o, r, *_ in _links(store)} == expected


def test_content_hashes_equal_content_hash_per_row():
    """The column-wise hash text is the encoder's, value type by value type (else per row)."""
    import datetime as dt
    import random

    from serving.store.db import content_hashes

    rng = random.Random(7)
    shanghai = dt.timezone(dt.timedelta(hours=8))
    texts = ["WO1", 'quote " and \\ back', "中文，换行\n\t", "100% %s", "\x00\u2028", ""]

    def value(kind: str):
        if rng.random() < 0.2:
            return None
        if kind == "str":
            return rng.choice(texts)
        if kind == "num":
            return rng.choice([0, -3, 2**70, 1.5, -0.0, 1e-300, float("nan"), float("inf"),
                               -float("inf"), True, False])  # fmt: skip
        base = dt.datetime(2025, 3, 1, tzinfo=dt.UTC) + dt.timedelta(
            microseconds=rng.randrange(-(10**13), 10**13) * rng.choice([0, 1])
            + rng.randrange(0, 10**6) * rng.choice([0, 1])
        )
        return base if kind == "utc" else base.astimezone(shanghai)

    kinds = {"a_id": "str", "b%x": "num", "c_time": "utc", "d_local": "local", "中文": "str"}
    rows = [{k: value(v) for k, v in kinds.items()} for _ in range(500)]
    assert content_hashes(rows) == [content_hash(r) for r in rows]
    odd = [dict(r, extra=np.float64(1.5)) for r in rows[:40]]  # numpy scalar: per row
    assert content_hashes(odd) == [content_hash(r) for r in odd]
    ragged = rows[:40] + [{"a_id": "x"}]
    assert content_hashes(ragged) == [content_hash(r) for r in ragged]


def test_store_rows_of_a_big_batch_equal_frame_rows():
    """A 2,000-order batch's store rows from numpy columns: same values and types as
    ``frame_rows`` (its hashes too), missing values included."""
    from models.validation import validate_records
    from serving.engine import db_rows
    from tests.serving_fixtures import payload

    orders, *_ = make_orders(2500, seed=9, days=200, n_tech=8, n_units=60)
    valid = validate_records(payload(orders.iloc[:2000]), ORDERS).valid
    valid.loc[valid.index[::7], "arrived_at"] = pd.NaT  # a missing timestamp too
    assert valid[["rating", "arrived_at", "parent_order_id"]].isna().any().all()
    fast, ref = db_rows(valid), frame_rows(valid, ORDERS)
    assert fast == ref
    assert [type(v) for r in fast for v in r.values()] == [type(v) for r in ref for v in r.values()]
    assert content_hashes(fast) == [content_hash(r) for r in ref]


def test_vectorised_utc_times_equal_the_per_value_conversions():
    """SQLite text and ``isoformat`` of UTC datetimes from numpy equal the per-value ones,
    with and without microseconds, missing values, a leap day and the far years."""
    import datetime as dt
    import random

    from sqlalchemy.dialects import sqlite

    from serving.store import db
    from serving.store import tables as T

    conv = db._sqlite_converter(T.orders.c.reported_at.type, sqlite.dialect())
    rng = random.Random(1)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    vals = [
        epoch + dt.timedelta(microseconds=rng.randrange(-(10**15), 4 * 10**15)) for _ in range(3000)
    ]
    vals += [v.replace(microsecond=0) for v in vals[:1000]] + [None] * 30
    vals += [dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.UTC)]
    vals += [dt.datetime(y, 1, 1, tzinfo=dt.UTC) for y in (1, 1500, 2300)]
    vals.append(dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC))
    rng.shuffle(vals)
    assert db._utc_texts(vals, conv) == [conv(v) for v in vals]
    present = [v for v in vals if v is not None]
    assert db._utc_isoformats(present) == [v.isoformat() for v in present]


def _reference_top(reasoner, features: pd.DataFrame, k: int) -> list[list[dict]]:
    """Top reasons the straightforward way: a dict of every feature per order, numpy scalars."""
    from models.reasons import _SPARE, CONTEXT_FEATURES, numeric_matrix, reason_item

    names = reasoner.model.feature_names
    if reasoner.binned is not None:
        contrib = reasoner.binned.lookup(numeric_matrix(features, names))
    else:
        contrib = sum(reasoner.model.heads[h].contributions(features[names]).to_numpy()
                      for h in ("rework", "dissatisfied"))  # fmt: skip
    order = np.argsort(-contrib, axis=1)[:, : k + _SPARE]
    cols = {c: features[c].to_numpy() for c in features.columns}
    out = []
    for i, top in enumerate(order):
        row = {c: v[i] for c, v in cols.items()}
        items, seen = [], set()
        for j in top:
            if contrib[i, j] <= 0 or len(items) == k:
                break
            if names[j] in CONTEXT_FEATURES:
                continue
            item = reason_item(names[j], row, contrib[i, j])
            if item["code"] not in seen:
                seen.add(item["code"])
                items.append(item)
        out.append(items)
    return out


def test_top_reasons_equal_the_per_order_dict_reference(tmp_path):
    """The batch path of ``Reasoner.top`` (lazy rows, Python floats) gives exactly the reasons
    of a dict of numpy scalars per order, binned and exact, missing values included."""
    import orjson

    from models.estimators import HEADS
    from models.features import completed_mask, features_for
    from models.reasons import Reasoner
    from models.registry import load_risk_model
    from tests.serving_fixtures import train_model_dir

    assert set(HEADS) == {"rework", "dissatisfied"}
    path, _ = train_model_dir(tmp_path / "model")
    model = load_risk_model(path)
    orders, techs, units, _ = make_orders(n=1500, seed=3)
    done = orders[completed_mask(orders)]
    features = features_for(model.history(orders, techs, units), done).head(800)
    assert features[model.feature_names].isna().any().any()
    for reference in (features.head(400), None):
        reasoner = Reasoner(model, reference, 100)
        assert reasoner.mode == ("binned" if reference is not None else "exact")
        got, want = reasoner.top(features, 3), _reference_top(reasoner, features, 3)
        assert sum(map(len, got)) > 1000
        assert orjson.dumps(got) == orjson.dumps(want)


def test_response_metrics_count_every_decision_once():
    """The score route counts a batch per label once: the totals are those of the decisions."""
    from types import SimpleNamespace

    from serving.observability import Metrics
    from serving.routes.score import _respond

    rng = np.random.default_rng(0)
    records = [
        {
            "decision_id": f"d{i}",
            "order_id": f"o{i}",
            "rework_risk": 0.1,
            "dissatisfaction_prob": 0.2,
            "risk_level": str(rng.choice(["low", "medium", "high"])),
            "mandatory_inspection": bool(i % 3 == 0),
            "inspection_reasons": [{"code": c} for c in ("fire_safety", "model_capacity")[: i % 3]],
            "third_party_sample": bool(i % 4 == 0),
            "inclusion_probability": 0.1,
            "reasons": [],
            "model_versions": {},
            "policy_version": "p",
            "created_at": "2025-01-01T00:00:00+00:00",
        }
        for i in range(300)
    ]
    replayed = [i % 10 == 0 for i in range(300)]
    state = SimpleNamespace(metrics=Metrics())
    _respond(state, records, replayed, [])
    fresh = [d for d, again in zip(records, replayed, strict=True) if not again]
    reg = state.metrics.registry
    assert reg.get_sample_value("repairqc_replayed_decisions_total") == 30
    assert reg.get_sample_value("repairqc_scored_orders_total") == 270
    for level in ("low", "medium", "high"):
        n = sum(d["risk_level"] == level for d in fresh)
        assert reg.get_sample_value("repairqc_risk_level_total", {"level": level}) == n
    for code in ("fire_safety", "model_capacity"):
        n = sum(f["code"] == code for d in fresh for f in d["inspection_reasons"])
        assert reg.get_sample_value("repairqc_inspection_flags_total", {"code": code}) == n
    sampled = sum(d["third_party_sample"] for d in fresh)
    assert reg.get_sample_value("repairqc_third_party_samples_total") == sampled


def test_gc_pause_restores_the_collector_after_nested_and_failing_batches():
    """Big batches pause the cyclic GC; it is back on after the last pause ends (an exception
    included), and stays off when it was off before."""
    import gc

    from serving.engine import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("scoring failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_history_merge_waits_for_a_big_batch_in_flight(monkeypatch):
    """The background merge a big batch wakes runs after that batch, not during it (and not
    forever later: the wait is bounded; a stop ends it at once)."""
    import threading
    import time

    from serving import engine
    from serving.engine import HistoryCache, gc_paused

    cache = HistoryCache.__new__(HistoryCache)
    cache._stop = threading.Event()
    done = threading.Event()

    def merger():
        cache._after_batches()
        done.set()

    with gc_paused():
        t = threading.Thread(target=merger)
        t.start()
        assert not done.wait(0.2)  # still scoring: the merge waits
    assert done.wait(2.0)  # the batch ended: it runs
    t.join()
    monkeypatch.setattr(engine, "MERGE_DEFER_SECONDS", 0.1)
    with gc_paused():
        t0 = time.monotonic()
        assert cache._after_batches() is False  # bounded wait, not stopping
        assert time.monotonic() - t0 < 1.0
        cache._stop.set()
        assert cache._after_batches() is True


def _score_through_the_api(root, model_dir, history, batch) -> dict:
    """Serve ``model_dir`` on a fresh store, score ``history`` then ``batch``; what was
    answered and recorded (ids and times of the records' creation left out)."""
    import sqlalchemy as sa
    from fastapi.testclient import TestClient

    from serving.main import create_app
    from tests.serving_fixtures import auth, serve_copy

    settings, url = serve_copy(
        root,
        model_dir,
        history_merge_orders=10**6,  # no background merge racing the comparison
        reference_orders=10**6,  # exact reasons throughout (no background switch)
    )
    with TestClient(create_app(settings)) as client:
        store = Store(make_engine(url))
        key = store.create_key("system")[1]
        for orders in (history, batch):
            r = client.post("/v1/score", json={"orders": orders}, headers=auth(key))
            assert r.status_code == 200, r.text[:300]
        answered = [
            {k: v for k, v in d.items() if k not in ("decision_id", "created_at")}
            for d in r.json()["decisions"]
        ]
        with store.engine.connect() as conn:

            def table(name: str, drop: tuple[str, ...], key: str) -> list:
                rows = conn.execute(sa.text(f"SELECT * FROM {name} ORDER BY {key}")).mappings()
                return [{k: v for k, v in r.items() if k not in drop} for r in rows]

            return {
                "answered": answered,
                "orders": table("orders", ("received_at",), "order_id"),
                "decisions": table("decisions", ("decision_id", "created_at"), "order_id"),
                "links": table("outcomes", ("id", "recorded_at"), "order_id, content_hash"),
            }


@pytest.mark.slow
def test_a_big_batch_through_the_fast_paths_equals_the_per_row_paths(tmp_path, monkeypatch):
    """The whole decision of a 1,500-order batch (copies with tied times and homes included):
    answered decisions, stored orders, recorded decisions and rework links are the same with
    every batch fast path on (column-wise hashes, times, links, decision columns; GC pause;
    inserts on the writer thread, multi-row statements, the answer written meanwhile) and
    off."""
    from serving import engine
    from serving.routes import score as route
    from serving.store import db
    from tests.serving_fixtures import payload, train_model_dir

    model_dir, orders = train_model_dir(tmp_path / "model")
    done = orders[orders["status"] == "completed"].sort_values("completed_at")
    history = payload(done.iloc[:1200])
    later = done.iloc[1200:2200]
    copies = later.sample(500, replace=True, random_state=3).copy()
    copies["order_id"] = [f"CP{i:05d}" for i in range(len(copies))]
    batch = payload(pd.concat([later, copies]).sample(frac=1.0, random_state=5))
    fast = _score_through_the_api(tmp_path / "fast", model_dir, history, batch)
    for module, name in (
        (Q, "VECTOR_LINK_ORDERS"),
        (db, "_HASH_COLUMNS_ROWS"),
        (db, "_VECTOR_ROWS"),
        (engine, "GC_PAUSE_ORDERS"),
        (engine, "OVERLAP_ORDERS"),
        (route, "GC_PAUSE_ORDERS"),
    ):
        monkeypatch.setattr(module, name, 10**9)
    monkeypatch.setattr(db, "MULTI_ROWS", 1)  # one executemany per insert
    insert = db.Store.insert_decisions  # the decisions read from their rows, not the columns
    monkeypatch.setattr(
        db.Store,
        "insert_decisions",
        lambda self, rows, conn=None, columns=None: insert(self, rows, conn),
    )
    slow = _score_through_the_api(tmp_path / "slow", model_dir, history, batch)
    assert len(fast["answered"]) == 1500 and len(fast["links"]) > 100
    for part in ("answered", "orders", "decisions", "links"):
        assert fast[part] == slow[part], part


def test_find_decisions_through_the_dbapi_equals_the_orm_query(tmp_path, monkeypatch):
    """The SQLite pre-check (which orders have a matching decision) changes nothing: the
    latest decision per (order, input hash), of a model version or any, as before."""
    import datetime as dt
    import secrets

    from serving.store import db

    store = _store(tmp_path, "d.db")
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    rows = []
    for i, (oid, h, version) in enumerate(
        [
            ("A", "h1", "m/1"),
            ("A", "h1", "m/2"),
            ("A", "h2", "m/2"),
            ("B", "h1", "m/1"),
            ("C", "h3", "m/1"),
            ("C", "h3", "m/1b"),
        ]  # fmt: skip
    ):
        rows.append(
            {
                "decision_id": secrets.token_hex(16),
                "order_id": oid,
                "input_hash": h,
                "model_version": version,
                "model_versions": {"rework": "1"},
                "policy_version": "p",
                "rework_risk": 0.1 * i,
                "dissatisfaction_prob": 0.2,
                "risk_level": "low",
                "mandatory_inspection": False,
                "inspection_reasons": [],
                "third_party_sample": False,
                "inclusion_probability": 0.1,
                "draw_u": 0.5,
                "reasons": [],
                "community_id": "C1",
                "completed_at": t0,
                "created_at": t0 + dt.timedelta(seconds=i),
            }
        )
    store.insert_decisions(rows)
    queries = [
        ([("A", "h1"), ("B", "h1"), ("C", "h3"), ("D", "h1")], None),
        ([("A", "h1"), ("B", "h2")], "m/2"),
        ([("A", "h2"), ("C", "h3")], "m/1"),
        ([("Z", "h9")], None),
    ]
    fast = [store.find_decisions(k, v) for k, v in queries]
    monkeypatch.setattr(db, "_rows_by_ids", lambda *a, **k: None)  # the ORM query alone
    slow = [store.find_decisions(k, v) for k, v in queries]
    assert fast == slow
    assert {k: d["model_version"] for k, d in fast[0].items()} == {
        "A": "m/2", "B": "m/1", "C": "m/1b"
    }  # fmt: skip
    assert set(fast[1]) == {"A"} and set(fast[2]) == {"C"} and fast[3] == {}


def test_typed_json_cells_validate_as_through_their_text(monkeypatch):
    """Bools and numbers that arrive typed (the API's JSON) parse as the text rule parses
    them: missing, bad and values equal (whole floats as integers, -0.0, inf, big ints)."""
    from models import validation as V

    cells = [None, 0, 1, -3, 2**53 + 1, 2**63 - 1, 2**70, 1.5, -0.0, 2.0, 1e300, float("nan"),
             float("inf"), -float("inf"), 0.1 + 0.2]  # fmt: skip
    rng = np.random.default_rng(1)
    columns = [pd.Series(rng.choice(np.array(cells, dtype=object), 40), dtype=object)
               for _ in range(30)]  # fmt: skip
    columns += [pd.Series([c], dtype=object) for c in cells]
    bools = [pd.Series(rng.choice(np.array([True, False, None], dtype=object), 40), dtype=object)
             for _ in range(10)]  # fmt: skip
    fast = [V.parse_numbers(c) for c in columns] + [V.parse_bools(b) for b in bools]
    monkeypatch.setattr(V, "_json_numbers", lambda raw: None)
    monkeypatch.setattr(V, "_json_bools", lambda raw: None)
    slow = [V.parse_numbers(c) for c in columns] + [V.parse_bools(b) for b in bools]
    for (fv, fbad), (sv, sbad) in zip(fast, slow, strict=True):
        pd.testing.assert_series_equal(fv, sv)
        np.testing.assert_array_equal(fbad, sbad)
        assert [str(x) for x in fv.tolist()] == [str(x) for x in sv.tolist()]  # -0.0 vs 0.0


def test_only_the_declared_wordings_read_other_cells_of_the_row():
    """The batch's wording memo keys on a feature's own value: any wording that reads the
    row must be declared in ``_READS_ROW`` (a row that refuses every read proves it)."""
    from collections.abc import Mapping

    from models.features import build_features
    from models.reasons import _READS_ROW, REASONS, reason_item

    class Refusing(Mapping):
        def __init__(self, feature, value):
            self.feature, self.value = feature, value

        def __getitem__(self, name):
            if name != self.feature:
                raise AssertionError(f"{self.feature}'s wording read {name}")
            return self.value

        def get(self, name, default=None):
            return self[name]

        def __iter__(self):
            return iter([self.feature])

        def __len__(self):
            return 1

    orders, techs, units, _ = make_orders(n=600, seed=4)
    feats = build_features(orders, technicians=techs, units=units)
    checked = 0
    for feature in REASONS:
        if feature in _READS_ROW or feature not in feats:
            continue
        for v in feats[feature].dropna().unique()[:20]:
            reason_item(feature, Refusing(feature, v), 0.1)
            checked += 1
    assert checked > 200


def test_multi_row_inserts_equal_executemany(tmp_path, monkeypatch):
    """``insert_ignore_many`` in multi-row statements stores and counts what ``executemany``
    does: rows conflicting with stored ones or with earlier rows of the same statement are
    skipped, the rest (fewer than a statement's rows) inserted too."""
    import datetime as dt

    import sqlalchemy as sa

    from serving.store import db
    from serving.store import tables as T

    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

    def link(i: int, h: int) -> dict:
        return {
            "order_id": f"O{i}",
            "kind": "rework",
            "value": {"rework_order_id": f"R{i}", "via": "unit"},
            "source": "auto",
            "observed_at": t0 + dt.timedelta(seconds=i),
            "content_hash": f"h{h}",
            "recorded_at": t0,
        }

    first = [link(i, i) for i in range(5)]
    batch = [link(i, i % 7) for i in range(3, 40)] + [link(1, 1), link(50, 0)]  # duplicates
    got = []
    for multi in (4, 1):
        monkeypatch.setattr(db, "MULTI_ROWS", multi)
        store = _store(tmp_path, f"m{multi}.db")
        with store.engine.begin() as conn:
            counts = [
                db.insert_ignore_many(conn, T.outcomes, Q_KEYS, rows) for rows in (first, batch)
            ]
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(T.outcomes).order_by(T.outcomes.c.id)).all()
        got.append((counts, [tuple(r) for r in rows]))
    assert got[0] == got[1]
    assert got[0][0][0] == 5 and 0 < got[0][0][1] < len(batch)


Q_KEYS = ("order_id", "kind", "content_hash")


def test_a_failing_insert_on_the_writer_thread_answers_nothing_and_stores_nothing(
    tmp_path, monkeypatch
):
    """A big batch whose decisions insert fails on the writer thread: the request fails, the
    transaction is rolled back (no order, decision or link of the batch), and the same batch
    scores normally afterwards."""
    import sqlalchemy as sa
    from fastapi.testclient import TestClient

    from serving import engine
    from serving.main import create_app
    from serving.store import db
    from tests.serving_fixtures import auth, payload, serve_copy, train_model_dir

    model_dir, orders = train_model_dir(tmp_path / "model")
    done = orders[orders["status"] == "completed"].sort_values("completed_at")
    monkeypatch.setattr(engine, "OVERLAP_ORDERS", 50)
    settings, url = serve_copy(tmp_path / "svc", model_dir, history_merge_orders=10**6)
    prepare = db.Store.prepare_decisions

    def failing(self, rows, conn, columns=None):
        run = prepare(self, rows, conn, columns)

        def execute() -> int:
            run()
            raise RuntimeError("disk full")

        return execute

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        store = Store(make_engine(url))
        key = store.create_key("system")[1]
        r = client.post("/v1/score", json={"orders": payload(done.iloc[:300])}, headers=auth(key))
        assert r.status_code == 200
        batch = {"orders": payload(done.iloc[300:500])}
        with monkeypatch.context() as m:
            m.setattr(db.Store, "prepare_decisions", failing)
            r = client.post("/v1/score", json=batch, headers=auth(key))
        assert r.status_code == 500
        with store.engine.connect() as conn:
            n = {
                t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar()
                for t in ("orders", "decisions")
            }
        assert n == {"orders": 300, "decisions": 300}
        r = client.post("/v1/score", json=batch, headers=auth(key))
        assert r.status_code == 200 and len(r.json()["decisions"]) == 200
        assert not any(d["replayed"] for d in r.json()["decisions"])


def test_two_big_batches_at_once_both_answer_and_record_everything(tmp_path, monkeypatch):
    """Big batches scored at the same time, each with its own writer thread: every request
    answers, every decision is recorded once, and none waits out the SQLite busy timeout
    (a batch's writes queued behind another's, which waits for the first one's lock)."""
    import threading
    import time

    import sqlalchemy as sa
    from fastapi.testclient import TestClient

    from serving import engine
    from serving.main import create_app
    from tests.serving_fixtures import auth, payload, serve_copy, train_model_dir

    model_dir, orders = train_model_dir(tmp_path / "model")
    done = orders[orders["status"] == "completed"].sort_values("completed_at")
    monkeypatch.setattr(engine, "OVERLAP_ORDERS", 50)
    settings, url = serve_copy(tmp_path / "svc", model_dir, history_merge_orders=10**6)
    with TestClient(create_app(settings)) as client:
        store = Store(make_engine(url))
        key = store.create_key("system")[1]
        r = client.post("/v1/score", json={"orders": payload(done.iloc[:300])}, headers=auth(key))
        assert r.status_code == 200
        batches = [payload(done.iloc[300 + 150 * i : 450 + 150 * i]) for i in range(4)]
        status: list[int] = []

        def send(batch: list) -> None:
            res = client.post("/v1/score", json={"orders": batch}, headers=auth(key))
            status.append(res.status_code)

        threads = [threading.Thread(target=send, args=(b,)) for b in batches]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert status == [200] * 4 and time.monotonic() - t0 < 20
        with store.engine.connect() as conn:
            n = {
                t: conn.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar()
                for t in ("orders", "decisions")
            }
        assert n == {"orders": 900, "decisions": 900}
