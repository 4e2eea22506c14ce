"""Technician quality dossiers (维修服务质量档案): fair comparison by observed vs expected.

Why observed/expected: a technician who takes the old buildings' leaking pipes gets more
reworks than one who changes light bulbs. The risk model's probability of each order is what a
typical technician would have produced *on that job*, so the expected count E = Σ p over the
technician's labelled orders adjusts for the job mix; O/E > 1 means worse than expected on the
same work, whatever the work was.

Why funnel limits: with E = 2 expected reworks, 4 observed (O/E = 2) happens by chance 14 % of
the time. Under "as expected" O ~ Poisson(E); the 95 % and 99.8 % limits of O/E narrow as E grows
(Spiegelhalter 2005, exact Poisson quantiles with his interpolation so the limits are smooth in
E). Only points outside the limits are signals.

Why shrinkage: the ranking of small-volume technicians by raw O/E is mostly noise. A
gamma–Poisson empirical-Bayes model (true ratio θ ~ Gamma with mean = the overall O/E and
between-technician variance τ² estimated by the method of moments) gives
θ̂ = (O + a·r̄) / (E + a) with a = r̄²/τ²: near r̄ for small E, near O/E for large E.

Pure functions: frames in, frames/dicts out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import gamma, poisson

#: The two outcomes compared against the model: (label column, probability column).
OUTCOMES: dict[str, tuple[str, str]] = {
    "rework": ("rework", "rework_risk"),
    "dissatisfaction": ("dissatisfied", "dissatisfaction_prob"),
}

#: Flags of a dossier, with their Chinese wording (the HTML page and the dashboard).
FLAG_ZH: dict[str, str] = {
    "needs_coaching": "需辅导",
    "watch": "关注",
    "as_expected": "正常",
    "excellent": "优秀",
    "too_few": "样本不足",
}


#: Rewards/penalties note per flag (奖惩建议): a suggestion for the quality team, never an
#: automatic sanction — a penalty needs the inspection and appeal records checked first.
FLAG_NOTE_ZH: dict[str, str] = {
    "needs_coaching": "建议带教辅导并对其近期工单加抽检；如需处罚，须先复核质检与申诉记录",
    "watch": "持续关注，下期复查",
    "as_expected": "",
    "excellent": "建议通报表扬，纳入奖励评定",
    "too_few": "样本不足，暂不评价",
}


@dataclass(frozen=True)
class DossierConfig:
    """Thresholds of the dossier flags (``params.yaml: report.dossiers``).

    Attributes
    ----------
    warning, alarm
        Two-sided coverage of the inner and outer funnel limits (95 % and 99.8 %).
    min_expected
        Smallest expected count (per outcome) at which a technician is compared at all; below
        it even a large O/E is indistinguishable from luck.
    min_orders
        Smallest number of completed orders in the period for any flag.
    excellent_max_other_oe
        ``excellent`` also needs every other compared outcome's O/E at or below this: few
        reworks do not make up for unhappy residents.
    """

    warning: float = 0.95
    alarm: float = 0.998
    min_expected: float = 1.0
    min_orders: int = 10
    excellent_max_other_oe: float = 1.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> DossierConfig:
        """Build from the params mapping; unknown keys are an error."""
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"report.dossiers: unknown key(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**d)
        if not 0.5 < cfg.warning < cfg.alarm < 1.0:
            raise ValueError("report.dossiers: need 0.5 < warning < alarm < 1")
        return cfg


def poisson_limit(expected: np.ndarray | float, p: float) -> np.ndarray:
    """Count at quantile ``p`` of Poisson(E), interpolated (Spiegelhalter 2005).

    ``r = qpois(p, E)``; ``α = (F(r) − p) / (F(r) − F(r−1))``; limit = r − α. Continuous in E, so
    the funnel is a smooth curve rather than a staircase.
    """
    e = np.atleast_1d(np.asarray(expected, dtype=float))
    out = np.full(e.shape, np.nan)
    ok = e > 0
    r = poisson.ppf(p, e[ok])
    f_r = poisson.cdf(r, e[ok])
    f_r1 = poisson.cdf(r - 1, e[ok])
    denom = np.where(f_r - f_r1 > 0, f_r - f_r1, 1.0)
    out[ok] = np.maximum(r - (f_r - p) / denom, 0.0)
    return out


def funnel_limits(expected: np.ndarray | float, coverage: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper limits of O/E at two-sided ``coverage`` for expected counts ``E``."""
    e = np.atleast_1d(np.asarray(expected, dtype=float))
    a = (1.0 - coverage) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = poisson_limit(e, a) / e
        hi = poisson_limit(e, 1.0 - a) / e
    return lo, hi


def eb_prior(observed: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """Gamma prior ``(mean r̄, strength a)`` of the true ratios, by the method of moments.

    r̄ = ΣO/ΣE. Between-technician variance τ² = max(0, (Σ E (r − r̄)² − (k − 1) r̄) / (ΣE −
    ΣE²/ΣE)) — the Poisson noise of r = O/E is r̄/E, removed from the weighted spread
    (DerSimonian–Laird form). a = r̄²/τ²; τ² = 0 means "no real differences": infinite strength,
    every technician shrinks to r̄.
    """
    o = np.asarray(observed, dtype=float)
    e = np.asarray(expected, dtype=float)
    keep = e > 0
    o, e = o[keep], e[keep]
    if len(e) == 0 or e.sum() <= 0:
        return 1.0, math.inf
    rbar = float(o.sum() / e.sum())
    k = len(e)
    if k < 2 or rbar <= 0:
        return rbar, math.inf
    q = float(np.sum(e * (o / e - rbar) ** 2))
    denom = float(e.sum() - np.sum(e**2) / e.sum())
    tau2 = max(0.0, (q - (k - 1) * rbar) / denom) if denom > 0 else 0.0
    return rbar, (rbar**2 / tau2 if tau2 > 0 else math.inf)


def _shrunk(o: float, e: float, rbar: float, a: float, level: float) -> tuple[float, list[float]]:
    """Posterior mean and central interval of θ under Gamma(a·r̄, a) prior and Poisson(θE)."""
    if not math.isfinite(a):
        return rbar, [rbar, rbar]
    shape, rate = o + a * rbar, e + a
    lo, hi = gamma.ppf([(1 - level) / 2, (1 + level) / 2], shape, scale=1.0 / rate)
    return shape / rate, [float(lo), float(hi)]


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def compare_outcome(
    frame: pd.DataFrame, label: str, prob: str, config: DossierConfig
) -> pd.DataFrame:
    """Per technician: labelled orders, O, E, O/E, funnel limits, shrunk O/E, position.

    ``frame`` has ``technician_id``, the 0/1 ``label`` (NaN = not labelled yet: not counted in
    O *or* E) and the model probability ``prob``.
    """
    lab = frame[frame[label].notna() & frame[prob].notna()]
    g = lab.groupby("technician_id", sort=True)
    tab = pd.DataFrame(
        {
            "labelled": g.size(),
            "observed": g[label].sum().astype(float),
            "expected": g[prob].sum().astype(float),
        }
    )
    if tab.empty:
        return tab
    e = tab["expected"].to_numpy()
    o = tab["observed"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        tab["oe"] = np.where(e > 0, o / e, np.nan)
    for name, cov in (("95", config.warning), ("998", config.alarm)):
        lo, hi = funnel_limits(e, cov)
        tab[f"lo{name}"], tab[f"hi{name}"] = lo, hi
    rbar, a = eb_prior(o, e)
    post = [_shrunk(oi, ei, rbar, a, config.warning) for oi, ei in zip(o, e, strict=True)]
    tab["shrunk_oe"] = [p[0] for p in post]
    tab["shrunk_ci"] = [p[1] for p in post]
    pos = np.full(len(tab), "within", dtype=object)
    pos[(tab["oe"] > tab["hi95"]).to_numpy()] = "above_95"
    pos[(tab["oe"] > tab["hi998"]).to_numpy()] = "above_998"
    pos[(tab["oe"] < tab["lo95"]).to_numpy()] = "below_95"
    pos[(tab["oe"] < tab["lo998"]).to_numpy()] = "below_998"
    pos[(e < config.min_expected)] = "too_few"
    tab["position"] = pos
    tab.attrs["prior"] = {"mean": rbar, "strength": a}
    return tab


def _flag(
    positions: dict[str, str],
    orders: int,
    config: DossierConfig,
    oe: dict[str, float | None] | None = None,
) -> tuple[str, list[str]]:
    """Dossier flag and its reasons from the funnel positions of both outcomes.

    ``excellent`` needs one outcome significantly below expectation *and* every compared
    outcome's O/E at or below ``config.excellent_max_other_oe``.
    """
    zh = {"rework": "返修", "dissatisfaction": "不满意"}
    if orders < config.min_orders or all(p in ("too_few", "none") for p in positions.values()):
        return "too_few", [f"完工{orders}单，预期事件数不足，不作比较"]
    alarm = [k for k, p in positions.items() if p == "above_998"]
    warn = [k for k, p in positions.items() if p == "above_95"]
    good = [k for k, p in positions.items() if p in ("below_95", "below_998")]
    if alarm or len(warn) >= 2:
        return "needs_coaching", [f"{zh[k]}显著高于预期（超出99.8%控制限）" for k in alarm] + [
            f"{zh[k]}高于预期（超出95%控制限）" for k in warn
        ]
    if warn:
        return "watch", [f"{zh[k]}高于预期（超出95%控制限）" for k in warn]
    worse = [
        k
        for k, v in (oe or {}).items()
        if v is not None
        and v > config.excellent_max_other_oe
        and positions.get(k) not in ("too_few", "none")
    ]
    if good and not worse:
        return "excellent", [f"{zh[k]}显著低于预期（低于95%控制限）" for k in good]
    return "as_expected", []


def technician_dossiers(
    orders: pd.DataFrame,
    config: DossierConfig,
    *,
    inspections: pd.DataFrame | None = None,
    appeals: pd.DataFrame | None = None,
    names: Mapping[str, Any] | None = None,
    teams: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The dossier section: one entry per technician plus funnel data.

    Parameters
    ----------
    orders
        Completed orders of the period with ``order_id``, ``technician_id``, ``category``,
        ``priority``, ``rating``, ``complaint``, the labels ``rework``/``dissatisfied`` (NaN =
        not yet known) and the model's ``rework_risk``/``dissatisfaction_prob``.
    inspections
        Inspection results (``order_id``, ``kind``, ``passed``, ``overturned``) of any order;
        results overturned by an upheld appeal are excluded. None: not available.
    appeals
        Appeals with ``technician_id`` (or ``order_id``) and ``status``. None: not available.
    """
    orders = orders[orders["technician_id"].notna()].copy()
    orders["technician_id"] = orders["technician_id"].astype(str)
    comp = {k: compare_outcome(orders, lab, prob, config) for k, (lab, prob) in OUTCOMES.items()}
    insp = None
    if inspections is not None and len(inspections):
        tech_of = orders.set_index("order_id")["technician_id"]
        insp = inspections.assign(technician_id=inspections["order_id"].map(tech_of))
        insp = insp[insp["technician_id"].notna()]
    app = None
    if appeals is not None and len(appeals):
        app = appeals
        if "technician_id" not in app and "order_id" in app:
            app = app.assign(
                technician_id=app["order_id"].map(orders.set_index("order_id")["technician_id"])
            )
    out: dict[str, Any] = {}
    for tech, sub in orders.groupby("technician_id", sort=True):
        n = len(sub)
        # ties by category name: the same three whatever order the orders were read in (a
        # PostgreSQL store returns them in another order than the service's memory)
        shares = sub["category"].astype(str).value_counts(normalize=True).sort_index()
        cats = shares.sort_values(ascending=False, kind="stable").head(3)
        rating = pd.to_numeric(sub["rating"], errors="coerce")
        entry: dict[str, Any] = {
            "name": None if names is None else _s(names.get(tech)),
            "team": None if teams is None else _s(teams.get(tech)),
            "orders": n,
            "mix": {
                "top_categories": {str(k): _r(v, 3) for k, v in cats.items()},
                "emergency_share": _r(float((sub["priority"].astype(str) == "emergency").mean())),
            },
            "satisfaction": {
                "rated": int(rating.notna().sum()),
                "satisfied": int((rating >= 4).sum()),
                "rate": _r(float((rating >= 4).sum() / rating.notna().sum()))
                if rating.notna().any()
                else None,
            },
            "complaints": int(sub["complaint"].fillna(False).astype(bool).sum()),
        }
        positions: dict[str, str] = {}
        for k, tab in comp.items():
            if tech not in tab.index:
                entry[k] = None
                positions[k] = "none"
                continue
            r = tab.loc[tech]
            positions[k] = str(r["position"])
            entry[k] = {
                "labelled": int(r["labelled"]),
                "observed": int(r["observed"]),
                "expected": _r(r["expected"], 3),
                "oe": _r(r["oe"], 3),
                "limits_95": [_r(r["lo95"], 3), _r(r["hi95"], 3)],
                "limits_998": [_r(r["lo998"], 3), _r(r["hi998"], 3)],
                "shrunk_oe": _r(r["shrunk_oe"], 3),
                "shrunk_ci": [_r(v, 3) for v in r["shrunk_ci"]],
                "position": positions[k],
            }
        entry["inspections"] = _inspection_counts(insp, tech)
        entry["appeals"] = _appeal_counts(app, tech)
        if "rework_overridden" in sub:  # labels an upheld appeal set (already in rework/...)
            entry["labels_overridden"] = {
                "rework": int(sub["rework_overridden"].fillna(False).astype(bool).sum()),
                "dissatisfied": int(
                    sub["dissatisfied_overridden"].fillna(False).astype(bool).sum()
                ),
            }
        oe = {k: (entry[k] or {}).get("oe") for k in comp}
        flag, why = _flag(positions, n, config, oe)
        entry["flag"], entry["flag_zh"], entry["flag_reasons"] = flag, FLAG_ZH[flag], why
        entry["note_zh"] = FLAG_NOTE_ZH[flag]
        out[str(tech)] = entry
    return {
        "technicians": out,
        "summary": {f: sum(1 for v in out.values() if v["flag"] == f) for f in FLAG_ZH},
        "prior": {k: _prior(t) for k, t in comp.items()},
        "funnel": {k: _funnel(t, config) for k, t in comp.items()},
        "inspections_available": inspections is not None,
        "appeals_available": appeals is not None,
    }


def _s(v: Any) -> str | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else str(v)


def _prior(tab: pd.DataFrame) -> dict[str, float | None]:
    p = tab.attrs.get("prior", {"mean": None, "strength": None})
    return {"mean": _r(p["mean"]), "strength": _r(p["strength"], 2)}


def _inspection_counts(insp: pd.DataFrame | None, tech: str) -> dict[str, Any] | None:
    if insp is None:
        return None
    sub = insp[insp["technician_id"] == tech]
    over = sub["overturned"].fillna(False).astype(bool) if "overturned" in sub else None
    valid = sub if over is None else sub[~over]
    res: dict[str, Any] = {"overturned_excluded": 0 if over is None else int(over.sum())}
    for kind in ("internal", "third_party"):
        k = valid[valid["kind"].astype(str) == kind]
        passed = k["passed"].astype("boolean")
        res[kind] = {
            "inspected": int(len(k)),
            "failed": int((passed == False).sum()),  # noqa: E712 - nullable boolean
            "pass_rate": _r(float(passed.mean())) if passed.notna().any() else None,
        }
    return res


def _appeal_counts(app: pd.DataFrame | None, tech: str) -> dict[str, Any] | None:
    if app is None:
        return None
    if "technician_id" not in app:
        return None
    sub = app[app["technician_id"].astype(str) == tech]
    st = sub["status"].astype(str) if "status" in sub else pd.Series([], dtype=str)
    out: dict[str, Any] = {
        "filed": int(len(sub)),
        **{str(k): int(v) for k, v in st.value_counts().items()},
    }
    if "target" in sub:  # inspection | rework | dissatisfaction
        out["by_target"] = {str(k): int(v) for k, v in sub["target"].value_counts().items()}
    return out


def _funnel(tab: pd.DataFrame, config: DossierConfig, points: int = 40) -> dict[str, Any]:
    """Points (E, O/E) and the four limit curves on a log grid of E (for the SVG chart)."""
    if tab.empty or tab["expected"].max() <= 0:
        return {"points": [], "curves": {}}
    e_max = float(tab["expected"].max()) * 1.1
    grid = np.geomspace(max(0.2, config.min_expected / 2), max(e_max, 1.0), points)
    curves: dict[str, list[float | None]] = {"expected": [_r(v, 3) for v in grid]}
    for name, cov in (("95", config.warning), ("998", config.alarm)):
        lo, hi = funnel_limits(grid, cov)
        curves[f"lo{name}"] = [_r(v, 3) for v in lo]
        curves[f"hi{name}"] = [_r(v, 3) for v in hi]
    pts = [
        {
            "technician_id": str(t),
            "expected": _r(r["expected"], 3),
            "oe": _r(r["oe"], 3),
            "position": str(r["position"]),
        }
        for t, r in tab.iterrows()
        if r["expected"] > 0
    ]
    return {"points": pts, "curves": curves, "overall_oe": _prior(tab)["mean"]}
