"""Every route of the scoring service: happy path, invalid input, 401, 403, idempotency, reload."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.config import Settings
from serving.main import create_app
from serving.store.db import Store, make_engine
from tests.serving_fixtures import (
    POLICY_VERSION,
    auth,
    payload,
    serve_copy,
)


@pytest.fixture(scope="module")
def service(trained, tmp_path_factory, module_database_url):
    """The service on each store backend (SQLite; PostgreSQL with a test server)."""
    model_dir, done = trained
    settings, url = serve_copy(
        tmp_path_factory.mktemp("svc"), model_dir, database_url=module_database_url
    )
    served_dir = settings.model_dir
    app = create_app(settings)
    with TestClient(app) as client:
        store = Store(make_engine(url))
        keys = {role: store.create_key(role)[1] for role in ("system", "quality", "admin")}
        # history: most of the synthetic operation goes in first, in one batch
        hist = payload(done.iloc[:-200])
        r = client.post("/v1/score", json={"orders": hist}, headers=auth(keys["system"]))
        assert r.status_code == 200, r.text[:500]
        yield client, keys, done.iloc[-200:], served_dir


def test_settings_refuse_to_start_without_secret(monkeypatch):
    monkeypatch.delenv("REPAIRQC_SAMPLING_SECRET", raising=False)
    monkeypatch.delenv("REPAIRQC_DEV_MODE", raising=False)
    with pytest.raises(ValueError, match="REPAIRQC_SAMPLING_SECRET must be set"):
        Settings()
    with pytest.raises(ValueError, match="REPAIRQC_SAMPLING_SECRET must be set"):
        Settings(sampling_secret="changeme")
    monkeypatch.setenv("REPAIRQC_DEV_MODE", "1")
    assert Settings().secret_bytes  # dev mode: a public dev secret, announced loudly


def test_health_ready_and_metrics(service):
    client, *_ = service
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    text = client.get("/metrics").text
    assert "repairqc_scored_orders_total" in text
    assert "repairqc_request_seconds_bucket" in text
    # the process's memory and collections, and the history's size (what a leak shows in)
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#") and "{" not in line.split(" ")[0]
    }
    assert values["process_resident_memory_bytes"] > 0
    assert "python_gc_collections_total" in text
    stored = client.app.state.service.cache.orders
    assert values["repairqc_history_orders"] == len(stored) > 0


def test_model_info(service):
    client, keys, *_ = service
    r = client.get("/v1/model", headers=auth(keys["quality"]))
    assert r.status_code == 200
    info = r.json()
    assert info["version"].startswith("dir-")
    assert set(info["heads"]) == {"rework", "dissatisfied"}
    assert info["policy_version"] == POLICY_VERSION


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/v1/model", None),
        ("post", "/v1/score", {"orders": []}),
        ("post", "/v1/admin/reload", None),
        ("get", "/v1/admin/policy", None),
        ("post", "/v1/outcomes", {"outcomes": [{"order_id": "x", "kind": "rating"}]}),
        ("get", "/v1/decisions/x", None),
    ],
)
def test_401_without_or_with_unknown_key(service, method, path, body):
    client, *_ = service
    kw = {"json": body} if body is not None else {}
    assert getattr(client, method)(path, **kw).status_code == 401
    r = getattr(client, method)(path, headers=auth("rqc_nope"), **kw)
    assert r.status_code == 401
    assert r.json()["detail"] == "missing or unknown API key"


def test_a_revoked_key_stops_working_at_once(service):
    """Key roles are cached per request path, but a revoke in this process clears the cache."""
    client, *_ = service
    url = client.app.state.service.engine.url.render_as_string(hide_password=False)
    store = Store(make_engine(url))
    key_id, key = store.create_key("admin", note="revoke me")
    assert client.get("/v1/admin/policy", headers=auth(key)).status_code == 200
    assert client.get("/v1/admin/policy", headers=auth(key)).status_code == 200  # cached
    assert store.revoke_key(key_id)
    r = client.get("/v1/admin/policy", headers=auth(key))
    assert r.status_code == 401 and r.json()["detail"] == "missing or unknown API key"


@pytest.mark.parametrize(
    ("role", "method", "path", "body"),
    [
        ("quality", "post", "/v1/score", {"orders": [{}]}),
        ("system", "post", "/v1/admin/reload", None),
        ("quality", "get", "/v1/admin/policy", None),
        ("system", "get", "/v1/inspections/queue", None),
        ("system", "get", "/v1/decisions/x", None),
    ],
)
def test_403_for_the_wrong_role(service, role, method, path, body):
    client, keys, *_ = service
    kw = {"json": body} if body is not None else {}
    r = getattr(client, method)(path, headers=auth(keys[role]), **kw)
    assert r.status_code == 403
    assert r.json()["detail"].startswith(f"role '{role}' may not do this")


def test_score_happy_path_and_idempotency(service):
    client, keys, new, _ = service
    body = {"orders": payload(new.iloc[:5])}
    r = client.post("/v1/score", json=body, headers=auth(keys["system"]))
    assert r.status_code == 200, r.text
    ds = r.json()["decisions"]
    assert [d["order_id"] for d in ds] == new["order_id"].iloc[:5].tolist()
    for d in ds:
        assert 0 <= d["rework_risk"] <= 1 and 0 <= d["dissatisfaction_prob"] <= 1
        assert d["risk_level"] in ("low", "medium", "high")
        assert 0 < d["inclusion_probability"] <= 1
        assert d["mandatory_inspection"] == bool(d["inspection_reasons"])
        assert all(f["source"] in ("rule", "model") for f in d["inspection_reasons"])
        assert d["reasons"] and all(x["code"] and x["text"] for x in d["reasons"])
        assert d["policy_version"] == POLICY_VERSION and not d["replayed"]
    again = client.post("/v1/score", json=body, headers=auth(keys["system"])).json()["decisions"]
    assert [d["decision_id"] for d in again] == [d["decision_id"] for d in ds]
    assert all(d["replayed"] for d in again)
    # re-score: a new decision under the served model, same draw; both are kept
    r = client.post("/v1/score?rescore=true", json=body, headers=auth(keys["system"]))
    re = r.json()["decisions"]
    assert [d["decision_id"] for d in re] == [d["decision_id"] for d in ds]  # same model
    trail = client.get(f"/v1/decisions/{ds[0]['order_id']}", headers=auth(keys["quality"]))
    assert trail.status_code == 200 and len(trail.json()) == 1
    assert client.get("/v1/decisions/none", headers=auth(keys["quality"])).status_code == 404


def test_invalid_orders_get_422_naming_order_and_field(service):
    client, keys, new, _ = service
    orders = payload(new.iloc[5:8])
    orders[1]["category"] = "roof"
    orders[2]["completed_at"] = "2020-01-01 00:00:00"
    r = client.post("/v1/score", json={"orders": orders}, headers=auth(keys["system"]))
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [d["index"] for d in detail] == [1, 2]
    assert detail[0]["errors"] == ["category:bad_enum"]
    assert detail[0]["message"] == f"orders[1] ({orders[1]['order_id']}): category:bad_enum"
    assert any(e.startswith("completed_at:before_") for e in detail[1]["errors"])
    # atomic by default: the good order was not stored; partial=true scores it
    trail = client.get(f"/v1/decisions/{orders[0]['order_id']}", headers=auth(keys["quality"]))
    assert trail.status_code == 404
    r = client.post("/v1/score?partial=true", json={"orders": orders}, headers=auth(keys["system"]))
    assert r.status_code == 200
    assert [d["order_id"] for d in r.json()["decisions"]] == [orders[0]["order_id"]]
    assert [x["index"] for x in r.json()["rejected"]] == [1, 2]


def test_ids_longer_than_the_store_keeps_are_named(service):
    """An id longer than the store's id columns (64) is a 422 naming the field on every
    backend (PostgreSQL enforces the length: it was a 500; SQLite stored the id)."""
    client, keys, new, _ = service
    orders = payload(new.iloc[90:93])
    orders[1]["resident_id"] = "R" * 65
    oid = orders[1]["order_id"]
    r = client.post("/v1/score", json={"orders": [orders[1]]}, headers=auth(keys["system"]))
    assert r.status_code == 422
    assert r.json()["detail"][0]["message"] == f"orders[0] ({oid}): resident_id:too_long"
    r = client.post("/v1/score?partial=true", json={"orders": orders}, headers=auth(keys["system"]))
    assert r.status_code == 200, r.text[:300]
    assert [d["order_id"] for d in r.json()["decisions"]] == [
        orders[0]["order_id"],
        orders[2]["order_id"],
    ]
    assert [x["errors"] for x in r.json()["rejected"]] == [["resident_id:too_long"]]
    assert client.get(f"/v1/decisions/{oid}", headers=auth(keys["quality"])).status_code == 404
    orders[1]["resident_id"] = "R" * 64  # the longest id kept
    long_tech = {"technician_id": "T" * 65, "team": "水电一班"}
    r = client.post(
        "/v1/score",
        json={"orders": [orders[1]], "technicians": [long_tech]},
        headers=auth(keys["system"]),
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["errors"] == ["technician_id:too_long"]
    r = client.post("/v1/score", json={"orders": [orders[1]]}, headers=auth(keys["system"]))
    assert r.status_code == 200, r.text[:300]


def test_text_with_a_nul_character_is_named_not_a_500(service):
    """PostgreSQL text cannot hold a NUL character (it was a 500 there; SQLite stored it):
    a 422 naming the field on every backend, for orders and for the quality loop's texts."""
    client, keys, new, _ = service
    order = payload(new.iloc[95:96])[0]
    order["description"] = "卫生间漏水\x00严重"
    r = client.post("/v1/score", json={"orders": [order]}, headers=auth(keys["system"]))
    assert r.status_code == 422
    msg = f"orders[0] ({order['order_id']}): description:nul_character"
    assert r.json()["detail"][0]["message"] == msg
    followup = {"order_id": order["order_id"], "rating": 2, "comment": "差\x00评"}
    followup["followed_up_at"] = order["completed_at"]
    r = client.post("/v1/outcomes", json={"followups": [followup]}, headers=auth(keys["quality"]))
    assert r.status_code == 422
    assert r.json()["detail"] == [
        "followups[0].comment: must not contain a NUL character (\\u0000)"
    ]


def test_batch_size_limits(service):
    client, keys, *_ = service
    r = client.post("/v1/score", json={"orders": []}, headers=auth(keys["system"]))
    assert r.status_code == 422
    assert r.json()["detail"] == "orders: 1 to 10000 orders per request (got 0)"


def test_concurrent_scores_lose_no_write(service):
    client, keys, new, _ = service
    chunk = payload(new.iloc[20:60])
    with ThreadPoolExecutor(8) as ex:
        rs = list(
            ex.map(
                lambda o: client.post(
                    "/v1/score", json={"orders": [o]}, headers=auth(keys["system"])
                ),
                chunk + chunk,
            )
        )
    assert all(r.status_code == 200 for r in rs)
    ids = {}
    for r in rs:
        d = r.json()["decisions"][0]
        ids.setdefault(d["order_id"], set()).add(d["decision_id"])
    assert len(ids) == 40 and all(len(v) == 1 for v in ids.values())


def test_concurrent_small_requests_validated_together_keep_their_own_errors(service):
    """Small requests are validated in one pass with their concurrent neighbours; a request
    with a bad order still gets its own exact 422 and its good neighbours are scored."""
    client, keys, new, _ = service
    orders = payload(new.iloc[60:72])
    for i in (3, 7):
        orders[i]["rating"] = 9
    with ThreadPoolExecutor(6) as ex:
        rs = list(
            ex.map(
                lambda o: client.post(
                    "/v1/score", json={"orders": [o]}, headers=auth(keys["system"])
                ),
                orders,
            )
        )
    for i, (o, r) in enumerate(zip(orders, rs, strict=True)):
        if i in (3, 7):
            assert r.status_code == 422
            assert (
                r.json()["detail"][0]["message"]
                == f"orders[0] ({o['order_id']}): rating:out_of_range"
            )
        else:
            assert r.status_code == 200, r.text[:300]
            assert [d["order_id"] for d in r.json()["decisions"]] == [o["order_id"]]


def test_fast_store_rows_equal_frame_rows(trained):
    """Small batches build store rows from numpy columns: same values, types and hashes."""
    from models.schemas import ORDERS
    from models.validation import validate_records
    from serving.engine import db_rows
    from serving.store.db import content_hash, frame_rows

    _, done = trained
    for n in (1, 3, 40):
        valid = validate_records(payload(done.iloc[100 : 100 + n]), ORDERS).valid
        fast, ref = db_rows(valid), frame_rows(valid, ORDERS)
        assert fast == ref
        assert [type(v) for r in fast for v in r.values()] == [
            type(v) for r in ref for v in r.values()
        ]
        assert [content_hash(r) for r in fast] == [content_hash(r) for r in ref]


def test_scored_orders_are_history_at_once_and_survive_a_background_rebuild(service):
    """No refresh lag: an order is in the features' history when its response returns; a
    rebuild that started before later orders arrived still ends up with every stored order."""
    from models.features import build_history, features_for

    client, keys, new, _ = service
    state = client.app.state.service
    cache = state.cache
    first, second, probe = payload(new.iloc[80:81]), payload(new.iloc[81:82]), new.iloc[82:83]
    r = client.post("/v1/score", json={"orders": first}, headers=auth(keys["system"]))
    assert r.status_code == 200
    # a lone order is appended right after its answer is sent (a background task of the
    # response, which the test client runs before returning); every scoring flushes first too
    assert state.scorer._deferred is None
    assert cache.current.contains(first[0]["order_id"])
    built = cache.build(state.scorer.served.model)  # as the background merger does
    r = client.post("/v1/score", json={"orders": second}, headers=auth(keys["system"]))
    assert r.status_code == 200
    state.scorer.flush()
    cache.install(built)
    assert cache.current.contains(second[0]["order_id"])
    assert len(cache.current.ids) == state.store.order_count()
    full = build_history(
        state.store.orders_frame(),
        technicians=state.store.side_frame("technicians"),
        units=state.store.side_frame("units"),
        config=state.scorer.served.model.feature_config,
        text_models=state.scorer.served.model.text_models,
    )
    pd.testing.assert_frame_equal(
        features_for(cache.history, probe),
        features_for(full, probe),
        check_exact=False,
        rtol=1e-9,
        atol=1e-12,
    )


def test_outcomes_and_policy(service):
    client, keys, new, _ = service
    order = new.iloc[0]
    at = (order["completed_at"] + dt.timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S")
    inspection = {
        "order_id": order["order_id"],
        "kind": "internal",
        "passed": True,
        "inspector": "质检员",
        "inspected_at": at,
    }
    r = client.post(
        "/v1/outcomes", json={"inspections": [inspection]}, headers=auth(keys["quality"])
    )
    assert r.status_code == 200, r.text
    assert r.json()["recorded"] == 1
    pol = client.get("/v1/admin/policy", headers=auth(keys["admin"])).json()
    assert pol["version"] == POLICY_VERSION and 0 < pol["sampling_base"] < 1


def test_reload_refuses_a_broken_model_and_keeps_serving(service):
    client, keys, new, served_dir = service
    before = client.get("/v1/model", headers=auth(keys["admin"])).json()["version"]
    pkl = served_dir / "artifacts" / "risk_model.pkl"
    good = pkl.read_bytes()
    pkl.write_bytes(b"not a pickle")
    try:
        r = client.post("/v1/admin/reload", headers=auth(keys["admin"]))
        assert r.status_code == 409
        assert r.json()["detail"].startswith(f"model refused, still serving repairqc-risk/{before}")
        r = client.post(
            "/v1/score", json={"orders": payload(new.iloc[60:61])}, headers=auth(keys["system"])
        )
        assert r.status_code == 200
    finally:
        pkl.write_bytes(good)
    r = client.post("/v1/admin/reload", headers=auth(keys["admin"]))
    assert r.status_code == 200 and r.json()["serving"] == f"repairqc-risk/{before}"


def test_coalescer_batches_concurrent_requests_and_returns_each_its_own_decisions():
    """Small concurrent requests share a scoring call; ids never repeat within one call."""
    import threading
    import time as _time

    import pandas as pd

    from serving.engine import Coalescer

    calls: list[list[str]] = []
    gate = threading.Event()

    class FakeScorer:
        def flush(self):
            pass

        def score(self, orders, rescore=False, defer_append=False):
            gate.wait(5)  # the first call holds the thread until everything has queued
            calls.append(list(orders["order_id"]))
            if "BAD" in calls[-1]:
                raise RuntimeError("boom")
            return [{"order_id": i, "rescore": rescore} for i in orders["order_id"]], [False] * len(
                orders
            )

    co = Coalescer(FakeScorer())
    frames = [pd.DataFrame({"order_id": [f"A{i}", f"B{i}"]}) for i in range(8)]
    frames.append(pd.DataFrame({"order_id": ["A0"]}))  # same id as another request
    with ThreadPoolExecutor(len(frames)) as ex:
        futs = [ex.submit(co.submit, f, False) for f in frames]
        _time.sleep(0.3)
        gate.set()
        results = [f.result(timeout=10) for f in futs]
    for f, (records, replayed) in zip(frames, results, strict=True):
        assert [r["order_id"] for r in records] == list(f["order_id"])
        assert replayed == [False] * len(f)
    assert len(calls) < len(frames)
    assert all(len(set(c)) == len(c) for c in calls)
    with pytest.raises(RuntimeError, match="boom"):
        co.submit(pd.DataFrame({"order_id": ["BAD"]}), False)
    co.stop()


def test_request_latency_is_labelled_by_route_and_status(service):
    client, *_ = service
    client.get("/health")
    client.get("/no-such-page")
    text = client.get("/metrics").text
    assert 'repairqc_request_seconds_count{method="GET",route="/health",status="200"}' in text
    assert 'route="unmatched",status="404"' in text


def test_batch_decision_ids_are_random_uuid4():
    """Decision ids of a batch come from one urandom call: still distinct version-4 UUIDs."""
    import uuid

    from serving.engine import _uuid4_hexes

    ids = _uuid4_hexes(2000)
    assert len(set(ids)) == 2000 and _uuid4_hexes(0) == []
    for h in ids[:200] + _uuid4_hexes(1):
        u = uuid.UUID(h)
        assert u.hex == h and u.version == 4 and u.variant == uuid.RFC_4122
