"""The improvement report's sections beyond the KPIs, each a JSON-ready dict.

Every section takes :class:`pipelines.report_data.ReportInputs` and the period; a section whose
data the source does not have returns ``{"available": false, "note": ...}`` — never zeros that
look like measurements. The numbers come from ``models`` (estimates, dossiers, drift, metrics,
sentiment); this module only selects the period's orders and assembles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.dossiers import DossierConfig, technician_dossiers
from models.drift import drift_level, psi
from models.estimates import domain_estimates
from models.schemas import CATEGORY_ZH, TIMEZONE
from pipelines.report_data import ReportInputs

#: Outcomes of the unbiased estimates: (label/result column, Chinese name).
ESTIMATE_OUTCOMES: dict[str, str] = {
    "rework": "返修率",
    "inspection_failure": "质检不合格率",
    "dissatisfaction": "不满意率",
}


#: Orders whose exact TreeSHAP contributions are averaged for the global drivers.
MAX_SHAP_ORDERS = 1000


@dataclass(frozen=True)
class SectionConfig:
    """``params.yaml: report`` knobs of the sections (besides the period)."""

    reference_months: int = 6
    dossier_months: int = 3
    estimate_months: int = 3
    drift_features: tuple[str, ...] = (
        "dispatch_hours",
        "arrival_hours",
        "repair_hours",
        "urge_count",
        "cost_yuan",
        "unit_cat_orders_365d",
        "tech_orders_workload",
        "comm_orders_workload",
        "desc_sentiment",
        "building_age",
        "category",
        "priority",
        "channel",
        "rework_risk",
        "dissatisfaction_prob",
    )
    drift_bins: int = 10
    top_drivers: int = 10
    top_themes: int = 15
    hotspot_min_repeats: int = 2
    hotspot_top: int = 20
    rising_min_change: float = 0.02
    rectification_effect_days: float = 90.0
    max_ece: float = 0.02
    dossiers: DossierConfig = field(default_factory=DossierConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SectionConfig:
        """From ``params.yaml: report`` minus ``from``/``to``; unknown keys are an error."""
        d = {k: v for k, v in dict(d or {}).items() if k not in ("from", "to")}
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"params.yaml report: unknown key(s) {unknown}; known: {sorted(known)}"
            )
        if "dossiers" in d:
            d["dossiers"] = DossierConfig.from_dict(d["dossiers"])
        if "drift_features" in d:
            d["drift_features"] = tuple(d["drift_features"])
        return cls(**d)


def _na(note: str) -> dict[str, Any]:
    return {"available": False, "note": note}


def _r(v: Any, nd: int = 4) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, nd) if math.isfinite(f) else None


def period_frame(
    inp: ReportInputs, t0: pd.Timestamp, t1: pd.Timestamp, community: str | None
) -> pd.DataFrame:
    """Completed orders reported in ``[t0, t1)`` with labels, month and (if any) scores."""
    o = inp.orders
    rep = o["reported_at"]
    m = ((rep >= t0) & (rep < t1)).to_numpy() & (o["status"].astype(str) == "completed").to_numpy()
    if community is not None:
        m = m & (o["community_id"].astype(str) == community).to_numpy()
    f = o[m].copy()
    f["order_id"] = f["order_id"].astype(str)
    f["rework"] = inp.labels.loc[f.index, "rework"]
    f["dissatisfied"] = inp.labels.loc[f.index, "dissatisfied"]
    for c in ("rework_overridden", "dissatisfied_overridden"):  # upheld label appeals
        if c in inp.labels:
            f[c] = inp.labels.loc[f.index, c].to_numpy(dtype=bool)
    local = f["reported_at"].dt.tz_convert(TIMEZONE).dt.tz_localize(None)
    f["month"] = local.dt.strftime("%Y-%m")
    f["community_id"] = f["community_id"].astype(str)
    f["category"] = f["category"].astype(str)
    if inp.scored is not None:
        s = inp.scored.reindex(f["order_id"])
        for c in ("rework_risk", "dissatisfaction_prob", "risk_level", "pi", "sampled"):
            f[c] = s[c].to_numpy()
    return f


# --------------------------------------------------------------------------- 1. estimates


def inspection_failed(inspections: pd.DataFrame | None) -> pd.Series | None:
    """Per order id: its latest internal or third-party result counts as a failure.

    A failure overturned by an upheld appeal does not count (``counts_as_failure``).
    """
    if inspections is None or not len(inspections):
        return None
    ins = inspections
    if "is_latest" in ins:
        ins = ins[ins["is_latest"].astype(bool)]
    if "counts_as_failure" in ins:
        fail = ins["counts_as_failure"].astype(bool)
    else:
        over = ins["overturned"].fillna(False).astype(bool) if "overturned" in ins else False
        fail = ~ins["passed"].astype(bool) & ~over
    return fail.groupby(ins["order_id"].astype(str)).any()


def _inspection_failure(inp: ReportInputs, ids: pd.Series) -> pd.Series | None:
    """1 = failed, 0 = passed the latest third-party inspection, NaN = no result (yet).

    A failure overturned by an upheld appeal counts as passed (``counts_as_failure``).
    """
    ins = inp.inspections
    if ins is None:
        return None
    ins = ins[ins["kind"].astype(str) == "third_party"]
    if "is_latest" in ins:
        ins = ins[ins["is_latest"].astype(bool)]
    else:
        ins = ins.sort_values("recorded_at") if "recorded_at" in ins else ins
        ins = ins.drop_duplicates("order_id", keep="last")
    if "counts_as_failure" in ins:
        fail = ins["counts_as_failure"].astype(float)
    else:
        over = ins["overturned"].fillna(False).astype(bool) if "overturned" in ins else False
        fail = (~ins["passed"].astype(bool) & ~over).astype(float)
    failed = pd.Series(fail.to_numpy(), index=ins["order_id"].astype(str).to_numpy())
    return pd.Series(ids.map(failed).to_numpy(dtype=float), index=ids.index)


def estimates_section(f: pd.DataFrame, inp: ReportInputs, t0: pd.Timestamp) -> dict[str, Any]:
    """HT / Hájek estimates with CIs beside the naive sample mean (and the truth when known).

    ``f`` covers a trailing window ending with the report period (rework labels need their
    30-day window to mature, so the report month alone has few): ``period`` is the estimate
    over the report period's orders (reported from ``t0``), ``overall`` and ``by_*`` over the
    window, ``by_month`` one row per month.
    """
    if inp.scored is None or "pi" not in f:
        return _na("没有评分与入样概率（无模型或存储中无评分决定）：无法做抽样估计。")
    pop = f[f["pi"].notna()].copy()
    out: dict[str, Any] = {
        "available": True,
        "source": inp.source,
        "sampling": inp.sampling,
        "population_orders": int(len(pop)),
        "sampled_orders": int(pop["sampled"].astype(bool).sum()),
        "method": (
            "Horvitz-Thompson (known domain size) and Hajek (ratio) estimators under Poisson "
            "sampling with the stored inclusion probabilities; 95% Wilson intervals at the "
            "design-effective sample size; naive = plain mean of the sampled orders"
        ),
        "outcomes": {},
        "notes": [],
    }
    pop["sampled"] = pop["sampled"].astype(bool)
    pop["y_rework"] = pop["rework"].astype(float)
    pop["y_dissatisfaction"] = pop["dissatisfied"].astype(float)
    fail = _inspection_failure(inp, pop["order_id"])
    by = ["community_id", "category", "month"]
    for name, zh in ESTIMATE_OUTCOMES.items():
        if name == "inspection_failure":
            if fail is None:
                out["outcomes"][name] = _na("本数据源没有第三方质检结果。")
                continue
            pop["y_inspection_failure"] = fail.to_numpy()
            known = False
        else:
            known = True
        est = domain_estimates(pop, f"y_{name}", by, population_known=known)
        est = {k.replace("by_community_id", "by_community"): v for k, v in est.items()}
        cur = pop[pop["reported_at"] >= t0]
        est["period"] = domain_estimates(cur, f"y_{name}", [], population_known=known)["overall"]
        out["outcomes"][name] = {"available": True, "name_zh": zh, **est}
    if inp.source == "contract":
        out["notes"].append(
            "合同文件来源：抽样按与服务相同的策略和密钥重现；总体真值（population_rate）来自全部"
            "工单的标签，可直接检验估计量的无偏性。"
        )
    out["notes"].append("返修率只含返修观察期已结束的工单，不满意率只含已有评价或投诉的工单。")
    return out


# --------------------------------------------------------------------------- 2. dossiers


def dossiers_section(f: pd.DataFrame, inp: ReportInputs, cfg: DossierConfig) -> dict[str, Any]:
    """Technician dossiers with O/E, funnel limits, shrinkage and flags."""
    if inp.scored is None or "rework_risk" not in f:
        return _na("没有模型分数：无法计算预期返修/不满意数。")
    names = teams = None
    if inp.technicians is not None:
        t = inp.technicians.drop_duplicates("technician_id").set_index("technician_id")
        t.index = t.index.astype(str)
        names = t["name"].to_dict() if "name" in t else None
        teams = t["team"].to_dict() if "team" in t else None
    f = f[f["rework_risk"].notna()].copy()
    basis = "model scores (include the technician's own history)"
    if inp.features is not None and "casemix_rework_risk" in inp.features:
        cm = inp.features.reindex(f["order_id"])
        ok = cm["casemix_rework_risk"].notna().to_numpy()
        f = f[ok]
        for col in ("rework_risk", "dissatisfaction_prob"):
            f[col] = cm.loc[f["order_id"], f"casemix_{col}"].to_numpy()
        basis = "case-mix: model scores with every technician feature at its typical value"
    sec = technician_dossiers(
        f,
        cfg,
        inspections=inp.inspections,
        appeals=inp.appeals,
        names=names,
        teams=teams,
    )
    return {"available": True, "expected_basis": basis, **sec}


# --------------------------------------------------------------------------- 3. drivers


def drivers_section(f: pd.DataFrame, inp: ReportInputs, top: int) -> dict[str, Any]:
    """Mean |TreeSHAP| per feature and head over the period's orders, in business wording."""
    if inp.model is None or inp.features is None:
        return _drivers_from_stored(inp, f, top)
    from models import reasons
    from models.estimators import HEADS

    X = inp.features.reindex(f["order_id"]).dropna(how="all")
    if len(X) > MAX_SHAP_ORDERS:  # a mean over a fixed-seed sample: exact TreeSHAP is slow
        X = X.sample(MAX_SHAP_ORDERS, random_state=0)
    names = inp.model.feature_names
    out: dict[str, Any] = {"available": True, "method": "mean |TreeSHAP| (log-odds) per feature"}
    med = X[names].median(numeric_only=True)
    for head, col in HEADS.items():
        if not len(X):
            out[col] = []
            continue
        c = inp.model.heads[head].contributions(X[names])
        mean_abs = c.abs().mean().sort_values(ascending=False).head(top)
        rows = []
        for feat, v in mean_abs.items():
            up = c[feat] > 0
            # wording at the median value among orders where the feature raises the risk
            if pd.api.types.is_numeric_dtype(X[feat]):
                val = X.loc[up.to_numpy(), feat].median() if up.any() else med.get(feat)
            else:
                vc = X.loc[up.to_numpy(), feat].astype(str).value_counts()
                val = vc.index[0] if len(vc) else None
            row = {k: (med.get(k) if k != feat else val) for k in names}
            item = reasons.reason_item(feat, row, float(v))
            rows.append(
                {
                    "feature": feat,
                    "code": item["code"],
                    "name_zh": reasons.FEATURE_NAMES_ZH.get(feat, feat),
                    "text": item["text"],
                    "mean_abs_contribution": _r(v),
                    "share_raising": _r(float(up.mean()), 3),
                }
            )
        out[col] = rows
    return out


def _drivers_from_stored(inp: ReportInputs, f: pd.DataFrame, top: int) -> dict[str, Any]:
    """Store without a model: how often each reason was among the recorded top reasons."""
    if inp.stored_reasons is None:
        return _na("没有模型，也没有记录的评分原因：无风险驱动因素数据。")
    ids = [i for i in f["order_id"] if i in inp.stored_reasons.index]
    counts: dict[str, list[Any]] = {}
    for items in inp.stored_reasons.loc[ids]:
        for it in items or []:
            c = counts.setdefault(it.get("code", it.get("feature", "?")), [0, 0.0, it.get("text")])
            c[0] += 1
            c[1] += float(it.get("contribution") or 0.0)
    rows = sorted(counts.items(), key=lambda kv: -kv[1][1])[:top]
    return {
        "available": True,
        "method": "recorded top reasons of the decisions: sum of contributions (both heads)",
        "combined": [
            {"code": k, "text": v[2], "orders": v[0], "total_contribution": _r(v[1])}
            for k, v in rows
        ],
    }


# --------------------------------------------------------------------------- comments


def _segment_unique(texts: list[str]) -> list[list[str]]:
    """The sentiment module's word segmentation, once per distinct comment.

    It is slow (~10 ms a comment), and short follow-up comments repeat a lot (好评, 满意).
    """
    from models.sentiment import _segment

    uniq = list(dict.fromkeys(texts))
    words = dict(zip(uniq, _segment(uniq), strict=True))
    return [words[t] for t in texts]


def comments_section(f: pd.DataFrame, top: int) -> dict[str, Any]:
    """Negative comment themes (log-odds keywords) and complaint aspects of the period."""
    from models.sentiment import ASPECTS, aspect_tags, negative_themes

    c = f[f["feedback_comment"].notna() & (f["feedback_comment"].astype(str).str.strip() != "")]
    if not len(c):
        return _na("本期没有回访评价文字。")
    texts = c["feedback_comment"].astype(str).tolist()
    # negative = dissatisfied label (complaint or low rating); comment-only orders use the
    # label's comment sentiment where it was decided, else they are left out of the contrast
    sent = 1.0 - c["dissatisfied"].astype(float)
    themes = negative_themes(texts, sent.to_numpy(), top_k=top, tokenize=_segment_unique)
    tags = [aspect_tags(t) for t in texts]
    neg = (c["dissatisfied"] == 1).to_numpy()
    aspects = {}
    for a, zh in ASPECTS.items():
        complaint = np.array([t.get(a) == -1 for t in tags])
        mention = np.array([a in t for t in tags])
        aspects[a] = {
            "name_zh": zh,
            "mentions": int(mention.sum()),
            "complaints": int(complaint.sum()),
            "share_of_negative_comments": _r(complaint[neg].mean(), 3) if neg.any() else None,
        }
    return {
        "available": True,
        "comments": len(texts),
        "negative_comments": int(neg.sum()),
        "themes": [
            {
                "keyword": r.keyword,
                "n_negative": int(r.n_negative),
                "share_of_negative": _r(r.share_of_negative, 3),
                "z": _r(r.z, 2),
                "aspect": r.aspect or None,
            }
            for r in themes.itertuples()
        ],
        "aspects": aspects,
    }


# --------------------------------------------------------------------------- hotspots


def _ns(ts: pd.Series) -> pd.Series:
    """UTC nanoseconds as float (NaN for missing), whatever the stored resolution."""
    naive = ts.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
    return naive.astype("int64").astype(float).where(ts.notna())


def repeat_flags(orders: pd.DataFrame, window_days: float) -> pd.Series:
    """Per order: it is a repeat (返修复报), i.e. a fault that came back.

    It names a parent order, or the same home reported the same category within
    ``window_days`` after an earlier order's completion.

    Observable on the day the repeat is reported (unlike the rework label of the earlier
    order, which waits for its window to close), so it serves the current period.
    """
    live = orders[orders["status"].astype(str) != "cancelled"]
    s = live.sort_values("reported_at")
    done_ns = _ns(s["completed_at"])
    key = s["unit_id"].astype(str) + "|" + s["category"].astype(str)
    # latest completion of an earlier order of the same home and category (vectorised: a
    # per-group lambda costs seconds on 100k orders)
    prev_done = done_ns.groupby(key).shift().groupby(key).cummax()
    rep_ns = _ns(s["reported_at"])
    gap_days = (rep_ns - prev_done) / 86_400e9
    rep = ((gap_days >= 0) & (gap_days <= window_days)).fillna(False)
    if "parent_order_id" in s:
        rep |= s["parent_order_id"].notna()
    return rep.reindex(orders.index, fill_value=False).astype(bool)


def hotspots_section(
    inp: ReportInputs,
    t0: pd.Timestamp,
    t1: pd.Timestamp,
    community: str | None,
    window_days: float,
    cfg: SectionConfig,
) -> dict[str, Any]:
    """Homes whose faults came back repeatedly in the period, and categories with rising repeats."""
    o = inp.orders
    rep_flag = repeat_flags(o, window_days)
    p0 = t0 - (t1 - t0)
    live = (o["status"].astype(str) != "cancelled").to_numpy()
    if community is not None:
        live = live & (o["community_id"].astype(str) == community).to_numpy()
    rt = o["reported_at"]
    cur = live & ((rt >= t0) & (rt < t1)).to_numpy()
    prev = live & ((rt >= p0) & (rt < t0)).to_numpy()
    c = o[cur].assign(repeat=rep_flag[cur].to_numpy())
    units = []
    for unit, g in c[c["repeat"]].groupby(o.loc[cur, "unit_id"][c["repeat"]].astype(str)):
        if len(g) < cfg.hotspot_min_repeats:
            continue
        all_u = c[c["unit_id"].astype(str) == unit]
        units.append(
            {
                "unit_id": unit,
                "community_id": str(g["community_id"].iloc[0]),
                "repeat_orders": int(len(g)),
                "orders": int(len(all_u)),
                "categories": sorted(set(g["category"].astype(str))),
                "technicians": sorted(set(all_u["technician_id"].dropna().astype(str))),
                "last_reported": g["reported_at"].max().isoformat(),
            }
        )
    units.sort(key=lambda u: (-u["repeat_orders"], u["unit_id"]))
    # categories: repeat share now vs the previous period (two-proportion z test)
    p = o[prev].assign(repeat=rep_flag[prev].to_numpy())
    cats = []
    for cat in sorted(set(c["category"].astype(str)) | set(p["category"].astype(str))):
        a = c[c["category"].astype(str) == cat]["repeat"]
        b = p[p["category"].astype(str) == cat]["repeat"]
        ra = float(a.mean()) if len(a) else None
        rb = float(b.mean()) if len(b) else None
        z = None
        if ra is not None and rb is not None:
            pooled = (a.sum() + b.sum()) / (len(a) + len(b))
            se = math.sqrt(pooled * (1 - pooled) * (1 / len(a) + 1 / len(b)))
            z = (ra - rb) / se if se > 0 else None
        rising = bool(
            ra is not None
            and rb is not None
            and ra - rb >= cfg.rising_min_change
            and z is not None
            and z > 1.96
        )
        cats.append(
            {
                "category": cat,
                "name_zh": CATEGORY_ZH.get(cat, cat),
                "orders": int(len(a)),
                "repeat_rate": _r(ra),
                "previous_repeat_rate": _r(rb),
                "change": _r(ra - rb) if ra is not None and rb is not None else None,
                "z": _r(z, 2),
                "rising": rising,
            }
        )
    return {
        "available": True,
        "definition": (
            f"repeat order: same home and category reported within {window_days:g} days after an "
            "earlier completion, or naming a parent order; hotspot: a home with at least "
            f"{cfg.hotspot_min_repeats} repeat orders in the period"
        ),
        "repeat_orders": int(c["repeat"].sum()),
        "hotspot_units": units[: cfg.hotspot_top],
        "hotspot_units_total": len(units),
        "categories": cats,
    }


# --------------------------------------------------------------------------- emergencies


def emergency_section(
    inp: ReportInputs,
    kpi_flags: pd.DataFrame,
    t0: pd.Timestamp,
    t1: pd.Timestamp,
    community: str | None,
    night_start: int,
    night_end: int,
) -> dict[str, Any]:
    """Emergency orders at night / on statutory holidays vs daytime workdays."""
    from models.features import _calendar_flags

    o = inp.orders
    rt = o["reported_at"]
    m = ((rt >= t0) & (rt < t1)).to_numpy() & (o["priority"].astype(str) == "emergency").to_numpy()
    m = m & (o["status"].astype(str) != "cancelled").to_numpy()
    if community is not None:
        m = m & (o["community_id"].astype(str) == community).to_numpy()
    e = o[m]
    if not len(e):
        return _na("本期没有特急工单。")
    local = e["reported_at"].dt.tz_convert(TIMEZONE)
    hour = local.dt.hour.to_numpy()
    night = (hour >= night_start) | (hour < night_end)
    holiday, offday = _calendar_flags(local.dt.date)
    holiday = np.nan_to_num(holiday) > 0
    groups = {
        "night": night,
        "holiday": holiday,
        "night_or_holiday": night | holiday,
        "daytime_workday": ~night & ~(np.nan_to_num(offday) > 0),
    }
    zh = {
        "night": "夜间",
        "holiday": "法定节假日",
        "night_or_holiday": "夜间或节假日",
        "daytime_workday": "工作日白天",
    }
    kf = kpi_flags.loc[e.index]
    arr_min = (e["arrived_at"] - e["reported_at"]).dt.total_seconds() / 60
    lab = inp.labels.loc[e.index]
    rating = pd.to_numeric(e["rating"], errors="coerce")
    out: dict[str, Any] = {"available": True, "groups": {}}
    for g, mask in groups.items():
        den = int(kf["response_timeliness_den"][mask].sum())
        rw = lab["rework"][mask].dropna()
        ds = lab["dissatisfied"][mask].dropna()
        rr = rating[mask].dropna()
        out["groups"][g] = {
            "name_zh": zh[g],
            "orders": int(mask.sum()),
            "response_timeliness": _r(kf["response_timeliness_num"][mask].sum() / den)
            if den
            else None,
            "median_arrival_minutes": _r(float(np.nanmedian(arr_min[mask])), 1)
            if np.isfinite(arr_min[mask]).any()
            else None,
            "rework_rate": _r(rw.mean()) if len(rw) else None,
            "rework_labelled": int(len(rw)),
            "dissatisfaction_rate": _r(ds.mean()) if len(ds) else None,
            "satisfaction_rate": _r(float((rr >= 4).mean())) if len(rr) else None,
        }
    return out


# --------------------------------------------------------------------------- model health


def model_health_section(
    f_all: pd.DataFrame, inp: ReportInputs, t0: pd.Timestamp, cfg: SectionConfig
) -> dict[str, Any]:
    """Realised AUC / ECE on matured labels (this and the previous period) and input drift."""
    from models import metrics as M

    if inp.scored is None or "rework_risk" not in f_all:
        return _na("没有模型分数：无法评估模型健康。")
    out: dict[str, Any] = {"available": True, "realised": {}, "drift": {}}
    for per, sel in (
        ("current", f_all["reported_at"] >= t0),
        ("previous", f_all["reported_at"] < t0),
    ):
        g = f_all[sel & f_all["rework_risk"].notna()]
        res = {}
        for name, (lab, col) in {
            "rework": ("rework", "rework_risk"),
            "dissatisfaction": ("dissatisfied", "dissatisfaction_prob"),
        }.items():
            ok = g[lab].notna()
            y, p = g.loc[ok, lab].to_numpy(float), g.loc[ok, col].to_numpy(float)
            both = len(y) >= 30 and 0 < y.sum() < len(y)
            e = M.ece(y, p) if len(y) else float("nan")
            res[name] = {
                "matured_orders": int(len(y)),
                "observed_rate": _r(y.mean()) if len(y) else None,
                "mean_predicted": _r(p.mean()) if len(p) else None,
                "auc": _r(M.auc(y, p)) if both else None,
                "ece": _r(e),
                "calibrated": None if not np.isfinite(e) else bool(e <= cfg.max_ece),
            }
        out["realised"][per] = res
    ref, cur = inp.reference_features, inp.features
    if ref is None or cur is None or not len(ref):
        out["drift"] = _na("没有参考期特征（无模型或参考期无工单）：无法计算输入漂移。")
        return out
    cur = cur.reindex(f_all.loc[f_all["reported_at"] >= t0, "order_id"])
    rows = {}
    for feat in cfg.drift_features:
        if feat not in ref or feat not in cur:
            continue
        v = psi(ref[feat], cur[feat], cfg.drift_bins)
        rows[feat] = {"psi": _r(v), "level": drift_level(v)}
    out["drift"] = {
        "available": True,
        "reference_window": inp.reference_window,
        "reference_orders": int(len(ref)),
        "current_orders": int(len(cur)),
        "features": rows,
        "max_psi": _r(max((r["psi"] or 0.0) for r in rows.values())) if rows else None,
    }
    return out


# --------------------------------------------------------------------------- rectification


#: Stored statuses of a finished item (the store derives ``overdue`` from open ones).
_CLOSED = {"done", "verified"}


def _effect(inp: ReportInputs, item: pd.Series, window_days: float) -> dict[str, Any] | None:
    """Rework rate of the targeted orders before the item was raised vs after it was done.

    Targeted: completed orders matching the item's cause (category, technician, community;
    the ones given). Before: completed in the ``window_days`` before ``created_at``; after:
    completed in the ``window_days`` after ``done_at``. Only matured rework labels count, so a
    recently finished item shows few "after" orders until its windows close.
    """
    done_at, created = item.get("done_at"), item.get("created_at")
    if done_at is None or pd.isna(done_at) or created is None or pd.isna(created):
        return None
    o = inp.orders
    m = (o["status"].astype(str) == "completed").to_numpy()
    for col, key in (
        ("category", "cause_category"),
        ("technician_id", "cause_technician_id"),
        ("community_id", "cause_community_id"),
    ):
        v = item.get(key)
        if v is not None and not pd.isna(v) and str(v):
            m = m & (o[col].astype(str) == str(v)).to_numpy()
    t = o["completed_at"]
    w = pd.Timedelta(days=window_days)
    created, done_at = pd.Timestamp(created), pd.Timestamp(done_at)
    before = m & ((t >= created - w) & (t < created)).to_numpy()
    after = m & ((t >= done_at) & (t < done_at + w)).to_numpy()
    rw = inp.labels["rework"].to_numpy()
    res: dict[str, Any] = {"window_days": window_days}
    for name, sel in (("before", before), ("after", after)):
        y = rw[sel]
        y = y[~np.isnan(y)]
        res[name] = {"orders": int(len(y)), "rework_rate": _r(y.mean()) if len(y) else None}
    b, a = res["before"]["rework_rate"], res["after"]["rework_rate"]
    res["change"] = _r(a - b) if a is not None and b is not None else None
    return res


def rectification_section(
    inp: ReportInputs, as_of: pd.Timestamp, effect_days: float = 90.0
) -> dict[str, Any]:
    """Overdue rectification items, effectiveness of finished ones, appeals (store only)."""
    out: dict[str, Any] = {}
    r = inp.rectifications
    if r is None:
        out["rectifications"] = _na("本数据源没有整改事项。")
    else:
        deadline = pd.to_datetime(r["deadline"], utc=True)
        open_ = ~r["status"].astype(str).str.lower().isin(_CLOSED)
        overdue = open_ & (deadline < as_of.tz_convert("UTC"))
        cols = [
            c
            for c in (
                "rectification_id",
                "title",
                "owner",
                "status",
                "cause_category",
                "cause_technician_id",
                "cause_community_id",
            )
            if c in r
        ]
        items = []
        for i in np.flatnonzero(overdue.to_numpy()):
            row = r.iloc[i]
            items.append(
                {
                    **{c: (None if pd.isna(row[c]) else str(row[c])) for c in cols},
                    "deadline": deadline.iloc[i].isoformat(),
                    "days_overdue": _r((as_of - deadline.iloc[i]).total_seconds() / 86400, 1),
                }
            )
        effects = []
        for i in range(len(r)):
            row = r.iloc[i]
            eff = _effect(inp, row, effect_days)
            if eff is not None:
                effects.append({c: (None if pd.isna(row[c]) else str(row[c])) for c in cols} | eff)
        out["rectifications"] = {
            "available": True,
            "total": int(len(r)),
            "open": int(open_.sum()),
            "overdue": items,
            "effectiveness": effects,
            "by_status": {
                str(k): int(v) for k, v in r["status"].astype(str).value_counts().items()
            },
        }
    a = inp.appeals
    if a is None:
        out["appeals"] = _na("本数据源没有申诉记录。")
    else:
        st = a["status"].astype(str) if "status" in a else pd.Series([], dtype=str)
        tg = a["target"].astype(str) if "target" in a else pd.Series([], dtype=str)
        lab = inp.labels
        out["appeals"] = {
            "available": True,
            "total": int(len(a)),
            "by_status": {str(k): int(v) for k, v in st.value_counts().items()},
            # inspection | rework | dissatisfaction; upheld label appeals override the labels
            "by_target": {str(k): int(v) for k, v in tg.value_counts().items()},
            "labels_overridden": {
                k: int(lab[f"{k}_overridden"].sum()) if f"{k}_overridden" in lab else 0
                for k in ("rework", "dissatisfied")
            },
        }
    return out


# --------------------------------------------------------------------------- recommendations


def recommendations(sections: dict[str, Any]) -> list[dict[str, Any]]:
    """Rule-based rectification suggestions from the other sections (建议整改事项)."""
    recs: list[dict[str, Any]] = []
    hot = sections.get("hotspots", {})
    for u in hot.get("hotspot_units", [])[:10]:
        cats = "、".join(CATEGORY_ZH.get(c, c) for c in u["categories"])
        recs.append(
            {
                "code": "hotspot_unit",
                "priority": "high" if u["repeat_orders"] >= 3 else "medium",
                "title_zh": f"房屋 {u['unit_id']}（{u['community_id']}）{cats}本期返修复报"
                f"{u['repeat_orders']}次：上门根因排查，必要时更换部件或安排专项维修",
                "owner_hint": "项目维修主管",
                "evidence": {"unit_id": u["unit_id"], "repeat_orders": u["repeat_orders"]},
            }
        )
    for c in hot.get("categories", []):
        if c["rising"]:
            recs.append(
                {
                    "code": "rising_category",
                    "priority": "high",
                    "title_zh": f"{c['name_zh']}类返修复报率由 "
                    f"{c['previous_repeat_rate']:.1%} 升至 "
                    f"{c['repeat_rate']:.1%}：开展该类工艺复盘与专项培训",
                    "owner_hint": "品质部",
                    "evidence": {
                        k: c[k] for k in ("category", "repeat_rate", "previous_repeat_rate", "z")
                    },
                }
            )
    dos = sections.get("technicians", {})
    for tid, d in (dos.get("technicians") or {}).items():
        if d["flag"] == "needs_coaching":
            who = f"{d['name']}（{tid}）" if d.get("name") else tid
            recs.append(
                {
                    "code": "technician_coaching",
                    "priority": "high",
                    "title_zh": f"维修人员 {who}："
                    f"{'；'.join(d['flag_reasons'])}，安排带教辅导并"
                    "对其近期工单加抽检",
                    "owner_hint": d.get("team") or "班组长",
                    "evidence": {k: (d[k] or {}).get("oe") for k in ("rework", "dissatisfaction")},
                }
            )
    emg = (sections.get("emergency") or {}).get("groups") or {}
    nh, day = emg.get("night_or_holiday"), emg.get("daytime_workday")
    if (
        nh
        and day
        and nh["response_timeliness"] is not None
        and day["response_timeliness"] is not None
    ):
        gap = day["response_timeliness"] - nh["response_timeliness"]
        if gap >= 0.05:
            recs.append(
                {
                    "code": "off_hours_staffing",
                    "priority": "medium",
                    "title_zh": f"夜间/节假日特急工单上门及时率比工作日白天低 {gap:.1%}："
                    "调整值班与备勤安排",
                    "owner_hint": "客服中心/维修部",
                    "evidence": {
                        "night_or_holiday": nh["response_timeliness"],
                        "daytime": day["response_timeliness"],
                    },
                }
            )
    health = sections.get("model_health") or {}
    drift = health.get("drift") or {}
    major = [k for k, v in (drift.get("features") or {}).items() if v["level"] == "major"]
    if major:
        recs.append(
            {
                "code": "model_drift",
                "priority": "medium",
                "title_zh": f"模型输入显著漂移（{'、'.join(major)}）：核查数据口径并安排重新训练",
                "owner_hint": "数据团队",
                "evidence": {"features": major},
            }
        )
    for per in ("previous", "current"):
        r = ((health.get("realised") or {}).get(per) or {}).get("rework") or {}
        if r.get("calibrated") is False and r.get("matured_orders", 0) >= 500:
            recs.append(
                {
                    "code": "model_calibration",
                    "priority": "medium",
                    "title_zh": f"返修风险校准误差 ECE={r['ece']:.3f} 超出上限：重新校准或训练模型",
                    "owner_hint": "数据团队",
                    "evidence": {"period": per, "ece": r["ece"]},
                }
            )
            break
    asp = (sections.get("comments") or {}).get("aspects") or {}
    if asp:
        worst = max(asp.items(), key=lambda kv: kv[1]["complaints"])
        if worst[1]["complaints"] >= 5:
            recs.append(
                {
                    "code": "comment_aspect",
                    "priority": "low",
                    "title_zh": f"业主差评最集中的方面是“{worst[1]['name_zh']}”"
                    f"（{worst[1]['complaints']}条）："
                    "纳入班前会与服务规范培训",
                    "owner_hint": "品质部",
                    "evidence": {"aspect": worst[0], "complaints": worst[1]["complaints"]},
                }
            )
    order = {"high": 0, "medium": 1, "low": 2}
    return sorted(recs, key=lambda r: order[r["priority"]])
