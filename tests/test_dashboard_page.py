"""The dashboard's own routes without a browser: the page, its assets, its labels.

The page itself is tested end to end in ``test_dashboard_browser.py`` (headless chromium); these
run everywhere, in milliseconds, and need no model (the routes hold no data).
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from models.kpis import KPI_NAMES, KPI_ZH
from models.schemas import CATEGORY_ZH, PRIORITY_ZH
from serving.config import Settings
from serving.main import create_app
from serving.routes.dashboard import DASHBOARD_DIR


@pytest.fixture(scope="module")
def client():
    # no lifespan (no model needed): the dashboard routes never touch the service state
    return TestClient(create_app(Settings(dev_mode=True)))


def test_page_needs_no_key_and_loads_nothing_from_elsewhere(client):
    r = client.get("/dashboard")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    # every script and stylesheet is one of ours; no CDN, no web font, no inline script
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", r.text)
    assert re.findall(r"<script[^>]*>", r.text) == [
        '<script src="/dashboard/assets/dashboard.js" defer>'
    ]
    for view in ("今日质检队列", "KPI 看板", "改进报告"):
        assert view in r.text


@pytest.mark.parametrize(
    ("name", "kind"), [("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")]
)
def test_assets(client, name, kind):
    r = client.get(f"/dashboard/assets/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(kind)
    assert r.content == (DASHBOARD_DIR / name).read_bytes()


@pytest.mark.parametrize(
    "name", ["index.html", "..%2F..%2Fconfig.py", "%2Fetc%2Fpasswd", "nope.js", "dashboard.JS"]
)
def test_only_the_listed_assets_are_served(client, name):
    assert client.get(f"/dashboard/assets/{name}").status_code == 404


def test_meta_labels_come_from_the_models(client):
    meta = client.get("/dashboard/meta").json()
    assert [k["key"] for k in meta["kpis"]] == list(KPI_NAMES)
    assert [k["name_zh"] for k in meta["kpis"]] == [KPI_ZH[k] for k in KPI_NAMES]
    assert all(k["definition_zh"] for k in meta["kpis"])
    assert meta["categories"] == CATEGORY_ZH
    assert meta["priorities"] == PRIORITY_ZH
    assert set(meta["statuses"]) == {"open", "assigned", "done", "overdue"}
    assert meta["timezone"] == "Asia/Shanghai"


def test_dashboard_is_not_in_the_api_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/dashboard")]
