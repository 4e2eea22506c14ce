"""``GET /v1/reports/improvement`` (JSON) and ``.html``: auth, 422s naming the field, and the
same JSON as ``repairqc report`` over the same store."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from models.kpis import KPI_NAMES
from pipelines.cli import app as cli
from serving.main import create_app
from serving.store.db import Store, make_engine
from tests.serving_fixtures import auth, payload, served_settings

#: The module trains a tiny model and scores ~3,800 orders through the API (~10 s of setup).
pytestmark = pytest.mark.slow

PERIOD = {"from": "2025-01-01", "to": "2025-01-31"}
SECTIONS = (
    "estimates",
    "technicians",
    "drivers",
    "comments",
    "hotspots",
    "emergency",
    "model_health",
    "rectification",
    "recommendations",
)


@pytest.fixture(scope="module")
def service(tmp_path_factory, module_database_url):
    """The service on each store backend (SQLite; PostgreSQL with a test server)."""
    tmp = tmp_path_factory.mktemp("report_api")
    settings, url, done = served_settings(tmp, database_url=module_database_url)
    with TestClient(create_app(settings)) as client:
        store = Store(make_engine(url))
        keys = {role: store.create_key(role)[1] for role in ("system", "quality", "admin")}
        r = client.post("/v1/score", json={"orders": payload(done)}, headers=auth(keys["system"]))
        assert r.status_code == 200, r.text[:500]
        yield client, keys, url, settings.model_dir


def test_auth_401_and_403(service):
    client, keys, _, _ = service
    for path in ("/v1/reports/improvement", "/v1/reports/improvement.html"):
        assert client.get(path, params=PERIOD).status_code == 401
        r = client.get(path, params=PERIOD, headers=auth("rqc_unknown"))
        assert r.status_code == 401
        assert client.get(path, params=PERIOD, headers=auth(keys["system"])).status_code == 403


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2025-13-01", "to": "2025-01-31"}, "from"),
        ({"from": "2025-01-01", "to": "31/01/2025"}, "to"),
        ({"from": "2025-01-31", "to": "2025-01-01"}, "to"),
        ({"to": "2025-01-31"}, "from"),
        ({**PERIOD, "community": "NOPE"}, "community"),
    ],
)
def test_422_names_the_field(service, params, field):
    client, keys, _, _ = service
    r = client.get("/v1/reports/improvement", params=params, headers=auth(keys["quality"]))
    assert r.status_code == 422, r.text
    assert any(d["loc"][-1] == field for d in r.json()["detail"]), r.json()


def test_json_report_is_the_cli_report_over_the_same_store(service, monkeypatch, tmp_path):
    client, keys, url, served = service
    r = client.get("/v1/reports/improvement", params=PERIOD, headers=auth(keys["quality"]))
    assert r.status_code == 200, r.text[:500]
    rep = r.json()
    assert set(rep["kpis"]["overall"]) == set(KPI_NAMES)
    assert rep["kpis"]["by_community"]
    for c, v in rep["kpis"]["by_community"].items():
        assert set(v) == set(KPI_NAMES), c
    for s in SECTIONS:
        assert s in rep, s
    est = rep["estimates"]
    assert est["available"] and est["source"] == "store"
    assert set(est["outcomes"]["rework"]) >= {"overall", "by_community", "by_category", "by_month"}
    assert est["outcomes"]["rework"]["overall"]["hajek"]["rate"] is not None
    assert rep["technicians"]["available"] and rep["technicians"]["technicians"]
    assert rep["drivers"]["rework_risk"]  # the served model's contributions
    assert rep["model_health"]["drift"]["available"]
    # the admin may read it too
    r2 = client.get("/v1/reports/improvement", params=PERIOD, headers=auth(keys["admin"]))
    assert r2.status_code == 200
    # community filter
    c = sorted(rep["kpis"]["by_community"])[0]
    rc = client.get(
        "/v1/reports/improvement",
        params={**PERIOD, "community": c},
        headers=auth(keys["quality"]),
    ).json()
    assert rc["community"] == c and set(rc["kpis"]["by_community"]) == {c}

    # the CLI over the same store and model writes the same report
    monkeypatch.setenv("REPAIRQC_DATABASE_URL", url)
    out = tmp_path / "report.json"
    res = CliRunner().invoke(
        cli,
        [
            "report",
            "--from",
            PERIOD["from"],
            "--to",
            PERIOD["to"],
            "--model-dir",
            str(served),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    from_cli = json.loads(out.read_text(encoding="utf-8"))
    for k in ("kpis", *SECTIONS):
        assert from_cli[k] == rep[k], k


def test_html_page_has_every_section(service):
    client, keys, _, _ = service
    r = client.get("/v1/reports/improvement.html", params=PERIOD, headers=auth(keys["quality"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for title in (
        "五项指标",
        "建议整改事项",
        "第三方抽检的无偏质量估计",
        "维修服务质量档案",
        "漏斗图",
        "主要风险驱动因素",
        "业主差评主题",
        "返修热点",
        "夜间/节假日特急工单表现",
        "模型健康",
        "整改与申诉",
    ):
        assert title in page, title
    assert "<svg" in page and "<script" not in page and "http://" not in page
