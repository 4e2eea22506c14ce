"""Improvement report (改进报告): the five KPIs and the quality-loop sections.

``repairqc report --from D --to D [--community C] [--orders F --technicians F --units F]
--out report.json|report.html``. Contract files are validated with ``models.validation`` first;
quarantined rows are counted in the report (``counts.quarantined``) and never used. Without
files the orders and technicians come from the scoring service's audit store
(``REPAIRQC_DATABASE_URL``; orders there were validated by the API on the way in); a missing or
empty store is a clear error.

The KPI definitions live in ``models.kpis``; the other sections (unbiased estimates, technician
dossiers, drivers, comment themes, hotspots, emergencies, model health, rectification and
appeals, recommendations) in ``pipelines.report_sections`` over ``pipelines.report_data``'s
inputs, rendered by ``pipelines.report_html``. This module reads files and params, assembles,
and writes JSON or a self-contained Chinese HTML page. The API (``serving.routes.reports``)
calls :func:`build_report` with its own store and model, so both give the same JSON.
"""

from __future__ import annotations

import html
import json
import logging
import math
from dataclasses import fields
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from models.kpis import GROUPS, KPI_NAMES, KPI_ZH, KpiConfig, kpi_report, order_flags
from models.schemas import CATEGORY_ZH, TECHNICIANS, TIMEZONE, UNITS
from models.validation import validate_orders, validate_table
from pipelines import report_sections as RS
from pipelines.io import read_raw_table
from pipelines.label import label_config
from pipelines.params import section
from pipelines.report_data import ReportInputs, contract_inputs, contract_overrides, store_inputs
from pipelines.report_html import sections_html
from pipelines.report_sections import SectionConfig, period_frame

log = logging.getLogger(__name__)

#: Why the completion rate is not reported from the service's store (JSON and HTML).
STORE_COMPLETION_NOTE = (
    "服务的存储只保存已完工（已评分）的工单，完成率恒为 100%，没有意义；请用合同文件"
    "（--orders）计算维修完成率。The store holds completed orders only; use contract files."
)


class SourceUnavailableError(RuntimeError):
    """No contract files were given and the service's store has no orders to report on."""


def open_store() -> tuple[Any, str]:
    """The scoring service's audit store (``REPAIRQC_DATABASE_URL``), opened read only.

    Returns the :class:`serving.store.db.Store` and its URL without the password; the caller
    disposes ``store.engine``. A missing or empty store is a clear error (and reading never
    creates one).
    """
    import sqlalchemy as sa

    from pipelines.serve import _settings
    from serving.store.db import Store, make_engine

    url = _settings(dev_mode=True).database_url
    shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    hint = "; pass the contract files with --orders (and --technicians, --units)"
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if not path or path == ":memory:" or not Path(path).exists():
            raise SourceUnavailableError(f"the service's store {shown} does not exist{hint}")
    engine = make_engine(url)
    try:
        if not sa.inspect(engine).has_table("orders"):
            raise SourceUnavailableError(f"the service's store {shown} has no orders table{hint}")
        store = Store(engine)
        if store.order_count() == 0:
            raise SourceUnavailableError(f"the service's store {shown} holds no orders{hint}")
    except BaseException:
        engine.dispose()
        raise
    return store, shown


def kpi_config(params_path: str | Path) -> KpiConfig:
    """Build the KPI configuration from ``params.yaml: kpi`` (unknown keys are an error)."""
    block = section(params_path, "kpi")
    known = {f.name for f in fields(KpiConfig)}
    unknown = sorted(set(block) - known)
    if unknown:
        raise ValueError(f"params.yaml kpi: unknown key(s) {unknown}; known: {sorted(known)}")
    kw: dict[str, Any] = {}
    for k, v in block.items():
        if k.endswith("_sla_hours"):
            kw[k] = {str(p): float(h) for p, h in dict(v).items()}
        else:
            kw[k] = v
    return KpiConfig(**kw)


def parse_day(text: str, option: str) -> pd.Timestamp:
    """A ``YYYY-MM-DD`` date as local midnight (Asia/Shanghai)."""
    try:
        d = date.fromisoformat(str(text).strip())
    except ValueError as e:
        raise ValueError(f"{option} must be a date YYYY-MM-DD, got {text!r}") from e
    return pd.Timestamp(d).tz_localize(TIMEZONE)


def period(start: str, end: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``--from``/``--to`` (inclusive dates) as the half-open interval ``[from, to + 1 day)``."""
    t0 = parse_day(start, "--from")
    t1 = parse_day(end, "--to") + pd.Timedelta(days=1)
    if t1 <= t0:
        raise ValueError("--to must not be before --from")
    return t0, t1


def load_contract(
    orders: Path,
    technicians: Path | None = None,
    units: Path | None = None,
    encoding: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None, dict[str, int]]:
    """Validate the contract files; return valid orders, technicians, units, quarantine counts."""
    quarantined: dict[str, int] = {}
    techs = unit_tab = None
    if technicians is not None:
        raw, bad = read_raw_table(technicians, encoding)
        res = validate_table(raw, TECHNICIANS, bad_rows=bad)
        techs = res.valid
        quarantined["technicians"] = int(res.stats["quarantined_rows"])
    if units is not None:
        raw, bad = read_raw_table(units, encoding)
        res = validate_table(raw, UNITS, bad_rows=bad)
        unit_tab = res.valid
        quarantined["units"] = int(res.stats["quarantined_rows"])
    raw, bad = read_raw_table(orders, encoding)
    res = validate_orders(raw, techs, bad_rows=bad)
    quarantined["orders"] = int(res.stats["quarantined_rows"])
    for table, n in quarantined.items():
        if n:
            log.warning("%s: %d rows quarantined by validation, not used in the report", table, n)
    return res.valid, techs, unit_tab, quarantined


def section_config(params_path: str | Path) -> SectionConfig:
    """The sections' knobs from ``params.yaml: report`` (unknown keys are an error)."""
    return SectionConfig.from_dict(section(params_path, "report"))


def build_report(
    start: str,
    end: str,
    *,
    orders: Path | None = None,
    technicians: Path | None = None,
    units: Path | None = None,
    community: str | None = None,
    params_path: str | Path = "params.yaml",
    encoding: str | None = None,
    model_dir: Path | None = None,
    store: Any = None,
    model: Any = None,
    history: Any = None,
) -> dict[str, Any]:
    """The report as a JSON-ready dict: the KPIs (``models.kpis``) and the sections.

    Sources: contract files when ``orders`` is given (scores from ``model_dir`` or the
    registry's champion); else ``store`` (the API passes its own, with its ``model`` and
    ``history``); else the store of ``REPAIRQC_DATABASE_URL``, read only.
    """
    t0, t1 = period(start, end)
    config = kpi_config(params_path)
    scfg = section_config(params_path)
    lcfg = label_config(params_path)
    store_url = None
    score_from = t1 - pd.DateOffset(months=max(scfg.dossier_months, scfg.estimate_months))
    overrides_path = None
    unavailable: dict[str, str] = {}
    if orders is not None:
        valid, techs, unit_tab, quarantined = load_contract(orders, technicians, units, encoding)
        overrides, overrides_path = contract_overrides(orders)
        inp = contract_inputs(
            valid,
            techs,
            unit_tab,
            t0,
            t1,
            label_config=lcfg,
            model_dir=model_dir,
            reference_months=scfg.reference_months,
            score_from=score_from,
            overrides=overrides,
        )
    else:
        opened = store is None
        if opened:
            store, store_url = open_store()
        else:
            store_url = store.engine.url.render_as_string(hide_password=True)
        try:
            inp = store_inputs(
                store,
                t0,
                t1,
                label_config=lcfg,
                reference_months=scfg.reference_months,
                model=model,
                history=history,
                model_dir=model_dir,
                score_from=score_from,
            )
        finally:
            if opened:
                store.engine.dispose()
        if not len(inp.orders):
            raise SourceUnavailableError(f"the service's store {store_url} holds no orders")
        valid, techs, quarantined = inp.orders, inp.technicians, {}
        unavailable["completion_rate"] = STORE_COMPLETION_NOTE
    if community is not None and community not in set(valid["community_id"].astype(str)):
        raise ValueError(f"--community {community!r}: no valid order of that community")
    # first-time fix reads the rework label with the upheld appeals' overrides (inp.labels)
    flags = order_flags(
        valid.assign(rework=inp.labels["rework"].to_numpy()),
        config,
        lcfg,
        techs,
        inspection_failed=RS.inspection_failed(inp.inspections),
    )
    report = kpi_report(
        flags, valid["status"], t0, t1, community=community, unavailable=unavailable
    )
    report["counts"]["quarantined"] = quarantined
    report["source"] = {
        "kind": inp.source,
        "orders": str(orders) if orders is not None else None,
        "store": store_url,
        "technicians": None if technicians is None else str(technicians),
        "units": None if units is None else str(units),
        "data_end": valid["reported_at"].max().isoformat() if len(valid) else None,
        "label_overrides": None if overrides_path is None else str(overrides_path),
    }
    lab = inp.labels
    report["counts"]["labels_overridden"] = {
        "rework": int(lab["rework_overridden"].sum()) if "rework_overridden" in lab else 0,
        "dissatisfied": int(lab["dissatisfied_overridden"].sum())
        if "dissatisfied_overridden" in lab
        else 0,
        "unmatched": int(lab.attrs.get("overrides_unmatched", 0)),
    }
    report.update(build_sections(inp, flags, t0, t1, community, scfg, lcfg, params_path))
    return report


def build_sections(
    inp: ReportInputs,
    flags: pd.DataFrame,
    t0: pd.Timestamp,
    t1: pd.Timestamp,
    community: str | None,
    scfg: SectionConfig,
    lcfg: Any,
    params_path: str | Path,
) -> dict[str, Any]:
    """Every section beyond the KPIs (see ``pipelines.report_sections``)."""
    from pipelines.features import feature_config

    fcfg = feature_config(params_path)
    cur = period_frame(inp, t0, t1, community)
    both = period_frame(inp, t0 - (t1 - t0), t1, community)
    d0 = min(t0, t1 - pd.DateOffset(months=scfg.dossier_months))
    dossier = period_frame(inp, d0, t1, community)
    e0 = min(t0, t1 - pd.DateOffset(months=scfg.estimate_months))
    sec: dict[str, Any] = {
        "estimates": {
            **RS.estimates_section(period_frame(inp, e0, t1, community), inp, t0),
            "window": {"from": e0.isoformat(), "to": t1.isoformat()},
        },
        "technicians": {
            **RS.dossiers_section(dossier, inp, scfg.dossiers),
            "window": {"from": d0.isoformat(), "to": t1.isoformat()},
        },
        "drivers": RS.drivers_section(cur, inp, scfg.top_drivers),
        "comments": RS.comments_section(cur, scfg.top_themes),
        "hotspots": RS.hotspots_section(inp, t0, t1, community, lcfg.rework_window_days, scfg),
        "emergency": RS.emergency_section(
            inp, flags, t0, t1, community, fcfg.night_start_hour, fcfg.night_end_hour
        ),
        "model_health": RS.model_health_section(both, inp, t0, scfg),
        "rectification": RS.rectification_section(
            inp, pd.Timestamp.now(tz=TIMEZONE), scfg.rectification_effect_days
        ),
    }
    sec["recommendations"] = RS.recommendations(sec)
    sec["notes"] = list(inp.notes)
    return sec


# --------------------------------------------------------------------------- HTML

_GROUP_ZH = {
    "community": "按项目/小区",
    "category": "按报修分类",
    "team": "按班组",
    "technician": "按维修人员",
    "month": "按月份",
}
_CSS = """
body{font-family:"PingFang SC","Microsoft YaHei","Noto Sans CJK SC",sans-serif;margin:2em;
color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}h3{font-size:1.05em}
table{border-collapse:collapse;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.up{color:#1a7f37}.down{color:#c62828}.muted{color:#888}
td.bar{background-repeat:no-repeat}
"""


def _pct(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def _delta(v: float | None) -> str:
    if v is None:
        return '<span class="muted">—</span>'
    cls = "up" if v > 0 else "down" if v < 0 else "muted"
    return f'<span class="{cls}">{v * 100:+.1f} 个百分点</span>'


def _bar_cell(v: float | None) -> str:
    if v is None:
        return '<td class="muted">—</td>'
    w = max(0.0, min(1.0, v)) * 100
    style = f"background-image:linear-gradient(to right,#cfe3f7 {w:.1f}%,transparent {w:.1f}%)"
    return f'<td class="bar" style="{style}">{_pct(v)}</td>'


def _group_label(group: str, key: str) -> str:
    if group == "category":
        return f"{CATEGORY_ZH.get(key, key)} ({key})"
    return key


def _trend_svg(points: list[tuple[str, float | None]]) -> str:
    """An inline SVG line chart of one KPI's monthly values (no external assets)."""
    w, h, pad = 360, 150, 30
    vals = [v for _, v in points if v is not None]
    if not vals:
        return '<p class="muted">无数据</p>'
    lo = max(0.0, math.floor(min(vals) * 10) / 10 - 0.05)
    hi = 1.0
    n = len(points)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad + (w - 2 * pad) * (i / (n - 1) if n > 1 else 0.5)
        y = h - pad - (h - 2 * pad) * (v - lo) / (hi - lo)
        return x, y

    coords = [(xy(i, v), v, m) for i, (m, v) in enumerate(points) if v is not None]
    line = " ".join(f"{x:.1f},{y:.1f}" for (x, y), _, _ in coords)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#1f6feb"><title>{html.escape(m)}: '
        f"{_pct(v)}</title></circle>"
        for (x, y), v, m in coords
    )
    axis = (
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>'
        f'<text x="2" y="{pad + 4}" font-size="10">{_pct(hi)}</text>'
        f'<text x="2" y="{h - pad + 4}" font-size="10">{_pct(lo)}</text>'
        f'<text x="{pad}" y="{h - 8}" font-size="10">{html.escape(points[0][0])}</text>'
        f'<text x="{w - pad}" y="{h - 8}" font-size="10" text-anchor="end">'
        f"{html.escape(points[-1][0])}</text>"
    )
    return (
        f'<svg width="{w}" height="{h}" role="img">'
        f'{axis}<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{line}"/>'
        f"{dots}</svg>"
    )


def render_html(report: dict[str, Any]) -> str:
    """A self-contained Chinese page (no external assets) with the KPI tables."""
    e = html.escape
    kp, fr = report["kpis"], report["fractions"]
    prev, ch = report["previous"], report["changes"]
    p, pp = report["period"], report["previous_period"]
    title = "维修服务质量改进报告"
    if report.get("community"):
        title += f" — {report['community']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>统计期间（按报修时间）：{e(p['from'][:10])} 至 {e(_last_day(p['to']))}；"
        f"对比上期：{e(pp['from'][:10])} 至 {e(_last_day(pp['to']))}。</p>",
    ]
    c = report["counts"]["current"]
    q = report["counts"].get("quarantined", {})
    parts.append(
        f"<p>本期工单 {c['orders']} 单（取消 {c['cancelled']}，完工 {c['completed']}，"
        f"有评价 {c['rated']}，返修观察期已结束 {c['rework_window_closed']}）。"
        f"校验隔离未使用的行：" + "，".join(f"{e(t)} {n}" for t, n in q.items()) + "。</p>"
    )
    parts.append("<h2>五项指标</h2><table><tr><th class='l'>指标</th><th class='l'>定义</th>")
    parts.append("<th>本期</th><th>分子/分母</th><th>上期</th><th>变化</th></tr>")
    unavailable = report.get("unavailable") or {}
    for k in KPI_NAMES:
        f = fr["overall"][k]
        why = (
            f"<br><span class='muted unavailable'>{e(unavailable[k])}</span>"
            if k in unavailable
            else ""
        )
        parts.append(
            f"<tr><td class='l'>{e(KPI_ZH[k])}<br><span class='muted'>{e(k)}</span></td>"
            f"<td class='l'>{e(report['definitions'][k]['definition_zh'])}{why}</td>"
            f"{_bar_cell(kp['overall'][k])}<td>{f['numerator']}/{f['denominator']}</td>"
            f"<td>{_pct(prev['overall'][k])}</td><td>{_delta(ch['overall'][k])}</td></tr>"
        )
    parts.append("</table>")
    parts.append(
        "<p class='muted'>分母为 0 的组显示“—”。一次维修合格率只统计返修观察期已结束的完工单，"
        "近期工单的观察期尚未结束，不计入。</p>"
    )
    trend = report.get("trend") or {}
    if trend:
        parts.append("<h2>月度趋势</h2><div style='display:flex;flex-wrap:wrap;gap:1em'>")
        for k in KPI_NAMES:
            pts = [(m, v[k]) for m, v in trend.items()]
            parts.append(
                f"<figure><figcaption>{e(KPI_ZH[k])}</figcaption>{_trend_svg(pts)}</figure>"
            )
        parts.append("</div>")
    parts.append(sections_html(report))
    parts.append("<h2>附表：五项指标分组明细</h2>")
    for g in GROUPS:
        key = f"by_{g}"
        rows = kp.get(key, {})
        if not rows:
            continue
        parts.append(f"<h2>{e(_GROUP_ZH[g])}</h2><table><tr><th class='l'>{e(g)}</th>")
        parts.append("".join(f"<th>{e(KPI_ZH[k])}</th>" for k in KPI_NAMES))
        if key in ch:
            parts.append("".join(f"<th>{e(KPI_ZH[k])} 变化</th>" for k in KPI_NAMES))
        parts.append("<th>工单数</th></tr>")
        for gk, vals in rows.items():
            n = fr[key][gk]["completion_rate"]["denominator"]
            cells = "".join(_bar_cell(vals[k]) for k in KPI_NAMES)
            if key in ch:
                cells += "".join(f"<td>{_delta(ch[key][gk][k])}</td>" for k in KPI_NAMES)
            parts.append(f"<tr><td class='l'>{e(_group_label(g, gk))}</td>{cells}<td>{n}</td></tr>")
        parts.append("</table>")
    parts.append(f"<p class='muted'>数据截至 {e(str(report['source'].get('data_end') or '—'))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _last_day(exclusive_end_iso: str) -> str:
    return (pd.Timestamp(exclusive_end_iso) - pd.Timedelta(days=1)).strftime("%Y-%m-%d")


def write_report(report: dict[str, Any], out: Path) -> None:
    """Write ``report`` as JSON (``.json``) or HTML (``.html``/``.htm``) by the file's suffix."""
    suffix = out.suffix.lower()
    if suffix not in (".json", ".html", ".htm"):
        raise ValueError(f"--out must end in .json or .html, got {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        text = json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    else:
        text = render_html(report)
    out.write_text(text, encoding="utf-8")
