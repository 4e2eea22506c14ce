"""``repairqc export`` round trip and ``repairqc outcomes import``."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from typer.testing import CliRunner

from models.schemas import ORDERS, TECHNICIANS, UNITS
from pipelines.cli import app
from tests.serving_fixtures import operation_store
from tests.test_quality_loop_store import add_decision


@pytest.fixture()
def filled(tmp_path, database_url):
    """A store holding a synthetic operation: orders, master data, decisions, outcomes; on
    each backend (SQLite; PostgreSQL with a test server)."""
    url, store, done = operation_store(tmp_path, database_url=database_url)
    for oid in done["order_id"].iloc[:40]:
        add_decision(store, oid, inclusion_probability=0.25, draw_u=0.1, third_party_sample=True)
    return url, store, done


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_export_round_trip_validates_with_an_empty_quarantine(filled, tmp_path):
    url, store, done = filled
    o = done.iloc[0]
    at = o["completed_at"] + dt.timedelta(days=2)
    store.add_followups(
        [
            {"order_id": o["order_id"], "rating": 1, "comment": "没修好", "followed_up_at": at},
            {"order_id": o["order_id"], "complaint": True, "followed_up_at": at},
        ]
    )
    [res] = store.add_inspections(
        [
            {
                "order_id": o["order_id"],
                "kind": "third_party",
                "passed": False,
                "defect_codes": ["leak", "dirty"],
                "inspector": "李工",
                "agency": "某检测公司",
                "photos": ["https://x/1.jpg"],
                "inspected_at": at,
            }
        ]
    )
    out = tmp_path / "export"
    r = run("export", "--out", str(out), "--database-url", url)
    assert r.exit_code == 0, r.output
    exported = pd.read_csv(out / "orders.csv", dtype=str, keep_default_na=False)
    assert list(exported.columns) == ORDERS.names and len(exported) == len(done)
    row = exported.set_index("order_id").loc[o["order_id"]]
    assert (row["rating"], row["feedback_comment"], row["complaint"]) == ("1", "没修好", "true")
    for name, contract in (("technicians", TECHNICIANS), ("units", UNITS)):
        assert list(pd.read_csv(out / f"{name}.csv").columns) == contract.names
    ins = pd.read_csv(out / "inspections.csv", dtype=str, keep_default_na=False)
    assert ins.loc[0, "defect_codes"] == "leak;dirty" and ins.loc[0, "counts_as_failure"] == "true"
    assert float(ins.loc[0, "inclusion_probability"]) == 0.25 and ins.loc[0, "draw_u"] == "0.1"
    assert len(pd.read_csv(out / "decisions.csv")) == 40
    assert list(pd.read_parquet(out / "ground_truth.parquet").columns) == ["order_id"]
    # the contract's own validator accepts everything
    checked = tmp_path / "validated"
    r = run(
        "validate",
        "--orders",
        str(out / "orders.csv"),
        "--technicians",
        str(out / "technicians.csv"),
        "--units",
        str(out / "units.csv"),
        "--out",
        str(checked),
    )
    assert r.exit_code == 0, r.output
    for q in ("quarantine.csv", "quarantine_technicians.csv", "quarantine_units.csv"):
        assert pd.read_csv(checked / q).empty, q
    valid = pd.read_parquet(checked / "orders.parquet")
    assert len(valid) == len(done)
    # an upheld appeal: the failure no longer counts in the export
    ap = store.create_appeal(res["id"], o["technician_id"], "非本次维修部位")
    store.decide_appeal(ap["appeal_id"], "upheld", "品质经理", None)
    run("export", "--out", str(out), "--database-url", url)
    ins = pd.read_csv(out / "inspections.csv", dtype=str, keep_default_na=False)
    assert (ins.loc[0, "overturned"], ins.loc[0, "counts_as_failure"]) == ("true", "false")
    assert ins.loc[0, "passed"] == "false"


def test_export_of_an_empty_store_is_a_clear_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    r = run("export", "--out", str(tmp_path / "x"), "--database-url", url)
    assert r.exit_code == 2 and "the store holds no orders: nothing to export" in r.output


def test_outcomes_import_validates_the_whole_file_then_records(filled, tmp_path):
    url, store, done = filled
    a, b = done.iloc[1], done.iloc[2]
    when = (a["completed_at"] + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    good = tmp_path / "fu.csv"
    good.write_text(
        "order_id,rating,comment,complaint,followed_up_at\n"
        f"{a['order_id']},5,师傅很好,否,{when}\n"
        f"{b['order_id']},,,是,{(b['completed_at'] + dt.timedelta(days=1)):%Y-%m-%d %H:%M:%S}\n",
        encoding="utf-8",
    )
    r = run("outcomes", "import", "--in", str(good), "--kind", "followup", "--database-url", url)
    assert r.exit_code == 0, r.output
    assert "2 rows: 2 recorded, 0 duplicates" in r.output
    r = run("outcomes", "import", "--in", str(good), "--kind", "followup", "--database-url", url)
    assert "2 rows: 0 recorded, 2 duplicates" in r.output
    bad = tmp_path / "ins.csv"
    bad.write_text(
        "order_id,passed,defect_codes,inspector,notes,photos,inspected_at\n"
        f"{a['order_id']},合格,,张,,,{when}\n"
        f"{a['order_id']},不合格,,张,,,{when}\n"
        f"WO-NONE,true,,张,,,{when}\n"
        f"{a['order_id']},maybe,,张,,,2020-01-01 00:00:00\n",
        encoding="utf-8",
    )
    before = len(store.inspections_frame())
    r = run("outcomes", "import", "--in", str(bad), "--kind", "internal", "--database-url", url)
    assert r.exit_code == 2
    oid = a["order_id"]
    for msg in (
        f"line 3 ({oid}): defect_codes: a failed inspection needs at least one defect code",
        "line 4 (WO-NONE): order_id: unknown order WO-NONE (send it to POST /v1/score first)",
        f"line 5 ({oid}): passed: Input should be a valid boolean",
    ):
        assert msg in r.output
    assert len(store.inspections_frame()) == before  # atomic: the good line 2 is not recorded
    r = run("outcomes", "import", "--in", str(bad), "--kind", "third_party", "--database-url", url)
    assert "header: missing column(s) ['agency'] for --kind third_party" in r.output
    r = run("outcomes", "import", "--in", str(good), "--kind", "internal", "--database-url", url)
    assert "header: unknown column(s) ['comment', 'complaint', 'followed_up_at', 'rating']" in (
        r.output
    )
