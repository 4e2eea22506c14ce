"""Quality-loop audit store: migration from 0001, frames, rework links, queue, appeals."""

from __future__ import annotations

import datetime as dt
import secrets

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from models.sampling import InspectionQueue
from models.schemas import ORDERS
from models.validation import validate_records
from serving.store import tables as T
from serving.store.db import MIGRATIONS_DIR, Store, content_hash, frame_rows, make_engine, upgrade
from serving.store.quality import ConflictError, InvalidError, NotFoundError
from tests.contract_rows import good_order
from tests.serving_fixtures import POLICY_VERSION

UTC = dt.UTC


def on(day: str) -> dict[str, str]:
    """Lifecycle times of an order reported at 09:00 and completed at 11:00 on ``day``."""
    return {
        "reported_at": f"{day} 09:00:00",
        "dispatched_at": f"{day} 09:10:00",
        "arrived_at": f"{day} 10:00:00",
        "completed_at": f"{day} 11:00:00",
    }


def store_orders(store: Store, rows: list[dict[str, str]]) -> None:
    """Validate contract rows and store them the way ``POST /v1/score`` does."""
    res = validate_records(rows, ORDERS)
    assert res.quarantine.empty, res.quarantine
    valid = res.valid.drop(columns="source_row")
    db_rows = frame_rows(valid, ORDERS)
    store.upsert_orders(db_rows, [content_hash(r) for r in db_rows])


def add_decision(store: Store, order_id: str, **kw) -> str:
    """Record a decision row as the scorer would (only the fields the loop reads matter)."""
    facts = store.order_facts([order_id])[order_id]
    row = {
        "decision_id": secrets.token_hex(8),
        "order_id": order_id,
        "input_hash": kw.pop("input_hash", "h" * 64),
        "model_version": kw.pop("model_version", "m/1"),
        "model_versions": {"rework": "1", "dissatisfied": "1"},
        "policy_version": POLICY_VERSION,
        "rework_risk": 0.2,
        "dissatisfaction_prob": 0.1,
        "risk_level": "medium",
        "mandatory_inspection": True,
        "inspection_reasons": [{"code": "fire_safety", "source": "rule", "text": "消防类工单必检"}],
        "third_party_sample": False,
        "inclusion_probability": 0.05,
        "draw_u": 0.5,
        "reasons": [],
        "community_id": facts["community_id"],
        "completed_at": facts["completed_at"],
        "created_at": dt.datetime.now(UTC),
    }
    row.update(kw)
    store.insert_decisions([row])
    return row["decision_id"]


@pytest.fixture()
def store(tmp_path, database_url) -> Store:
    """A migrated empty store on each backend (SQLite; PostgreSQL with a test server)."""
    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'q.db'}")
    upgrade(engine)
    return Store(engine)


def test_empty_frames_have_their_columns(store):
    assert list(store.decisions_frame().columns)[:3] == ["decision_id", "order_id", "community_id"]
    ins = store.inspections_frame()
    assert ins.empty and {"kind", "passed", "overturned", "counts_as_failure"} <= set(ins)
    assert store.outcomes_frame().empty and "rating" in store.outcomes_frame()
    assert store.rectifications_frame().empty and "deadline" in store.rectifications_frame()
    assert store.appeals_frame().empty and "status" in store.appeals_frame()


def test_upgrade_from_0001_keeps_data_and_adds_the_loop_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    now = dt.datetime(2024, 5, 2, tzinfo=UTC)
    with engine.begin() as conn:
        assert "inspection_results" not in sa.inspect(conn).get_table_names()
        conn.execute(
            sa.text(
                "INSERT INTO outcomes (order_id, kind, value, source, recorded_at) "
                "VALUES ('WO1', 'inspection_result', '{\"passed\": true}', 'x', :t)"
            ),
            {"t": now},
        )
    upgrade(engine)  # 0001 -> head
    store = Store(engine)
    names = set(sa.inspect(engine).get_table_names())
    assert {"inspection_results", "appeals", "rectifications", "inspection_assignments"} <= names
    out = store.outcomes_frame()
    assert out["kind"].tolist() == ["inspection_result"] and out["observed_at"].isna().all()


def test_followups_are_idempotent_and_latest_wins(store):
    store_orders(store, [good_order(1)])
    at = dt.datetime(2024, 5, 3, 10, tzinfo=UTC)
    row = {"order_id": "WO000001", "rating": 2, "comment": "还是漏", "complaint": False}
    first = store.add_followups([{**row, "followed_up_at": at}])
    again = store.add_followups([{**row, "followed_up_at": at}])
    assert not first[0]["duplicate"] and again[0]["duplicate"]
    assert again[0]["id"] == first[0]["id"]
    store.add_followups([{**row, "rating": 1, "followed_up_at": at + dt.timedelta(hours=1)}])
    f = store.outcomes_frame()
    assert len(f) == 2 and f["rating"].tolist() == [2, 1]
    assert f["is_latest"].tolist() == [False, True]
    assert str(f["observed_at"].dt.tz) == "Asia/Shanghai"


def test_rework_links_same_unit_category_and_parent(store):
    a = good_order(1, unit_id="U1")
    b = good_order(2, unit_id="U1", **on("2024-05-10"))
    far = good_order(3, unit_id="U1", **on("2024-08-30"))
    other_cat = good_order(4, unit_id="U1", category="electrical", **on("2024-05-11"))
    child = good_order(5, unit_id="U9", parent_order_id="WO000004", **on("2024-07-01"))
    store_orders(store, [a])
    store_orders(store, [b, far, other_cat])
    store_orders(store, [child])
    store_orders(store, [b])  # re-sent: no new link
    links = store.outcomes_frame()
    links = links[links["kind"] == "rework"].sort_values("order_id")
    assert links["order_id"].tolist() == ["WO000001", "WO000004"]
    assert links["rework_order_id"].tolist() == ["WO000002", "WO000005"]
    assert links["rework_via"].tolist() == ["same_unit_category", "parent_order_id"]


def test_child_arriving_before_its_parent_is_linked_when_the_parent_comes(store):
    child = good_order(5, unit_id="U9", parent_order_id="WO000001", **on("2024-07-01"))
    store_orders(store, [child])
    store_orders(store, [good_order(1, unit_id="U1")])
    f = store.outcomes_frame()
    assert f[["order_id", "rework_order_id"]].values.tolist() == [["WO000001", "WO000005"]]


def _queue_orders(store):
    rows = [
        good_order(1, category="fire_safety", community_id="C01"),
        good_order(2, category="plumbing", community_id="C01"),
        good_order(3, category="wall_floor", community_id="C01"),
        good_order(4, category="elevator", community_id="C01", priority="emergency"),
        good_order(5, category="plumbing", community_id="C02"),
        good_order(6, category="plumbing", community_id="C01"),
    ]
    store_orders(store, rows)
    add_decision(store, "WO000001", rework_risk=0.2)  # harm 0.2*5 = 1.0
    add_decision(store, "WO000002", rework_risk=0.45)  # 0.45*2 = 0.9
    add_decision(store, "WO000003", dissatisfaction_prob=0.5)  # 0.5*1 = 0.5
    add_decision(store, "WO000004", rework_risk=0.3)  # 0.3*4*2 = 2.4
    add_decision(store, "WO000005", rework_risk=0.9)  # other community
    add_decision(store, "WO000006", mandatory_inspection=False, rework_risk=0.99)  # not flagged


def test_queue_orders_by_expected_harm_within_capacity(store):
    _queue_orders(store)
    cfg = InspectionQueue(
        capacity_per_community_day=3,
        category_severity={**InspectionQueue().category_severity, "fire_safety": 5.0,
                           "elevator": 4.0, "plumbing": 2.0, "wall_floor": 1.0},
    )  # fmt: skip
    now = dt.datetime(2024, 5, 1, 13, tzinfo=UTC)  # completion 12:15 local = 04:15 UTC
    q = store.inspection_queue("C01", dt.date(2024, 5, 1), cfg, now=now)
    assert [i["order_id"] for i in q["items"]] == ["WO000004", "WO000001", "WO000002"]
    assert q["capacity"] == 3 and q["overflow"] == 1
    assert [i["expected_harm"] for i in q["items"]] == pytest.approx([2.4, 1.0, 0.9])
    assert q["counts"] == {"open": 3, "assigned": 0, "done": 0, "overdue": 0}
    first = q["items"][0]
    assert first["severity"] == 8.0 and first["category"] == "elevator"
    assert first["due_at"] == "2024-05-02T12:15:00+08:00"  # emergency: 24 h after completion
    # status: assigned, done (any inspection result), overdue (past the deadline, not done)
    store.assign_inspection("WO000001", "质检员张")
    store.add_inspections(
        [
            {
                "order_id": "WO000002",
                "kind": "internal",
                "passed": True,
                "inspector": "质检员李",
                "inspected_at": now,
            }
        ]
    )
    late = dt.datetime(2024, 5, 3, 0, tzinfo=UTC)  # emergency overdue, normal (72 h) not yet
    q = store.inspection_queue("C01", dt.date(2024, 5, 1), cfg, now=late)
    status = {i["order_id"]: (i["status"], i["assignee"]) for i in q["items"]}
    assert status == {
        "WO000004": ("overdue", None),
        "WO000001": ("assigned", "质检员张"),
        "WO000002": ("done", None),
    }
    assert q["counts"] == {"open": 0, "assigned": 1, "done": 1, "overdue": 1}
    # next day: undone orders carry over, done ones do not
    q2 = store.inspection_queue("C01", dt.date(2024, 5, 2), cfg, now=late)
    assert [i["order_id"] for i in q2["items"]] == ["WO000004", "WO000001", "WO000003"]
    with pytest.raises(ConflictError, match="not flagged"):
        store.assign_inspection("WO000006", "x")
    with pytest.raises(ConflictError, match="already inspected"):
        store.assign_inspection("WO000002", "x")
    with pytest.raises(NotFoundError, match="never scored"):
        store.assign_inspection("nope", "x")


def test_upheld_appeal_overturns_the_failure(store):
    store_orders(store, [good_order(1, technician_id="T01")])
    at = dt.datetime(2024, 5, 2, tzinfo=UTC)
    [res] = store.add_inspections(
        [
            {
                "order_id": "WO000001",
                "kind": "third_party",
                "passed": False,
                "defect_codes": ["leak_remains"],
                "inspector": "王工",
                "agency": "上海建科检测",
                "photos": ["https://img.example.com/a.jpg"],
                "inspected_at": at,
            }
        ]
    )
    f = store.inspections_frame()
    assert f["counts_as_failure"].tolist() == [True] and f["agency"].tolist() == ["上海建科检测"]
    with pytest.raises(InvalidError, match="technician_id: T02 did not do order WO000001"):
        store.create_appeal(res["id"], "T02", "不是我修的")
    ap = store.create_appeal(res["id"], "T01", "漏水来自楼上，非本次维修部位")
    with pytest.raises(ConflictError, match="already has appeal"):
        store.create_appeal(res["id"], "T01", "again")
    decided = store.decide_appeal(ap["appeal_id"], "upheld", "品质经理", "复核属实")
    assert decided["status"] == "upheld"
    with pytest.raises(ConflictError, match="already decided"):
        store.decide_appeal(ap["appeal_id"], "rejected", "x", None)
    f = store.inspections_frame()
    assert f["overturned"].tolist() == [True] and f["counts_as_failure"].tolist() == [False]
    assert f["passed"].tolist() == [False]  # the original result is kept
    assert store.appeals_frame()["status"].tolist() == ["upheld"]
    # the database itself refuses a second open appeal (concurrent submissions)
    row = {**ap, "appeal_id": "AP-race", "status": "pending"}
    row["submitted_at"] = dt.datetime.now(UTC)
    row.pop("decided_at"), row.pop("reviewer"), row.pop("decision_note")
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(T.appeals.insert().values(**row))


def test_rectification_lifecycle_and_history(store):
    item = store.create_rectification(
        {
            "title": "防水返修率高：闭水试验必做",
            "owner": "工程部王经理",
            "deadline": dt.datetime.now(UTC) + dt.timedelta(days=30),
            "cause_category": "waterproofing",
            "cause_community_id": "C01",
        }
    )
    rid = item["rectification_id"]
    assert item["status"] == "open"
    with pytest.raises(ConflictError, match="cannot move from open to verified"):
        store.update_rectification(rid, {"status": "verified"})
    store.update_rectification(rid, {"status": "done", "evidence": ["https://e/1.jpg"]})
    back = store.update_rectification(rid, {"reinspection_passed": False})
    assert back["status"] == "in_progress"  # failed re-inspection: back to work
    store.update_rectification(rid, {"status": "done"})
    ok = store.update_rectification(rid, {"reinspection_passed": True, "status": "verified"})
    assert ok["status"] == "verified" and ok["evidence"] == ["https://e/1.jpg"]
    assert [e["action"] for e in ok["history"]] == ["created"] + ["updated"] * 4
    late = dt.datetime.now(UTC) + dt.timedelta(days=60)
    other = store.create_rectification(
        {"title": "t", "owner": "o", "deadline": dt.datetime.now(UTC) + dt.timedelta(days=30)}
    )
    frame = store.rectifications_frame(now=late)
    by_id = dict(zip(frame["rectification_id"], frame["status"], strict=True))
    assert by_id == {rid: "verified", other["rectification_id"]: "overdue"}
    assert store.delete_rectification(other["rectification_id"])["deleted"]
    with pytest.raises(ConflictError, match="has progress"):
        store.delete_rectification(rid)
    assert len(store.rectifications_frame()) == 1


def test_decisions_frame_bounds_and_latest(store):
    store_orders(store, [good_order(1), good_order(2, completed_at="2024-05-03 12:15:00")])
    add_decision(store, "WO000001", model_version="m/1")
    later = add_decision(
        store,
        "WO000001",
        model_version="m/2",
        created_at=dt.datetime.now(UTC) + dt.timedelta(seconds=1),
    )
    add_decision(store, "WO000002")
    f = store.decisions_frame()
    assert len(f) == 2 and later in f["decision_id"].tolist()
    assert f["inspection_reasons"].iloc[0] == ["fire_safety"]
    assert len(store.decisions_frame(latest_only=False)) == 3
    assert store.decisions_frame("2024-05-02", "2024-05-04")["order_id"].tolist() == ["WO000002"]
    assert isinstance(f["completed_at"].iloc[0], pd.Timestamp)
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(T.decisions)).scalar() == 3


@pytest.mark.parametrize("batches", ["chronological", "one"])
def test_rework_links_agree_with_the_labels(store, batches):
    """The ingest-time links are exactly ``rework_labels``' rework_order_id (one definition)."""
    import numpy as np

    from models.labels import LabelConfig, rework_labels
    from tests.synth_orders import make_orders

    orders, *_ = make_orders(2500, seed=7, days=240, n_tech=10, n_units=120)
    orders = orders.sort_values("reported_at", kind="stable").reset_index(drop=True)
    assert orders["parent_order_id"].notna().any() and (orders["status"] == "cancelled").any()
    rows = frame_rows(orders, ORDERS)
    hashes = [content_hash(r) for r in rows]
    rng = np.random.default_rng(0)
    i = 0
    while i < len(rows):
        k = len(rows) if batches == "one" else int(rng.integers(1, 40))
        store.upsert_orders(rows[i : i + k], hashes[i : i + k])
        i += k
    lab = rework_labels(orders, LabelConfig())
    expected = {
        (o, r)
        for o, r in zip(orders["order_id"], lab["rework_order_id"], strict=True)
        if isinstance(r, str)
    }
    links = store.outcomes_frame()
    got = set(zip(links["order_id"], links["rework_order_id"], strict=True))
    assert len(expected) > 100
    assert got == expected


def test_policy_inspection_queue_is_validated():
    import copy

    import yaml

    from models.sampling import Policy, PolicyError
    from serving.config import PACKAGE_DIR

    d = yaml.safe_load((PACKAGE_DIR / "policy.yaml").read_text(encoding="utf-8"))
    q = Policy.from_dict(d).inspection_queue
    assert q.severity("fire_safety", "emergency") == 10.0 and q.capacity_per_community_day == 5

    def refused(change, message):
        bad = copy.deepcopy(d)
        change(bad["inspection_queue"])
        with pytest.raises(PolicyError) as exc:
            Policy.from_dict(bad)
        assert str(exc.value) == message

    refused(lambda q: q.update(capacity=3), "inspection_queue: unknown key(s) ['capacity']")
    refused(
        lambda q: q["category_severity"].pop("other"),
        "inspection_queue.category_severity: needs exactly ['plumbing', 'electrical', 'hvac', "
        "'fire_safety', 'door_window', 'waterproofing', 'wall_floor', 'elevator', "
        "'public_facility', 'other'] (missing ['other'])",
    )
    refused(
        lambda q: q["priority_factor"].update(urgent=0),
        "inspection_queue.priority_factor: values must be numbers > 0",
    )
    refused(
        lambda q: q.update(capacity_per_community_day=-1),
        "inspection_queue: capacity and carry_over_days must be >= 0",
    )
