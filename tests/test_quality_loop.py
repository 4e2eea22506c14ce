"""Quality-loop routes: outcomes, queue, assignments, rectification, appeals, rework links.

Every route: happy path, invalid input (exact message), 401 and 403.
"""

from __future__ import annotations

import datetime as dt
import time

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.main import create_app
from serving.store.db import Store, make_engine
from tests.serving_fixtures import auth, payload, served_settings

FMT = "%Y-%m-%d %H:%M:%S"


@pytest.fixture(scope="module")
def service(tmp_path_factory, module_database_url):
    """The service on each store backend (SQLite; PostgreSQL with a test server)."""
    root = tmp_path_factory.mktemp("qloop")
    settings, url, done = served_settings(root, seed=5, database_url=module_database_url)
    with TestClient(create_app(settings)) as client:
        store = Store(make_engine(url))
        keys = {role: store.create_key(role)[1] for role in ("system", "quality", "admin")}
        body = {"orders": payload(done.iloc[:-100])}
        r = client.post("/v1/score", json=body, headers=auth(keys["system"]))
        assert r.status_code == 200, r.text[:300]
        decisions = pd.DataFrame(r.json()["decisions"])
        yield client, keys, done, decisions, store


def after(order: pd.Series, hours: float) -> str:
    return (order["completed_at"] + dt.timedelta(hours=hours)).strftime(FMT)


def inspection(order: pd.Series, **kw) -> dict:
    body = {
        "order_id": order["order_id"],
        "kind": "internal",
        "passed": True,
        "inspector": "质检员-张伟",
        "inspected_at": after(order, 5),
    }
    return {**body, **kw}


ROUTES = [
    ("post", "/v1/outcomes", {"followups": []}),
    ("get", "/v1/outcomes/x", None),
    ("get", "/v1/inspections/queue", None),
    ("post", "/v1/inspections/x/assign", {"inspector": "a"}),
    ("post", "/v1/rectifications", {}),
    ("get", "/v1/rectifications", None),
    ("get", "/v1/rectifications/x", None),
    ("patch", "/v1/rectifications/x", {}),
    ("delete", "/v1/rectifications/x", None),
    ("post", "/v1/appeals", {}),
    ("get", "/v1/appeals", None),
    ("get", "/v1/appeals/x", None),
    ("post", "/v1/appeals/x/decision", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_401_without_or_with_unknown_key(service, method, path, body):
    client = service[0]
    kw = {"json": body} if body is not None else {}
    assert client.request(method, path, **kw).status_code == 401
    r = client.request(method, path, headers=auth("rqc_nope"), **kw)
    assert r.status_code == 401 and r.json()["detail"] == "missing or unknown API key"


#: Who may not: system only records outcomes and appeals; nobody but quality/admin works queues.
FORBIDDEN = [
    ("system", m, p, b)
    for m, p, b in ROUTES
    if (m, p) not in (("post", "/v1/outcomes"), ("post", "/v1/appeals"))
]


@pytest.mark.parametrize(("role", "method", "path", "body"), FORBIDDEN)
def test_403_for_the_wrong_role(service, role, method, path, body):
    client, keys, *_ = service
    kw = {"json": body} if body is not None else {}
    r = client.request(method, path, headers=auth(keys[role]), **kw)
    assert r.status_code == 403
    assert r.json()["detail"].startswith(f"role '{role}' may not do this")


def test_outcomes_recorded_idempotent_and_listed(service):
    client, keys, done, *_ = service
    o = done.iloc[10]
    fu = {
        "order_id": o["order_id"],
        "rating": 2,
        "comment": "第二天又漏水了",
        "complaint": True,
        "followed_up_at": after(o, 48),
    }
    body = {"followups": [fu], "inspections": [inspection(o, passed=False, defect_codes=["leak"])]}
    r = client.post("/v1/outcomes", json=body, headers=auth(keys["system"]))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["recorded"] == 2 and out["duplicates"] == 0
    again = client.post("/v1/outcomes", json=body, headers=auth(keys["quality"])).json()
    assert again["recorded"] == 0 and again["duplicates"] == 2
    assert again["inspections"][0]["id"] == out["inspections"][0]["id"]
    fixed = {**fu, "rating": 3, "followed_up_at": after(o, 49)}  # a correction: latest wins
    client.post("/v1/outcomes", json={"followups": [fixed]}, headers=auth(keys["quality"]))
    hist = client.get(f"/v1/outcomes/{o['order_id']}", headers=auth(keys["quality"])).json()
    assert [f["rating"] for f in hist["followups"]] == [2, 3]
    # the follow-up reaches the stored order and the served history (later scores read it)
    stored = service[4].orders_frame([o["order_id"]]).iloc[0]
    assert (stored["rating"], stored["feedback_comment"], stored["complaint"]) == (
        3,
        "第二天又漏水了",
        True,
    )
    cache = client.app.state.service.cache
    for _ in range(100):
        row = cache.orders[cache.orders["order_id"] == o["order_id"]]
        if len(row) and row["rating"].iloc[-1] == 3:
            break
        time.sleep(0.05)
    assert row["rating"].iloc[-1] == 3 and bool(row["complaint"].iloc[-1])
    assert [f["is_latest"] for f in hist["followups"]] == [False, True]
    assert hist["inspections"][0]["defect_codes"] == ["leak"]
    assert hist["followups"][0]["observed_at"].endswith("+08:00")
    r = client.get("/v1/outcomes/nope", headers=auth(keys["quality"]))
    assert r.status_code == 404 and r.json()["detail"] == "order nope is unknown"


def test_invalid_outcomes_name_each_field_and_record_nothing(service, tmp_path):
    client, keys, done, _, store = service
    o = done.iloc[11]
    before = len(store.inspections_frame())
    body = {
        "followups": [
            {"order_id": o["order_id"], "rating": 7, "followed_up_at": after(o, 1)},
            {"order_id": o["order_id"], "ratting": 3, "followed_up_at": after(o, 1)},
        ],
        "inspections": [
            inspection(o, passed=False),
            inspection(o, kind="third_party"),
            inspection(o, photos=["ftp://x/y.jpg"]),
        ],
    }
    r = client.post("/v1/outcomes", json=body, headers=auth(keys["quality"]))
    assert r.status_code == 422
    assert r.json()["detail"] == [
        "followups[0].rating: Input should be less than or equal to 5",
        "followups[1].ratting: Extra inputs are not permitted",
        "inspections[0].defect_codes: a failed inspection needs at least one defect code",
        "inspections[1].agency: required for a third_party result",
        "inspections[2].photos[0]: URL scheme should be 'http' or 'https'",
    ]
    body = {
        "followups": [{"order_id": "WO-NONE", "rating": 5, "followed_up_at": after(o, 1)}],
        "inspections": [
            inspection(o, inspected_at=after(o, -1)),
            inspection(o, inspected_at="2999-01-01 00:00:00"),
            inspection(o),  # valid, but the request is atomic
        ],
    }
    r = client.post("/v1/outcomes", json=body, headers=auth(keys["quality"]))
    assert r.status_code == 422
    shown = o["completed_at"].strftime(FMT)
    assert r.json()["detail"] == [
        "followups[0].order_id: unknown order WO-NONE (send it to POST /v1/score first)",
        f"inspections[0].inspected_at: before the order's completion ({shown})",
        "inspections[1].inspected_at: in the future",
    ]
    r = client.post("/v1/outcomes", json={}, headers=auth(keys["quality"]))
    assert r.json()["detail"] == ["body: give at least one follow-up or inspection"]
    many = {"followups": [body["followups"][0]] * 10_001}
    r = client.post("/v1/outcomes", json=many, headers=auth(keys["quality"]))
    assert r.json()["detail"] == [
        "followups: List should have at most 10000 items after validation, not 10001"
    ]
    r = client.post(
        "/v1/outcomes",
        content=b'{"followups": [',
        headers={**auth(keys["quality"]), "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["detail"] == ["body: JSON decode error at character 15"]
    assert len(store.inspections_frame()) == before


def _busy_days(decisions: pd.DataFrame, done: pd.DataFrame) -> list[tuple[str, dt.date]]:
    """(community, day) pairs by their number of flagged orders, busiest first."""
    flagged = decisions[decisions["mandatory_inspection"]].merge(
        done[["order_id", "community_id", "completed_at"]], on="order_id"
    )
    flagged["day"] = flagged["completed_at"].dt.date
    sizes = flagged.groupby(["community_id", "day"]).size()
    return list(sizes.sort_values(ascending=False, kind="stable").index)


def test_queue_by_expected_harm_within_capacity_and_status(service):
    client, keys, done, decisions, store = service
    # the busiest day whose top 5 holds an order of the day itself (the queue carries undone
    # orders of earlier days over, and they may outrank all of the day's)
    for community, day in _busy_days(decisions, done):
        url = f"/v1/inspections/queue?community={community}&date={day}"
        r = client.get(url, headers=auth(keys["quality"]))
        assert r.status_code == 200, r.text
        q = r.json()
        items = q["items"]
        if any(i["completed_at"].startswith(day.isoformat()) for i in items):
            break
    else:
        raise AssertionError("no day's queue holds an order of that day")
    assert q["date"] == day.isoformat() and q["community"] == community and q["capacity"] == 5
    assert 1 <= len(items) <= 5
    harms = [i["expected_harm"] for i in items]
    assert harms == sorted(harms, reverse=True)
    for i in items:
        risk = max(i["rework_risk"], i["dissatisfaction_prob"])
        assert i["expected_harm"] == pytest.approx(risk * i["severity"])
        assert i["community_id"] == community and i["inspection_reasons"]
    # the data is from 2024: anything not inspected is past its deadline
    assert {i["status"] for i in items} == {"overdue"}
    assert sum(q["counts"].values()) == len(items)
    # an undone order of an earlier day is carried over; one of the day stays once done
    top = next(i["order_id"] for i in items if i["completed_at"].startswith(day.isoformat()))
    r = client.post(
        f"/v1/inspections/{top}/assign",
        json={"inspector": "质检员-李"},
        headers=auth(keys["quality"]),
    )
    assert r.status_code == 200 and r.json()["inspector"] == "质检员-李"
    order = done.set_index("order_id").loc[top]
    order["order_id"] = top
    r = client.post(
        "/v1/outcomes", json={"inspections": [inspection(order)]}, headers=auth(keys["quality"])
    )
    assert r.status_code == 200, r.text
    q2 = client.get(url, headers=auth(keys["quality"])).json()
    mine = next(i for i in q2["items"] if i["order_id"] == top)
    assert mine["status"] == "done" and mine["assignee"] == "质检员-李"
    assert q2["counts"]["done"] >= 1
    # every community: each within its own capacity
    allq = client.get(f"/v1/inspections/queue?date={day}", headers=auth(keys["quality"])).json()
    assert allq["community"] is None
    per = pd.Series([i["community_id"] for i in allq["items"]]).value_counts()
    assert (per <= 5).all()
    # invalid input, unknown community, assignment refusals
    r = client.get("/v1/inspections/queue?date=2024-13-01", headers=auth(keys["quality"]))
    assert r.status_code == 422
    assert r.json()["detail"] == ["date: Input should be a valid date or datetime, month value "
                                  "is outside expected range of 1-12"]  # fmt: skip
    r = client.get("/v1/inspections/queue?community=NOPE", headers=auth(keys["quality"]))
    assert r.status_code == 404 and r.json()["detail"] == "community NOPE has no orders"
    r = client.post(f"/v1/inspections/{top}/assign", json={}, headers=auth(keys["quality"]))
    assert r.json()["detail"] == ["inspector: Field required"]
    r = client.post(
        f"/v1/inspections/{top}/assign", json={"inspector": "x"}, headers=auth(keys["quality"])
    )
    assert r.status_code == 409 and r.json()["detail"] == f"order {top} is already inspected"
    r = client.post(
        "/v1/inspections/none/assign", json={"inspector": "x"}, headers=auth(keys["admin"])
    )
    assert r.status_code == 404 and r.json()["detail"] == "order none was never scored"


def test_new_order_reworking_a_stored_one_is_linked(service):
    client, keys, done, *_ = service
    parent = done.iloc[-100]
    child = done.iloc[-99:-98].copy()
    child["parent_order_id"] = parent["order_id"]
    for h, c in enumerate(("reported_at", "dispatched_at", "arrived_at", "completed_at")):
        child[c] = parent["completed_at"] + dt.timedelta(days=1, hours=h)
    child["unit_id"] = "U-other"
    for o in (done.iloc[-100:-99], child):
        r = client.post("/v1/score", json={"orders": payload(o)}, headers=auth(keys["system"]))
        assert r.status_code == 200, r.text
    hist = client.get(f"/v1/outcomes/{parent['order_id']}", headers=auth(keys["quality"])).json()
    links = [(x["rework_order_id"], x["rework_via"]) for x in hist["reworks"]]
    assert (child["order_id"].iloc[0], "parent_order_id") in links


def test_rectification_crud(service):
    client, keys, done, *_ = service
    h = auth(keys["quality"])
    deadline = (pd.Timestamp.now(tz="Asia/Shanghai") + pd.Timedelta(days=30)).strftime(FMT)
    body = {
        "title": "防水返修偏高：闭水试验48小时",
        "owner": "工程部-王经理",
        "deadline": deadline,
        "cause_category": "waterproofing",
        "cause_community_id": "C001",
        "source_order_id": done["order_id"].iloc[0],
    }
    r = client.post("/v1/rectifications", json=body, headers=h)
    assert r.status_code == 201, r.text
    item = r.json()
    rid = item["rectification_id"]
    assert item["status"] == "open" and item["history"][0]["action"] == "created"
    bad = {k: v for k, v in body.items() if not k.startswith("cause")}
    r = client.post("/v1/rectifications", json=bad, headers=h)
    assert r.status_code == 422
    assert r.json()["detail"] == [
        "cause: give at least one of cause_category, cause_defect_code, cause_technician_id, "
        "cause_community_id"
    ]
    r = client.post("/v1/rectifications", json={**body, "cause_category": "roof"}, headers=h)
    assert r.json()["detail"][0].startswith("cause_category: Input should be 'plumbing'")
    r = client.post("/v1/rectifications", json={**body, "source_order_id": "X"}, headers=h)
    assert r.json()["detail"] == ["source_order_id: unknown order X"]
    r = client.patch(f"/v1/rectifications/{rid}", json={"status": "verified"}, headers=h)
    assert (
        r.status_code == 409 and r.json()["detail"] == "status: cannot move from open to verified"
    )
    r = client.patch(
        f"/v1/rectifications/{rid}",
        json={"status": "done", "evidence": ["https://files.example.com/a.jpg"]},
        headers=h,
    )
    assert r.status_code == 200 and r.json()["status"] == "done" and r.json()["done_at"]
    r = client.patch(
        f"/v1/rectifications/{rid}",
        json={"reinspection_passed": True, "status": "verified"},
        headers=h,
    )
    assert r.json()["status"] == "verified" and r.json()["reinspection_passed"] is True
    r = client.patch(f"/v1/rectifications/{rid}", json={"status": "closed"}, headers=h)
    assert r.status_code == 422
    assert r.json()["detail"] == [
        "status: Input should be 'open', 'in_progress', 'done' or 'verified'"
    ]
    listed = client.get("/v1/rectifications?status=verified", headers=h).json()
    assert rid in [x["rectification_id"] for x in listed]
    r = client.get("/v1/rectifications?status=lost", headers=h)
    assert r.status_code == 422 and r.json()["detail"][0].startswith("status: String should match")
    assert client.get(f"/v1/rectifications/{rid}", headers=h).json()["history"][-1]["changes"]
    r = client.delete(f"/v1/rectifications/{rid}", headers=h)
    assert r.status_code == 409
    other = client.post("/v1/rectifications", json=body, headers=h).json()["rectification_id"]
    assert client.delete(f"/v1/rectifications/{other}", headers=h).json()["deleted"] is True
    r = client.get(f"/v1/rectifications/{other}", headers=h)
    assert r.status_code == 404 and r.json()["detail"] == f"rectification {other} does not exist"


def test_upheld_appeal_overturns_the_failure_everywhere(service):
    client, keys, done, _, store = service
    o = done.iloc[20]
    body = {"inspections": [inspection(o, passed=False, defect_codes=["no_test"])]}
    ins_id = client.post("/v1/outcomes", json=body, headers=auth(keys["quality"])).json()[
        "inspections"
    ][0]["id"]
    tech = o["technician_id"]
    r = client.post(
        "/v1/appeals",
        json={"inspection_id": ins_id, "technician_id": tech, "reason": "渗水来自楼上"},
        headers=auth(keys["system"]),
    )
    assert r.status_code == 201, r.text
    appeal = r.json()
    assert appeal["status"] == "pending" and appeal["order_id"] == o["order_id"]
    r = client.post(
        "/v1/appeals",
        json={"inspection_id": ins_id, "technician_id": tech},
        headers=auth(keys["system"]),
    )
    assert r.status_code == 422 and r.json()["detail"] == ["reason: Field required"]
    r = client.post(
        "/v1/appeals",
        json={"inspection_id": ins_id, "technician_id": tech, "reason": "again"},
        headers=auth(keys["system"]),
    )
    assert r.status_code == 409
    r = client.post(
        "/v1/appeals",
        json={"inspection_id": 999999, "technician_id": tech, "reason": "x"},
        headers=auth(keys["quality"]),
    )
    assert r.status_code == 404 and r.json()["detail"] == "inspection 999999 does not exist"
    url = f"/v1/appeals/{appeal['appeal_id']}/decision"
    r = client.post(
        url, json={"decision": "maybe", "reviewer": "刘"}, headers=auth(keys["quality"])
    )
    assert r.status_code == 422
    assert r.json()["detail"] == ["decision: Input should be 'upheld' or 'rejected'"]
    frame = store.inspections_frame().set_index("inspection_id")
    assert bool(frame.loc[ins_id, "counts_as_failure"])
    r = client.post(
        url,
        json={"decision": "upheld", "reviewer": "品质部-刘经理", "note": "复核属实"},
        headers=auth(keys["quality"]),
    )
    assert r.status_code == 200 and r.json()["status"] == "upheld"
    r = client.post(
        url, json={"decision": "rejected", "reviewer": "x"}, headers=auth(keys["quality"])
    )
    assert r.status_code == 409
    assert r.json()["detail"] == f"appeal {appeal['appeal_id']} is already decided (upheld)"
    frame = store.inspections_frame().set_index("inspection_id")
    assert bool(frame.loc[ins_id, "overturned"]) and not frame.loc[ins_id, "counts_as_failure"]
    got = client.get(f"/v1/appeals/{appeal['appeal_id']}", headers=auth(keys["quality"])).json()
    assert got["reviewer"] == "品质部-刘经理" and got["decided_at"]
    listed = client.get("/v1/appeals?status=upheld", headers=auth(keys["quality"])).json()
    assert appeal["appeal_id"] in [a["appeal_id"] for a in listed]
    assert client.get("/v1/appeals/none", headers=auth(keys["quality"])).status_code == 404
    r = client.get("/v1/appeals?status=lost", headers=auth(keys["quality"]))
    assert r.status_code == 422
    assert r.json()["detail"] == [
        "status: String should match pattern '^(pending|upheld|rejected)$'"
    ]


def test_openapi_documents_the_loop_with_chinese_examples(service):
    client = service[0]
    spec = client.get("/openapi.json").json()
    for path in ("/v1/outcomes", "/v1/inspections/queue", "/v1/rectifications", "/v1/appeals"):
        assert path in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert "质检" in str(schemas["InspectionIn"]["examples"])
    assert "漏水" in str(schemas["FollowupIn"]["examples"]) or "滴水" in str(
        schemas["FollowupIn"]["examples"]
    )
    assert "申诉" in spec["paths"]["/v1/appeals"]["post"]["summary"]
    assert "本单为返修单" in str(schemas["QueueOut"]["examples"])


def test_concurrent_identical_outcomes_are_recorded_once(service):
    from concurrent.futures import ThreadPoolExecutor

    client, keys, done, _, store = service
    o = done.iloc[30]
    body = {"inspections": [inspection(o, notes="并发写入")]}

    def post(_):
        return client.post("/v1/outcomes", json=body, headers=auth(keys["quality"]))

    with ThreadPoolExecutor(8) as ex:
        rs = list(ex.map(post, range(16)))
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs if r.status_code != 200]
    assert len({r.json()["inspections"][0]["id"] for r in rs}) == 1
    assert sum(r.json()["recorded"] for r in rs) == 1
    ins = store.inspections_frame()
    assert (ins["notes"] == "并发写入").sum() == 1


def test_concurrent_appeals_leave_one_open(service):
    from concurrent.futures import ThreadPoolExecutor

    client, keys, done, *_ = service
    o = done.iloc[31]
    body = {"inspections": [inspection(o, passed=False, defect_codes=["x"])]}
    r = client.post("/v1/outcomes", json=body, headers=auth(keys["quality"]))
    ins_id = r.json()["inspections"][0]["id"]
    appeal = {"inspection_id": ins_id, "technician_id": o["technician_id"], "reason": "不是我"}

    def post(_):
        return client.post("/v1/appeals", json=appeal, headers=auth(keys["system"]))

    with ThreadPoolExecutor(8) as ex:
        codes = sorted(r.status_code for r in ex.map(post, range(8)))
    assert codes == [201] + [409] * 7


def test_label_appeals_through_the_api(service):
    client, keys, done, _, store = service
    links = store.outcomes_frame()
    links = links[links["kind"] == "rework"]
    facts = store.order_facts(links["order_id"])
    oid = next(o for o in links["order_id"] if facts[o]["technician_id"])
    tech = facts[oid]["technician_id"]
    q, s = auth(keys["quality"]), auth(keys["system"])
    for body, detail in (
        (
            {"target": "rework", "technician_id": tech, "reason": "x"},
            "order_id: required when target is rework",
        ),
        (
            {"technician_id": tech, "order_id": oid, "reason": "x"},
            "inspection_id: required when target is inspection",
        ),
        (
            {
                "target": "rework",
                "order_id": oid,
                "inspection_id": 3,
                "technician_id": tech,
                "reason": "x",
            },
            "inspection_id: not allowed when target is rework",
        ),
        (
            {"target": "refund", "order_id": oid, "technician_id": tech, "reason": "x"},
            "target: Input should be 'inspection', 'rework' or 'dissatisfaction'",
        ),
    ):
        r = client.post("/v1/appeals", json=body, headers=s)
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == [detail]
    body = {
        "target": "rework",
        "order_id": oid,
        "technician_id": tech,
        "reason": "返修单是另一处故障",
    }
    r = client.post("/v1/appeals", json=body, headers=s)
    assert r.status_code == 201, r.text
    appeal = r.json()
    assert (appeal["target"], appeal["inspection_id"]) == ("rework", None)
    assert appeal["rework_order_id"] == links[links["order_id"] == oid]["rework_order_id"].iloc[0]
    assert client.post("/v1/appeals", json=body, headers=s).status_code == 409
    r = client.post(
        f"/v1/appeals/{appeal['appeal_id']}/decision",
        json={"decision": "upheld", "reviewer": "品质部-刘经理"},
        headers=q,
    )
    assert r.status_code == 200 and r.json()["status"] == "upheld"
    ov = store.label_overrides_frame()
    assert [oid, "rework", 0] in ov[["order_id", "label", "value"]].values.tolist()
    r = client.post("/v1/appeals", json={**body, "order_id": "WO-NONE"}, headers=s)
    assert r.status_code == 404 and r.json()["detail"] == "order WO-NONE does not exist"
    spec = client.get("/openapi.json").json()["components"]["schemas"]
    examples = str(spec["AppealIn"]["examples"])
    assert "'target': 'rework'" in examples and "不是同一故障" in examples
    assert "'target': 'dissatisfaction'" in examples


def test_concurrent_label_appeals_leave_one_open(service):
    from concurrent.futures import ThreadPoolExecutor

    client, keys, _, _, store = service
    facts = store.order_facts(store.orders_frame()["order_id"])
    appealed = set(store.appeals_frame()["order_id"])
    oid = next(o for o, f in facts.items() if f["technician_id"] and o not in appealed)
    store.add_followups(
        [{"order_id": oid, "complaint": True, "followed_up_at": facts[oid]["completed_at"]}]
    )
    appeal = {
        "target": "dissatisfaction",
        "order_id": oid,
        "technician_id": facts[oid]["technician_id"],
        "reason": "投诉内容是物业费，与维修无关",
    }

    def post(_):
        return client.post("/v1/appeals", json=appeal, headers=auth(keys["system"]))

    with ThreadPoolExecutor(8) as ex:
        codes = sorted(r.status_code for r in ex.map(post, range(8)))
    assert codes == [201] + [409] * 7
