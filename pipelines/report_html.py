"""Chinese HTML of the report's sections beyond the KPIs (self-contained: inline SVG, no JS).

Each renderer takes the section's JSON dict (the same dict the JSON report and the API return)
so the page can never show a number the JSON does not have. A section that is not available in
the source prints its note.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

from models.schemas import CATEGORY_ZH

e = html.escape

_POSITION_COLOUR = {
    "above_998": "#c62828",
    "above_95": "#ef6c00",
    "within": "#1f6feb",
    "below_95": "#2e7d32",
    "below_998": "#1b5e20",
    "too_few": "#aaaaaa",
}
_OUTCOME_ZH = {"rework": "返修", "dissatisfaction": "不满意", "inspection_failure": "质检不合格"}


def _pct(v: Any, nd: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{nd}%}"


def _num(v: Any, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _ci(ci: list[float | None] | None) -> str:
    if not ci or ci[0] is None:
        return "—"
    return f"{_pct(ci[0])}–{_pct(ci[1])}"


def _na(sec: dict[str, Any] | None) -> str | None:
    if not sec:
        return '<p class="muted">本数据源无此项数据。</p>'
    if sec.get("available") is False:
        return f'<p class="muted">无数据：{e(str(sec.get("note", "")))}</p>'
    return None


def _table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    th = "".join(
        f"<th class='l'>{e(h)}</th>" if i < left else f"<th>{e(h)}</th>" for i, h in enumerate(head)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='l'>{c}</td>" if i < left else f"<td>{c}</td>" for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _cat(k: str) -> str:
    return f"{CATEGORY_ZH.get(k, k)} ({k})"


# --------------------------------------------------------------------------- sections


def recommendations_html(recs: list[dict[str, Any]]) -> str:
    """建议整改事项."""
    out = ["<h2 id='recommendations'>建议整改事项</h2>"]
    if not recs:
        out.append("<p class='muted'>本期未触发任何整改规则。</p>")
        return "\n".join(out)
    pr = {"high": "高", "medium": "中", "low": "低"}
    rows = [[e(pr[r["priority"]]), e(r["title_zh"]), e(r.get("owner_hint") or "")] for r in recs]
    out.append(_table(["优先级", "整改事项", "建议负责人"], rows, left=3))
    return "\n".join(out)


def estimates_html(sec: dict[str, Any]) -> str:
    """无偏质量估计 (HT / Hájek vs naive, with the truth when known)."""
    out = ["<h2 id='estimates'>第三方抽检的无偏质量估计</h2>"]
    na = _na(sec)
    if na:
        return "\n".join(out + [na])
    win = sec.get("window") or {}
    out.append(
        f"<p>估计窗口：{e(str(win.get('from', ''))[:10])} 至 "
        f"{e(str(win.get('to', ''))[:10])}（不含）"
        "——返修标签需等 30 天观察期结束，只看本期会几乎没有样本。"
        f"抽样总体 {sec['population_orders']} 单，第三方抽中 {sec['sampled_orders']} 单。"
        "抽样按风险加权（高风险单入样概率更高），所以样本的简单平均会高估问题率；"
        "按入样概率倒数加权的 Horvitz–Thompson / Hájek 估计是无偏的（置信区间 95%）。</p>"
    )
    for name, est in sec["outcomes"].items():
        zh = _OUTCOME_ZH.get(name, name)
        out.append(f"<h3>{e(zh)}率</h3>")
        na = _na(est)
        if na:
            out.append(na)
            continue
        # labels (rework, dissatisfaction) are known for every order: their population rate
        # is printed beside the estimates; inspection results exist only for inspected orders
        has_truth = est["overall"].get("population_rate") is not None
        head = [
            "范围",
            "有结果的样本",
            "样本简单平均",
            "HT 估计",
            "HT 95%区间",
            "Hájek 估计",
            "Hájek 95%区间",
        ]
        if has_truth:
            head.append("全部工单（标签）")
        rows = []

        def row(label: str, d: dict[str, Any], has_truth: bool = has_truth) -> list[str]:
            r = [
                e(label),
                str(d["observed"]),
                _pct(d["naive"]["rate"]),
                _pct(d["horvitz_thompson"]["rate"]),
                _ci(d["horvitz_thompson"]["ci"]),
                _pct(d["hajek"]["rate"]),
                _ci(d["hajek"]["ci"]),
            ]
            if has_truth:
                r.append(_pct(d["population_rate"]))
            return r

        if "period" in est:
            rows.append(row("本期", est["period"]))
        rows.append(row("窗口全部", est["overall"]))
        empty = 0
        for g, zhg in (("by_month", "月份"), ("by_community", "小区"), ("by_category", "类别")):
            for k, d in est.get(g, {}).items():
                if not d["observed"]:
                    empty += 1
                    continue
                rows.append(row(f"{zhg}：{_cat(k) if g == 'by_category' else k}", d))
        out.append(_table(head, rows))
        if empty:
            out.append(f"<p class='muted'>另有 {empty} 个范围没有抽中且有结果的样本，不列出。</p>")
    for n in sec.get("notes", []):
        out.append(f"<p class='muted'>{e(n)}</p>")
    return "\n".join(out)


def funnel_svg(fun: dict[str, Any], title: str) -> str:
    """Funnel plot: O/E against expected count (log x), 95 % and 99.8 % Poisson limits."""
    pts, cur = fun.get("points") or [], fun.get("curves") or {}
    if not pts or not cur:
        return '<p class="muted">无数据</p>'
    w, h, pad = 460, 300, 40
    xs = [x for x in cur["expected"] if x]
    x0, x1 = math.log(min(xs)), math.log(max(xs))
    ymax = max(
        [2.0]
        + [p["oe"] for p in pts if p["oe"] is not None]
        + [v for v in cur.get("hi95", []) if v is not None and v < 6]
    )
    ymax = min(ymax * 1.05, 6.0)

    def X(v: float) -> float:
        return pad + (w - 2 * pad) * (math.log(max(v, min(xs))) - x0) / max(x1 - x0, 1e-9)

    def Y(v: float) -> float:
        return h - pad - (h - 2 * pad) * min(max(v, 0.0), ymax) / ymax

    parts = [f'<svg width="{w}" height="{h}" role="img"><title>{e(title)}</title>']
    parts.append(f'<line x1="{pad}" y1="{Y(1):.1f}" x2="{w - pad}" y2="{Y(1):.1f}" stroke="#666"/>')
    for key, dash in (("lo95", "4,3"), ("hi95", "4,3"), ("lo998", ""), ("hi998", "")):
        line = " ".join(
            f"{X(x):.1f},{Y(v):.1f}"
            for x, v in zip(cur["expected"], cur[key], strict=True)
            if x and v is not None
        )
        parts.append(
            f'<polyline fill="none" stroke="#999" stroke-dasharray="{dash}" points="{line}"/>'
        )
    for p in pts:
        if p["oe"] is None:
            continue
        colour = _POSITION_COLOUR.get(p["position"], "#1f6feb")
        parts.append(
            f'<circle cx="{X(p["expected"]):.1f}" cy="{Y(p["oe"]):.1f}" r="3.5" fill="{colour}">'
            f"<title>{e(p['technician_id'])}: O/E {p['oe']:.2f}, 预期 {p['expected']:.1f}</title>"
            "</circle>"
        )
    parts.append(
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#999"/>'
        f'<text x="{w / 2:.0f}" y="{h - 8}" font-size="11" text-anchor="middle">'
        "预期事件数（对数刻度）</text>"
        f'<text x="4" y="{pad - 8}" font-size="11">实际/预期 (O/E)</text>'
        f'<text x="{pad - 4}" y="{Y(1) + 4:.1f}" font-size="10" text-anchor="end">1</text>'
        f'<text x="{pad - 4}" y="{Y(ymax) + 4:.1f}" font-size="10" text-anchor="end">'
        f"{ymax:.1f}</text>"
        f'<text x="{pad}" y="{h - pad + 14}" font-size="10">{min(xs):.1f}</text>'
        f'<text x="{w - pad}" y="{h - pad + 14}" font-size="10" text-anchor="end">'
        f"{max(xs):.0f}</text></svg>"
    )
    return "".join(parts)


def technicians_html(sec: dict[str, Any]) -> str:
    """维修服务质量档案: flags, funnel plots and the per-technician table."""
    out = ["<h2 id='technicians'>维修服务质量档案</h2>"]
    na = _na(sec)
    if na:
        return "\n".join(out + [na])
    from models.dossiers import FLAG_ZH

    win = sec.get("window") or {}
    out.append(
        f"<p>比较窗口：{e(str(win.get('from', ''))[:10])} 至 "
        f"{e(str(win.get('to', ''))[:10])}（不含）。"
        "预期数 = 每单模型概率之和（按实际承接的工单难度调整，难活不吃亏）；"
        "O/E 超出 95%（虚线）/99.8%（实线）控制限才视为信号；小样本做经验贝叶斯收缩。</p>"
    )
    s = sec.get("summary", {})
    out.append("<p>" + "，".join(f"{e(FLAG_ZH[k])} {v} 人" for k, v in s.items()) + "。</p>")
    out.append("<div style='display:flex;flex-wrap:wrap;gap:1em'>")
    for k, f in (sec.get("funnel") or {}).items():
        zh = _OUTCOME_ZH.get(k, k)
        out.append(f"<figure><figcaption>{e(zh)}漏斗图</figcaption>{funnel_svg(f, zh)}</figure>")
    out.append("</div>")
    order = {"needs_coaching": 0, "watch": 1, "excellent": 2, "as_expected": 3, "too_few": 4}
    techs = sorted(
        (sec.get("technicians") or {}).items(),
        key=lambda kv: (
            order.get(kv[1]["flag"], 9),
            -((kv[1].get("rework") or {}).get("shrunk_oe") or 0),
        ),
    )
    rows = []
    for tid, d in techs:
        rw, ds = d.get("rework") or {}, d.get("dissatisfaction") or {}
        ins = d.get("inspections") or {}
        ap = d.get("appeals")

        def ins_txt(kind: str, ins: dict[str, Any] = ins) -> str:
            k = ins.get(kind)
            return "—" if not k else f"{k['inspected']}/{k['failed']}"

        rows.append(
            [
                e(f"{d.get('name') or ''} {tid}".strip()),
                e(d.get("team") or "—"),
                str(d["orders"]),
                e("、".join(CATEGORY_ZH.get(c, c) for c in d["mix"]["top_categories"])),
                f"{rw.get('observed', '—')}/{_num(rw.get('expected'), 1)}",
                _num(rw.get("oe")),
                _num(rw.get("shrunk_oe")),
                f"{ds.get('observed', '—')}/{_num(ds.get('expected'), 1)}",
                _num(ds.get("oe")),
                _num(ds.get("shrunk_oe")),
                _pct(d["satisfaction"]["rate"]),
                str(d["complaints"]),
                ins_txt("internal"),
                ins_txt("third_party"),
                "—" if ap is None else str(ap.get("filed", 0)),
                "<div style='text-align:left'>"
                f"<b>{e(d['flag_zh'])}</b> {e('；'.join(d['flag_reasons']))}"
                + (f"<br><span class='muted'>{e(d['note_zh'])}</span>" if d.get("note_zh") else "")
                + "</div>",
            ]
        )
    out.append(
        _table(
            [
                "维修人员",
                "班组",
                "完工单",
                "主要类别",
                "返修 实际/预期",
                "返修 O/E",
                "返修 收缩O/E",
                "不满意 实际/预期",
                "不满意 O/E",
                "不满意 收缩O/E",
                "满意度",
                "投诉",
                "内检 次/不合格",
                "第三方 次/不合格",
                "申诉",
                "结论",
            ],
            rows,
            left=4,
        )
    )
    if not sec.get("inspections_available"):
        out.append("<p class='muted'>本数据源没有质检结果与申诉记录（合同文件不含这些）。</p>")
    return "\n".join(out)


def drivers_html(sec: dict[str, Any]) -> str:
    """风险驱动因素 (global contributions)."""
    out = ["<h2 id='drivers'>主要风险驱动因素</h2>"]
    na = _na(sec)
    if na:
        return "\n".join(out + [na])
    if "combined" in sec:
        rows = [
            [e(r["text"] or r["code"]), str(r["orders"]), _num(r["total_contribution"])]
            for r in sec["combined"]
        ]
        out.append(_table(["原因（记录的评分原因）", "出现单数", "贡献合计"], rows))
        return "\n".join(out)
    out.append(
        "<p>全局贡献 = 本期每单 TreeSHAP 贡献绝对值的平均（对数几率）；"
        "描述取推高风险的工单的典型值。</p>"
    )
    for col, zh in (("rework_risk", "返修风险"), ("dissatisfaction_prob", "不满意概率")):
        rows = [
            [
                e(r["text"]),
                e(r["feature"]),
                _num(r["mean_abs_contribution"], 3),
                _pct(r["share_raising"], 0),
            ]
            for r in sec.get(col, [])
        ]
        out.append(
            f"<h3>{zh}</h3>"
            + _table(["因素", "特征", "平均|贡献|", "推高风险的工单占比"], rows, left=2)
        )
    return "\n".join(out)


def comments_html(sec: dict[str, Any]) -> str:
    """业主差评主题与方面."""
    out = ["<h2 id='comments'>业主差评主题</h2>"]
    na = _na(sec)
    if na:
        return "\n".join(out + [na])
    out.append(
        f"<p>本期评价文字 {sec['comments']} 条，其中不满意 {sec['negative_comments']} 条。</p>"
    )
    rows = [
        [
            e(a["name_zh"]),
            str(a["mentions"]),
            str(a["complaints"]),
            _pct(a["share_of_negative_comments"]),
        ]
        for a in sec["aspects"].values()
    ]
    out.append(_table(["方面", "提及", "抱怨", "占不满意评价"], rows))
    rows = [
        [
            e(t["keyword"]),
            str(t["n_negative"]),
            _pct(t["share_of_negative"]),
            _num(t["z"]),
            e(t["aspect"] or "—"),
        ]
        for t in sec["themes"]
    ]
    out.append("<h3>差评关键词（相对好评的特异程度）</h3>")
    out.append(_table(["关键词", "差评条数", "占差评", "z 值", "方面"], rows))
    return "\n".join(out)


def hotspots_html(sec: dict[str, Any]) -> str:
    """返修热点与类别趋势."""
    out = ["<h2 id='hotspots'>返修热点</h2>"]
    na = _na(sec)
    if na:
        return "\n".join(out + [na])
    out.append(
        "<p>返修复报：同一房屋同类报修在上次完工后观察期内再次报修（或注明原工单）。"
        f"本期共 {sec['repeat_orders']} 单；"
        f"热点房屋 {sec['hotspot_units_total']} 户。</p>"
    )
    rows = [
        [
            e(u["unit_id"]),
            e(u["community_id"]),
            str(u["repeat_orders"]),
            str(u["orders"]),
            e("、".join(CATEGORY_ZH.get(c, c) for c in u["categories"])),
            e("、".join(u["technicians"])),
        ]
        for u in sec["hotspot_units"]
    ]
    out.append(_table(["房屋", "小区", "复报单", "本期工单", "类别", "维修人员"], rows, left=2))
    rows = [
        [
            e(_cat(c["category"])),
            str(c["orders"]),
            _pct(c["repeat_rate"]),
            _pct(c["previous_repeat_rate"]),
            "—" if c["change"] is None else f"{c['change'] * 100:+.1f} 个百分点",
            "<b class='down'>上升</b>" if c["rising"] else "",
        ]
        for c in sec["categories"]
    ]
    out.append("<h3>各类别返修复报率（本期 vs 上期）</h3>")
    out.append(_table(["类别", "本期工单", "本期复报率", "上期复报率", "变化", "显著上升"], rows))
    return "\n".join(out)


def emergency_html(sec: dict[str, Any]) -> str:
    """夜间/节假日特急工单表现."""
    out = ["<h2 id='emergency'>夜间/节假日特急工单表现</h2>"]
    na = _na(sec)
    if na:
        return "\n".join(out + [na])
    rows = [
        [
            e(g["name_zh"]),
            str(g["orders"]),
            _pct(g["response_timeliness"]),
            _num(g["median_arrival_minutes"], 0),
            _pct(g["rework_rate"]),
            _pct(g["dissatisfaction_rate"]),
            _pct(g["satisfaction_rate"]),
        ]
        for g in sec["groups"].values()
    ]
    out.append(
        _table(
            [
                "时段",
                "特急单",
                "上门及时率",
                "上门用时中位数（分钟）",
                "返修率",
                "不满意率",
                "满意度",
            ],
            rows,
        )
    )
    return "\n".join(out)


def model_health_html(sec: dict[str, Any]) -> str:
    """模型健康: realised AUC / ECE and input drift."""
    out = ["<h2 id='model-health'>模型健康</h2>"]
    na = _na(sec)
    if na:
        return "\n".join(out + [na])
    rows = []
    for per, zh in (("current", "本期"), ("previous", "上期")):
        for k, r in (sec["realised"].get(per) or {}).items():
            rows.append(
                [
                    f"{zh} {_OUTCOME_ZH.get(k, k)}",
                    str(r["matured_orders"]),
                    _pct(r["observed_rate"]),
                    _pct(r["mean_predicted"]),
                    _num(r["auc"], 3),
                    _num(r["ece"], 3),
                    "—"
                    if r["calibrated"] is None
                    else ("是" if r["calibrated"] else "<b class='down'>否</b>"),
                ]
            )
    out.append("<p>只用标签已成熟的工单（返修观察期已结束、已有评价或投诉）。</p>")
    out.append(
        _table(["期间/目标", "成熟工单", "实际率", "平均预测", "AUC", "ECE", "校准合格"], rows)
    )
    d = sec.get("drift") or {}
    na = _na(d)
    out.append("<h3>输入漂移（PSI）</h3>")
    if na:
        out.append(na)
    else:
        w = d.get("reference_window") or {}
        out.append(
            f"<p>参考期 {e(str(w.get('from', ''))[:10])} 至 {e(str(w.get('to', ''))[:10])}"
            f"（{d['reference_orders']} 单）；"
            "PSI &lt; 0.1 稳定，0.1–0.25 中度，&gt; 0.25 显著。</p>"
        )
        zh = {
            "stable": "稳定",
            "moderate": "中度",
            "major": "<b class='down'>显著</b>",
            "unknown": "—",
        }
        rows = [[e(k), _num(v["psi"], 3), zh[v["level"]]] for k, v in d["features"].items()]
        out.append(_table(["特征", "PSI", "判断"], rows))
    return "\n".join(out)


def rectification_html(sec: dict[str, Any]) -> str:
    """整改逾期与申诉汇总."""
    out = ["<h2 id='rectification'>整改与申诉</h2>"]
    r, a = sec.get("rectifications") or {}, sec.get("appeals") or {}
    out.append("<h3>逾期整改事项</h3>")
    na = _na(r)
    if na:
        out.append(na)
    else:
        out.append(
            f"<p>整改事项共 {r['total']} 项，未完成 {r['open']} 项，"
            f"逾期 {len(r['overdue'])} 项。</p>"
        )
        rows = [
            [
                e(i.get("title") or ""),
                e(i.get("owner") or ""),
                e(i["deadline"][:10]),
                _num(i["days_overdue"], 1),
            ]
            for i in r["overdue"]
        ]
        if rows:
            out.append(_table(["事项", "负责人", "期限", "逾期天数"], rows, left=2))
        eff = r.get("effectiveness") or []
        if eff:
            out.append("<h3>整改效果（针对对象的返修率：立项前 vs 完成后）</h3>")
            rows = [
                [
                    e(i.get("title") or ""),
                    f"{i['before']['orders']} 单 / {_pct(i['before']['rework_rate'])}",
                    f"{i['after']['orders']} 单 / {_pct(i['after']['rework_rate'])}",
                    "—" if i["change"] is None else f"{i['change'] * 100:+.1f} 个百分点",
                ]
                for i in eff
            ]
            out.append(_table(["事项", "立项前", "完成后", "变化"], rows))
    out.append("<h3>申诉</h3>")
    na = _na(a)
    if na:
        out.append(na)
    else:
        out.append(
            f"<p>申诉共 {a['total']} 件："
            + "，".join(f"{e(k)} {v}" for k, v in a["by_status"].items())
            + "。</p>"
        )
        zh = {"inspection": "质检结果", "rework": "返修认定", "dissatisfaction": "不满意认定"}
        by_target = a.get("by_target") or {}
        if by_target:
            lo = a.get("labels_overridden") or {}
            out.append(
                "<p>按申诉对象："
                + "，".join(f"{e(zh.get(k, k))} {v}" for k, v in by_target.items())
                + f"。申诉成立改判的标签：返修 {lo.get('rework', 0)} 单，"
                f"不满意 {lo.get('dissatisfied', 0)} 单（档案与再训练使用改判后的标签）。</p>"
            )
    return "\n".join(out)


#: Section key -> renderer, in page order (after the KPI tables).
RENDERERS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("recommendations", recommendations_html),
    ("estimates", estimates_html),
    ("technicians", technicians_html),
    ("drivers", drivers_html),
    ("comments", comments_html),
    ("hotspots", hotspots_html),
    ("emergency", emergency_html),
    ("model_health", model_health_html),
    ("rectification", rectification_html),
)


def sections_html(report: dict[str, Any]) -> str:
    """Every section of ``report`` that is present, in page order, plus the source notes."""
    parts = [fn(report[key]) for key, fn in RENDERERS if key in report]
    notes = report.get("notes") or []
    if notes:
        parts.append("<h2>数据说明</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(parts)
