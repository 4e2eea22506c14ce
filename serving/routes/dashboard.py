"""The quality team's dashboard (质检看板): one static page plus its assets, and its labels.

Why static and keyless: the page holds no data. It asks the user for an API key (role
``quality`` or ``admin``) and calls the ``/v1`` routes itself with ``Authorization: Bearer``,
so every number it shows went through the same role checks as any other client. No build step,
no CDN, no external fonts or scripts: it works offline, on the property's intranet.

The Chinese labels it shows (KPI, category, priority names) come from ``/dashboard/meta``,
built from ``models`` so that the page never keeps its own copy of a definition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, HTMLResponse

from models.kpis import KPI_DEFINITIONS_ZH, KPI_NAMES, KPI_ZH
from models.schemas import CATEGORY_ZH, PRIORITY_ZH, TIMEZONE

router = APIRouter(include_in_schema=False)

#: Directory of the page and its assets (shipped as package data).
DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
#: Media types of the assets that may be served; nothing else in the directory is.
_MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
#: The page runs only its own script and talks only to its own origin. Inline styles are
#: allowed because the embedded improvement report (a self-contained HTML page shown in a
#: sandboxed frame) carries its own; inline scripts are not.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; frame-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

#: Chinese names of the inspection-queue statuses and of the sources of an inspection reason.
STATUS_ZH = {"open": "待质检", "assigned": "已指派", "done": "已完成", "overdue": "已逾期"}
SOURCE_ZH = {"rule": "规则", "model": "模型", "sample": "抽检", "sampling": "抽检"}


def _assets() -> dict[str, Path]:
    """The servable assets by file name (a fixed list: no path from the URL reaches the disk)."""
    return {p.name: p for p in DASHBOARD_DIR.iterdir() if p.suffix in _MEDIA and p.is_file()}


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    """The page itself (no data in it, so no key is needed to load it)."""
    page = (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers=_HEADERS)


@router.get("/dashboard/assets/{name}")
def asset(name: str) -> FileResponse:
    """A script or stylesheet of the page."""
    path = _assets().get(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dashboard asset {name!r}")
    return FileResponse(path, media_type=_MEDIA[path.suffix], headers=_HEADERS)


@router.get("/dashboard/meta")
def meta() -> dict[str, Any]:
    """Labels the page shows, from the one definition of each in ``models``."""
    return {
        "kpis": [
            {"key": k, "name_zh": KPI_ZH[k], "definition_zh": KPI_DEFINITIONS_ZH[k]}
            for k in KPI_NAMES
        ],
        "categories": CATEGORY_ZH,
        "priorities": PRIORITY_ZH,
        "statuses": STATUS_ZH,
        "reason_sources": SOURCE_ZH,
        "timezone": TIMEZONE,
    }
