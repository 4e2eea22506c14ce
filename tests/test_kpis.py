"""The five KPIs on tiny hand-made order histories, and the `repairqc report` command."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from models.kpis import KPI_NAMES, KpiConfig, kpi_fractions, kpi_report, order_flags
from models.schemas import TIMEZONE
from models.validation import validate_orders
from pipelines.cli import app
from pipelines.report import kpi_config, period
from tests.contract_rows import good_order, orders_frame

T0 = pd.Timestamp("2024-01-01")


@pytest.fixture(autouse=True)
def _no_registry(tmp_path, monkeypatch):
    """No model registry: the report's model sections must say so (and stay fast)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-registry.db'}")


def at(day: float, hours: float = 0.0) -> str:
    return (T0 + pd.Timedelta(days=day) + pd.Timedelta(hours=hours)).strftime("%Y-%m-%d %H:%M:%S")


def order(i: int, day: float, *, dispatch_h=0.1, arrive_h=1.0, complete_h="auto", **kw) -> dict:
    """A completed normal order reported at ``day`` 08:00; offsets in hours from the report
    (``None``: empty; completion defaults to one hour after arrival)."""
    rep = 8.0
    if complete_h == "auto":
        complete_h = None if arrive_h is None else arrive_h + 1.0
    base = dict(
        unit_id=f"U{i}",
        reported_at=at(day, rep),
        dispatched_at="" if dispatch_h is None else at(day, rep + dispatch_h),
        arrived_at="" if arrive_h is None else at(day, rep + arrive_h),
        completed_at="" if complete_h is None else at(day, rep + complete_h),
    )
    base.update(kw)
    return good_order(i, **base)


def typed(rows):
    res = validate_orders(orders_frame(rows))
    assert res.quarantine.empty, res.quarantine["reason"].tolist()
    return res.valid


def fractions(rows, **kw) -> dict[str, tuple[int, int]]:
    row = kpi_fractions(order_flags(typed(rows), **kw)).iloc[0]
    return {k: (int(row[f"{k}_num"]), int(row[f"{k}_den"])) for k in KPI_NAMES}


def late_anchor(i: int = 99) -> dict:
    """An order far in the future so that every SLA and rework window of the others has passed."""
    return order(i, 200)


def test_arrival_sla_boundaries_per_priority():
    rows = [
        order(1, 0, dispatch_h=0.1, arrive_h=24.0, complete_h=25),  # normal exactly 24 h: on time
        order(2, 0, dispatch_h=0.1, arrive_h=24.01, complete_h=25),  # normal just over: late
        order(3, 0, priority="emergency", dispatch_h=0.1, arrive_h=0.5),  # 30 min: on time
        order(4, 0, priority="emergency", dispatch_h=0.1, arrive_h=0.52),  # 31 min: late
        order(5, 0, priority="urgent", dispatch_h=0.1, arrive_h=2.0),  # on time
        order(6, 0, priority="urgent", dispatch_h=0.1, arrive_h=2.1),  # late
    ]
    flags = order_flags(typed(rows))
    assert flags["response_timeliness_num"].tolist() == [1, 0, 1, 0, 1, 0]
    assert flags["response_timeliness_den"].tolist() == [1] * 6


def test_dispatch_sla_boundaries_and_configurable():
    rows = [
        order(1, 0, dispatch_h=2.0, arrive_h=3),  # normal 2 h: on time
        order(2, 0, dispatch_h=2.05, arrive_h=3),  # late
        order(3, 0, priority="emergency", dispatch_h=0.25),  # 15 min: on time
        order(4, 0, priority="urgent", dispatch_h=0.6),  # urgent 30 min: late
    ]
    assert order_flags(typed(rows))["dispatch_timeliness_num"].tolist() == [1, 0, 1, 0]
    loose = KpiConfig(dispatch_sla_hours={"normal": 3, "urgent": 1, "emergency": 0.25})
    assert order_flags(typed(rows), loose)["dispatch_timeliness_num"].tolist() == [1, 1, 1, 1]


def test_cancelled_orders_are_excluded_everywhere():
    rows = [
        order(1, 0),
        order(
            2,
            0,
            status="cancelled",
            dispatch_h=None,
            arrive_h=None,
            complete_h=None,
            rating="",
            technician_id="",
        ),
        late_anchor(),
    ]
    f = fractions(rows)
    assert f["response_timeliness"] == (2, 2)
    assert f["dispatch_timeliness"] == (2, 2)
    assert f["completion_rate"] == (2, 2)


def test_never_arrived_is_late_once_the_sla_passed_and_pending_before():
    rows = [
        # dispatched but nobody came, 10 days before the end of the data: late
        order(1, 0, status="dispatched", arrive_h=None, complete_h=None, rating=""),
        # reported one hour before the end of the data, normal (24 h): still pending, not counted
        order(
            2,
            10,
            reported_at=at(10, 7),
            status="open",
            dispatch_h=None,
            arrive_h=None,
            complete_h=None,
            rating="",
        ),
        order(3, 10),  # the last report: 10 days 08:00
    ]
    flags = order_flags(typed(rows))
    assert flags["response_timeliness_num"].tolist() == [0, 0, 1]
    assert flags["response_timeliness_den"].tolist() == [1, 0, 1]
    # order 2 was not dispatched within 2 h of 07:00 by 08:00 either: still pending
    assert flags["dispatch_timeliness_den"].tolist() == [1, 0, 1]
    # open orders are not completed but count in the completion denominator
    assert flags["completion_rate_num"].tolist() == [0, 0, 1]
    assert flags["completion_rate_den"].tolist() == [1, 1, 1]


def test_first_time_fix_uses_the_rework_label_and_excludes_censored_windows():
    rows = [
        order(1, 0, unit_id="A"),  # reworked by order 2 (same unit + category, 5 days later)
        order(2, 5, unit_id="A"),  # its window closed without a repeat: fixed
        order(3, 0, unit_id="B"),  # window closed, no repeat: fixed
        order(4, 195, unit_id="C"),  # window still open at the end of the data: excluded
        order(5, 0, unit_id="D", status="in_progress", complete_h=None, rating=""),  # not done
        late_anchor(),  # day 200: also censored
    ]
    flags = order_flags(typed(rows))
    assert flags["first_time_fix_rate_den"].tolist() == [1, 1, 1, 0, 0, 0]
    assert flags["first_time_fix_rate_num"].tolist() == [0, 1, 1, 0, 0, 0]
    # a rework column from label_orders is used as it is
    labelled = typed(rows).assign(rework=[1.0, 1.0, None, None, None, None])
    f = order_flags(labelled)
    assert f["first_time_fix_rate_num"].sum() == 0 and f["first_time_fix_rate_den"].sum() == 2
    # where inspected, it must also have passed: order 3 failed its inspection, order 2 passed
    ids = typed(rows)["order_id"].astype(str).tolist()
    failed = pd.Series({ids[1]: False, ids[2]: True, "not-an-order": True})
    f = order_flags(typed(rows), inspection_failed=failed)
    assert f["first_time_fix_rate_num"].tolist() == [0, 1, 0, 0, 0, 0]
    assert f["first_time_fix_rate_den"].tolist() == [1, 1, 1, 0, 0, 0]


def test_satisfaction_counts_only_rated_orders():
    rows = [order(i, 0, rating=r) for i, r in enumerate(["5", "4", "3", "1", "", ""])]
    assert fractions(rows)["satisfaction_rate"] == (2, 4)


def test_period_is_assigned_by_reported_at_in_local_time_and_change_vs_previous():
    rows = [
        # reported 31 Jan 23:00 local, completed in February: a January order
        order(1, 30, reported_at=at(30, 23), dispatch_h=None, arrive_h=None, complete_h=None)
        | dict(dispatched_at=at(31, 0), arrived_at=at(31, 1), completed_at=at(31, 2)),
        order(2, 31, rating="2"),  # 1 Feb
        order(3, 32, arrive_h=30, complete_h=31, rating="5"),  # 2 Feb, late arrival
    ]  # the data end on 2 Feb: the February rework windows are still open
    orders = typed(rows)
    flags = order_flags(orders)
    start = pd.Timestamp("2024-02-01", tz=TIMEZONE)
    end = pd.Timestamp("2024-03-02", tz=TIMEZONE)  # 30 days: previous = 2 Jan .. 1 Feb
    rep = kpi_report(flags, orders["status"], start, end)
    assert rep["counts"]["current"]["orders"] == 2
    assert rep["counts"]["previous"]["orders"] == 1
    assert rep["previous_period"]["from"].startswith("2024-01-02")
    k = rep["kpis"]["overall"]
    assert k["response_timeliness"] == 0.5
    assert k["satisfaction_rate"] == 0.5
    assert rep["previous"]["overall"]["response_timeliness"] == 1.0
    assert rep["changes"]["overall"]["response_timeliness"] == -0.5
    assert rep["fractions"]["overall"]["response_timeliness"] == {
        "numerator": 1,
        "denominator": 2,
    }
    assert list(rep["kpis"]["by_month"]) == ["2024-02"]
    assert list(rep["trend"]) == ["2024-01", "2024-02"]
    assert rep["trend"]["2024-02"]["orders"] == 2
    # windows still open in February: no first-time-fix value, never 0 or 1
    assert k["first_time_fix_rate"] is None
    assert rep["changes"]["overall"]["first_time_fix_rate"] is None


def test_groups_by_community_team_and_technician():
    rows = [
        order(1, 0, community_id="C01", technician_id="T01"),
        order(2, 0, community_id="C02", technician_id="T02", arrive_h=30, complete_h=31),
        order(3, 0, community_id="C02", technician_id="", status="open", rating="")
        | dict(dispatched_at="", arrived_at="", completed_at=""),
        late_anchor(),
    ]
    orders = typed(rows)
    techs = pd.DataFrame({"technician_id": ["T01", "T02"], "team": ["甲组", "乙组"]})
    flags = order_flags(orders, technicians=techs)
    rep = kpi_report(
        flags,
        orders["status"],
        pd.Timestamp("2024-01-01", tz=TIMEZONE),
        pd.Timestamp("2024-01-02", tz=TIMEZONE),
    )
    by = rep["kpis"]["by_community"]
    assert by["C01"]["response_timeliness"] == 1.0
    assert by["C02"]["response_timeliness"] == 0.0  # one late, one never arrived
    assert by["C02"]["completion_rate"] == 0.5  # the open order is not completed
    assert set(rep["kpis"]["by_team"]) == {"甲组", "乙组", "(none)"}
    assert set(rep["kpis"]["by_technician"]) == {"T01", "T02", "(none)"}
    assert rep["kpis"]["by_team"]["(none)"]["satisfaction_rate"] is None
    only = kpi_report(
        flags,
        orders["status"],
        pd.Timestamp("2024-01-01", tz=TIMEZONE),
        pd.Timestamp("2024-01-02", tz=TIMEZONE),
        community="C01",
    )
    assert only["counts"]["current"]["orders"] == 1


def test_params_and_period_parsing(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("kpi:\n  arrival_sla_hours: {normal: 12, urgent: 2, emergency: 0.5}\n")
    assert kpi_config(p).arrival_sla_hours["normal"] == 12.0
    assert kpi_config(p).dispatch_sla_hours == KpiConfig().dispatch_sla_hours
    p.write_text("kpi:\n  arival_sla_hours: {}\n")
    with pytest.raises(ValueError, match="unknown"):
        kpi_config(p)
    t0, t1 = period("2024-02-01", "2024-02-29")
    assert (t1 - t0).days == 29 and str(t0.tz) == TIMEZONE
    with pytest.raises(ValueError):
        period("2024-02-02", "2024-02-01")


def test_report_cli_writes_json_and_html(tmp_path):
    rows = [order(i, i % 40, community_id=f"C0{i % 2 + 1}") for i in range(1, 60)]
    rows.append(order(999, 3, priority="whenever"))  # quarantined: counted, never used
    orders_frame(rows).to_csv(tmp_path / "orders.csv", index=False)
    out_json, out_html = tmp_path / "r" / "report.json", tmp_path / "r" / "report.html"
    r = CliRunner().invoke(
        app,
        [
            "report",
            "--from",
            "2024-02-01",
            "--to",
            "2024-02-09",
            "--orders",
            str(tmp_path / "orders.csv"),
            "--out",
            str(out_json),
            "--out",
            str(out_html),
        ],
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(out_json.read_text(encoding="utf-8"))
    assert set(rep["kpis"]["overall"]) == set(KPI_NAMES)
    assert set(rep["kpis"]["by_community"]) == {"C01", "C02"}
    assert set(rep["kpis"]["by_community"]["C01"]) == set(KPI_NAMES)
    assert rep["kpis"]["overall"]["completion_rate"] == 1.0
    assert rep["counts"]["quarantined"]["orders"] == 1
    assert rep["counts"]["current"]["orders"] == 9
    for key in ("period", "previous_period", "changes", "counts"):
        assert key in rep
    for g in ("by_category", "by_team", "by_technician", "by_month"):
        assert g in rep["kpis"]
    page = out_html.read_text(encoding="utf-8")
    assert "报修及时率" in page and "一次维修合格率" in page and "C02" in page
    assert "<svg" in page  # monthly trend charts, inline
    assert "http://" not in page and "https://" not in page and "<script" not in page
    # without a model the model-based sections say so, with no invented numbers
    assert rep["estimates"]["available"] is False and "模型" in rep["estimates"]["note"]
    assert rep["technicians"]["available"] is False
    assert rep["hotspots"]["available"] is True  # needs no model
    assert any("无可用模型" in n for n in rep["notes"])
    assert not (tmp_path / "no-registry.db").exists()  # reading never creates a registry

    r = CliRunner().invoke(
        app,
        [
            "report",
            "--from",
            "2024-02-01",
            "--to",
            "2024-02-09",
            "--orders",
            str(tmp_path / "orders.csv"),
            "--out",
            str(tmp_path / "r.txt"),
        ],
    )
    assert r.exit_code == 2 and ".json or .html" in r.output


def test_report_without_files_reads_the_service_store(tmp_path, monkeypatch):
    from models.schemas import ORDERS, TECHNICIANS
    from serving.store import tables as T
    from serving.store.db import Store, content_hash, frame_rows, make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("REPAIRQC_DATABASE_URL", url)
    out = tmp_path / "report.json"
    args = ["report", "--from", "2024-01-01", "--to", "2024-01-31", "--out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "does not exist" in r.output and "--orders" in r.output
    assert not (tmp_path / "store.db").exists()  # reading never creates a store

    engine = make_engine(url)
    upgrade(engine)
    store = Store(engine)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "holds no orders" in r.output

    orders = typed([order(1, 0, technician_id="T01"), order(2, 1, arrive_h=30, rating="2")])
    rows = frame_rows(orders, ORDERS)
    store.upsert_orders(rows, [content_hash(x) for x in rows])
    techs = pd.DataFrame({"technician_id": ["T01"], "team": ["甲组"]})
    for c in TECHNICIANS.names:
        if c not in techs:
            techs[c] = None
    store.upsert_side(T.technicians, TECHNICIANS, frame_rows(techs, TECHNICIANS))
    engine.dispose()
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text(encoding="utf-8"))
    assert rep["counts"]["current"]["orders"] == 2
    assert rep["kpis"]["overall"]["response_timeliness"] == 0.5
    assert rep["kpis"]["overall"]["satisfaction_rate"] == 0.5
    assert "甲组" in rep["kpis"]["by_team"]
    assert rep["source"]["store"].endswith("store.db")
