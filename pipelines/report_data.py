"""What the improvement report's sections read, from either source, in one shape.

* **Contract files** (the DVC stage): orders/technicians/units as validated, labels from
  ``models.labels`` with the overrides of ``label_overrides.csv`` next to the orders file (upheld
  appeals, written by ``repairqc export``) when it is there, scores from a model directory
  (``--model-dir``) or the registry's champion, and the third-party draw *reproduced* with the
  same policy and secret as the service (``models.sampling``), so that the estimates can be
  checked against the population truth the labels give.
* **The service's store**: the recorded decisions (score, π, draw) — never recomputed, they are
  what the quality team acted on — plus outcomes, inspection results, rectification items and
  appeals; the labels with the overrides of the upheld label appeals
  (``store.label_overrides_frame``). Model features (drivers, drift) come from a model when one
  is at hand (the service's own, or the champion for the CLI); otherwise those sections say so.

A store method that does not exist yet (the quality loop is built concurrently) or a source
without a table gives ``None`` and a note: sections print "no data in this source", never
invented numbers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models import sampling as S
from models.kpis import period_bounds
from models.labels import LabelConfig, label_orders

log = logging.getLogger(__name__)

#: Default policy file of the service (the same file the API loads).
POLICY_PATH = Path(__file__).resolve().parents[1] / "serving" / "policy.yaml"
#: Completed orders of the drift reference window scored at most (deterministic sample).
MAX_REFERENCE_ORDERS = 3000


@dataclass
class ReportInputs:
    """Everything the sections read (see the module docstring for the two sources)."""

    source: str
    orders: pd.DataFrame
    technicians: pd.DataFrame | None
    units: pd.DataFrame | None
    labels: pd.DataFrame
    #: Scored completed orders (index ``order_id``): ``rework_risk``, ``dissatisfaction_prob``,
    #: ``risk_level``, ``pi``, ``sampled``; current and previous period.
    scored: pd.DataFrame | None = None
    #: Model features of the scored orders (index ``order_id``) and of the drift reference.
    features: pd.DataFrame | None = None
    reference_features: pd.DataFrame | None = None
    reference_window: dict[str, str] | None = None
    model: Any = None
    #: Store mode: the reasons recorded with each decision (index ``order_id``).
    stored_reasons: pd.Series | None = None
    inspections: pd.DataFrame | None = None
    appeals: pd.DataFrame | None = None
    rectifications: pd.DataFrame | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def load_policy(path: Path = POLICY_PATH) -> S.Policy:
    """The inspection/sampling policy (strictly validated)."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        return S.Policy.from_dict(yaml.safe_load(fh))


def sampling_secret() -> tuple[bytes, str]:
    """``REPAIRQC_SAMPLING_SECRET``, else the service's public dev secret (said in the report).

    Reproducing the draw needs the secret the service used; with the dev secret the reproduced
    sample matches a dev-mode service (what ``make run`` starts).
    """
    from serving.config import DEV_SECRET

    env = os.environ.get("REPAIRQC_SAMPLING_SECRET", "")
    if env:
        return env.encode(), "REPAIRQC_SAMPLING_SECRET"
    return DEV_SECRET.encode(), "dev (public secret of REPAIRQC_DEV_MODE)"


def _labels(
    orders: pd.DataFrame, label_config: LabelConfig, overrides: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Both labels (with ``overrides`` applied) and whether each was overridden."""
    lab = label_orders(orders, label_config, overrides=overrides)
    out = lab[["rework", "dissatisfied"]].astype(float)
    for c in ("rework_overridden", "dissatisfied_overridden"):
        out[c] = lab[c].astype(bool)
    out.attrs["overrides_unmatched"] = int(lab.attrs.get("overrides_unmatched", 0))
    return out


def contract_overrides(orders_path: Path | None) -> tuple[pd.DataFrame | None, Path | None]:
    """``label_overrides.csv`` beside the orders file, validated, and its path (None if absent)."""
    from models.labels import LABEL_OVERRIDES_FILE
    from pipelines.label import read_label_overrides

    if orders_path is None:
        return None, None
    path = Path(orders_path).parent / LABEL_OVERRIDES_FILE
    if not path.is_file():
        return None, None
    return read_label_overrides(path), path


def _windows(
    orders: pd.DataFrame,
    t0: pd.Timestamp,
    t1: pd.Timestamp,
    reference_months: int,
    score_from: pd.Timestamp | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Completed orders to score, and of the drift reference window.

    Scored: from the previous period's start (or ``score_from`` if earlier) to ``t1``.
    Reference: the ``reference_months`` before the previous period (at most
    ``MAX_REFERENCE_ORDERS``, a fixed-seed sample).
    """
    p0, _ = period_bounds(t0, t1)
    s0 = p0 if score_from is None else min(p0, score_from)
    rep = orders["reported_at"]
    done = (orders["status"].astype(str) == "completed").to_numpy() & orders[
        "completed_at"
    ].notna().to_numpy()
    scored = done & ((rep >= s0) & (rep < t1)).to_numpy()
    r0 = t0 - pd.DateOffset(months=reference_months)
    ref = done & ((rep >= r0) & (rep < p0)).to_numpy()
    idx = np.flatnonzero(ref)
    if len(idx) > MAX_REFERENCE_ORDERS:
        idx = np.sort(np.random.default_rng(0).choice(idx, MAX_REFERENCE_ORDERS, replace=False))
    window = {"from": r0.isoformat(), "to": p0.isoformat()}
    return np.flatnonzero(scored), idx, window


def _score(model: Any, history: Any, orders: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features as of completion and both heads' probabilities, indexed by ``order_id``."""
    from models.estimators import HEADS
    from models.features import features_for

    feats = features_for(history, orders)
    feats.index = orders["order_id"].astype(str).to_numpy()
    X = feats[model.feature_names]
    scores = pd.DataFrame(index=feats.index)
    for head, col in HEADS.items():
        scores[col] = model.heads[head].predict_proba(X) if len(X) else np.array([])
    # the scores ride along with the features: their drift is watched like an input's
    out = feats.assign(**{c: scores[c].to_numpy() for c in scores})
    for col, p in casemix_scores(model, X).items():
        out[f"{CASEMIX_PREFIX}{col}"] = p
    return out, scores


#: Prefix of the case-mix expected probabilities in the features frame.
CASEMIX_PREFIX = "casemix_"
#: Features describing the technician rather than the job (neutralised for case-mix).
TECH_PREFIX = "tech_"


def casemix_scores(model: Any, X: pd.DataFrame) -> dict[str, np.ndarray]:
    """Both heads' probabilities with every technician feature set to the typical value.

    The dossiers' expected counts must adjust for the *job* (home, fault, timing, resident)
    but not for the technician: the model also reads the technician's own track record
    (``tech_*``: past rework rate, O/E, certification…), so its plain score already expects
    more reworks from a technician who reworked a lot, and observed/expected would hide exactly
    what the dossier is for. Replacing those features by their median over the scored orders
    asks "what would a typical technician have produced on these jobs?".
    """
    from models.estimators import HEADS

    if not len(X):
        return {col: np.array([]) for col in HEADS.values()}
    Xn = X.copy()
    for c in [c for c in X.columns if c.startswith(TECH_PREFIX)]:
        s = Xn[c]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            Xn[c] = float(np.nanmedian(s.to_numpy(dtype=float))) if s.notna().any() else np.nan
        else:
            mode = s.mode(dropna=True)
            Xn[c] = mode.iloc[0] if len(mode) else s.iloc[0]
            Xn[c] = Xn[c].astype(s.dtype)
    return {col: model.heads[head].predict_proba(Xn) for head, col in HEADS.items()}


def _draw(scores: pd.DataFrame, policy: S.Policy, secret: bytes) -> pd.DataFrame:
    levels = S.risk_level({c: scores[c].to_numpy() for c in S.SCORE_COLUMNS}, policy.risk_levels)
    pi = S.inclusion_probabilities(levels, policy.sampling)
    _, sampled = S.draw(secret, list(scores.index), pi)
    return scores.assign(risk_level=levels, pi=pi, sampled=sampled)


def load_model(model_dir: Path | None) -> tuple[Any, str]:
    """The model of ``--model-dir``, else the registry's champion (lazy mlflow import)."""
    from serving.model_source import load_from_dir, load_from_registry

    if model_dir is not None:
        model, ident = load_from_dir(Path(model_dir), "repairqc-risk")
    else:
        import sqlalchemy as sa

        from models.registry import CHAMPION, MODEL_NAME, tracking_uri

        uri = tracking_uri()
        if uri.startswith("sqlite"):
            db = sa.engine.make_url(uri).database
            if not db or not Path(db).exists():  # never create an empty registry by reading
                raise FileNotFoundError(f"no model registry at {uri}; pass --model-dir")
        model, ident = load_from_registry(MODEL_NAME, CHAMPION)
    return model, ident.source


def _out_of_sample(
    model: Any, where: str, model_dir: Path, orders: pd.DataFrame, cur: np.ndarray, notes: list
) -> tuple[Any, str]:
    """The heads that had not learnt from the scored orders (the report's scores as given then).

    See :func:`models.registry.model_for_period`; a note when no such heads are in the directory.
    """
    from models.registry import model_for_period
    from serving.model_source import check_compatible

    first = orders["completed_at"].iloc[cur].min()
    chosen, which = model_for_period(model_dir, first)
    if which == "holdout":
        return check_compatible(chosen), f"{where} (evaluated heads, trained before the period)"
    if which == "in-sample":
        notes.append("模型训练数据覆盖了本期工单：风险分与实际结果的校准是样本内的，偏乐观。")
    return model, where


def contract_inputs(
    orders: pd.DataFrame,
    technicians: pd.DataFrame | None,
    units: pd.DataFrame | None,
    t0: pd.Timestamp,
    t1: pd.Timestamp,
    *,
    label_config: LabelConfig,
    model_dir: Path | None,
    reference_months: int,
    score_from: pd.Timestamp | None = None,
    policy_path: Path = POLICY_PATH,
    overrides: pd.DataFrame | None = None,
) -> ReportInputs:
    """Inputs from validated contract files; scores from ``model_dir`` or the champion.

    ``overrides``: the label overrides (``label_overrides.csv``), applied to the labels.
    """
    inp = ReportInputs(
        source="contract",
        orders=orders,
        technicians=technicians,
        units=units,
        labels=_labels(orders, label_config, overrides),
    )
    inp.notes.append("合同文件来源：无质检结果、整改与申诉记录（这些只在服务的存储中）。")
    try:
        model, where = load_model(model_dir)
    except Exception as exc:  # no model at all: the model-based sections say so
        inp.notes.append(f"无可用模型（{exc}）：模型相关章节无数据。")
        log.warning("report without a model: %s", exc)
        return inp
    inp.model = model
    policy = load_policy(policy_path)
    secret, secret_kind = sampling_secret()
    cur, ref, window = _windows(orders, t0, t1, reference_months, score_from)
    if model_dir is not None and len(cur):
        model, where = _out_of_sample(model, where, Path(model_dir), orders, cur, inp.notes)
        inp.model = model
    history = model.history(orders, technicians, units)
    feats, scores = _score(model, history, orders.iloc[cur])
    inp.features = feats
    inp.scored = _draw(scores, policy, secret)
    if len(ref):
        inp.reference_features, _ = _score(model, history, orders.iloc[ref])
    inp.reference_window = window
    inp.sampling = {
        "model": where,
        "policy_version": policy.version,
        "secret": secret_kind,
        "draw": "reproduced with models.sampling (same policy, secret and order ids as the API)",
    }
    return inp


def _frame(store: Any, method: str, notes: list[str], what: str, **kw: Any) -> Any:
    """``store.<method>(**kw)`` or None with a note when the store does not offer it yet."""
    fn = getattr(store, method, None)
    if fn is None:
        notes.append(f"存储尚未提供{what}（{method}）：本节无数据。")
        return None
    try:
        return fn(**kw)
    except Exception as exc:  # a missing table in an older store
        notes.append(f"读取{what}失败（{exc.__class__.__name__}）：本节无数据。")
        log.warning("store %s failed: %s", method, exc)
        return None


def merge_followups(orders: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Orders with the latest recorded follow-up (rating, complaint, comment) filled in.

    Orders reach the store when they are scored (at completion), before the resident's
    follow-up; the quality loop records it later as an outcome. A value the order already
    carries is kept unless a recorded follow-up gives one (the latest record wins).
    """
    fu = outcomes[outcomes["kind"].astype(str) == "followup"]
    if "is_latest" in fu:
        fu = fu[fu["is_latest"].astype(bool)]
    fu = fu.drop_duplicates("order_id", keep="last").set_index("order_id")
    if not len(fu):
        return orders
    out = orders.copy()
    ids = out["order_id"].astype(str)
    for src, dst in (
        ("rating", "rating"),
        ("complaint", "complaint"),
        ("comment", "feedback_comment"),
    ):
        if src not in fu or dst not in out:
            continue
        new = ids.map(fu[src].dropna())
        has = new.notna().to_numpy()
        if has.any():
            col = out[dst].astype(object)
            col[has] = new[has].to_numpy()
            out[dst] = col.astype(orders[dst].dtype)
    return out


def store_inputs(
    store: Any,
    t0: pd.Timestamp,
    t1: pd.Timestamp,
    *,
    label_config: LabelConfig,
    reference_months: int,
    model: Any = None,
    history: Any = None,
    model_dir: Path | None = None,
    score_from: pd.Timestamp | None = None,
) -> ReportInputs:
    """Inputs from the service's store; decisions give scores, π and the draw.

    ``model``/``history``: the service passes its own (drivers and drift need features);
    the CLI loads ``model_dir`` or the champion when it can, and otherwise says so.
    """
    orders = store.orders_frame()
    notes: list[str] = []
    outcomes = _frame(store, "outcomes_frame", notes, "回访结果")
    if outcomes is not None and len(outcomes):
        orders = merge_followups(orders, outcomes)
    techs = store.side_frame("technicians")
    units = store.side_frame("units")
    overrides = _frame(store, "label_overrides_frame", notes, "申诉改判的标签")
    inp = ReportInputs(
        source="store",
        orders=orders,
        technicians=techs,
        units=units,
        labels=_labels(orders, label_config, overrides),
        notes=notes,
    )
    inp.inspections = _frame(store, "inspections_frame", notes, "质检结果")
    inp.appeals = _frame(store, "appeals_frame", notes, "申诉记录")
    inp.rectifications = _frame(store, "rectifications_frame", notes, "整改事项")
    # only decisions of orders completed from the window's start (an order completes after
    # its report): reading every decision of a multi-year store costs seconds
    p0, _ = period_bounds(t0, t1)
    s0 = p0 if score_from is None else min(p0, score_from)
    dec = _frame(store, "decisions_frame", notes, "评分决定", start=s0)
    cur, ref, window = _windows(orders, t0, t1, reference_months, score_from)
    inp.reference_window = window
    if dec is not None and len(dec):
        # one decision per order (the store keeps the latest: a re-score keeps the draw u)
        dec = dec.sort_values("created_at").drop_duplicates("order_id", keep="last")
        dec = dec.set_index(dec["order_id"].astype(str))
        ids = orders["order_id"].astype(str).to_numpy()[cur]
        have = [i for i in ids if i in dec.index]
        if len(have) < len(ids):
            notes.append(
                f"{len(ids) - len(have)} 张完工单没有评分决定（未经评分服务），"
                "不计入抽样总体与档案。"
            )
        d = dec.loc[have]
        inp.scored = pd.DataFrame(
            {
                "rework_risk": d["rework_risk"].astype(float),
                "dissatisfaction_prob": d["dissatisfaction_prob"].astype(float),
                "risk_level": d["risk_level"].astype(str),
                "pi": d["inclusion_probability"].astype(float),
                "sampled": d["third_party_sample"].astype(bool),
            }
        )
        if "reasons" in d:
            inp.stored_reasons = d["reasons"]
        policies = sorted(set(d["policy_version"].astype(str))) if "policy_version" in d else []
        inp.sampling = {
            "model": sorted(set(d["model_version"].astype(str))) if "model_version" in d else None,
            "policy_version": policies,
            "secret": "as recorded by the service",
            "draw": "recorded decisions (π and draw as given at scoring time)",
        }
    elif dec is not None:
        notes.append("存储中没有评分决定：抽样估计、档案对比与模型健康无数据。")
    if model is None:
        try:
            model, _ = load_model(model_dir)
            history = None
        except Exception as exc:
            notes.append(f"无可用模型（{exc.__class__.__name__}）：风险驱动因素与输入漂移无数据。")
    if model is not None and len(cur):
        inp.model = model
        if history is None:
            history = model.history(orders, techs, units)
        inp.features, _ = _score(model, history, orders.iloc[cur])
        if len(ref):
            inp.reference_features, _ = _score(model, history, orders.iloc[ref])
    return inp
