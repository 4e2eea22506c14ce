"""Inspection policy and third-party sampling: pure functions, no I/O.

Two different mechanisms decide which completed orders get a second look, and they must not be
confused:

* **Mandatory inspection (内部质检)** is *targeted*: the quality mechanism's hard rules (fire
  safety, uncertified technician, rework orders, recent complaints, night/holiday emergencies)
  and the model's risk signals choose the orders most worth a visit. Estimates from these orders
  are biased by design.
* **Third-party sampling (第三方抽检)** is *probability sampling*: every order has a known
  inclusion probability π = clip(base × weight(risk level), π_min, 1) and is drawn independently
  (Poisson sampling). Because π_min > 0, every order can be drawn, and the Horvitz–Thompson
  estimator Σ y/π over the sample is unbiased for the population total — this is what lets the
  quality loop report population rates although the sample leans toward risky orders.

The draw is ``HMAC-SHA256(secret, domain | order_id)`` read as a uniform number in [0, 1) and
compared with π: reproducible for an auditor who holds the secret, unpredictable (and therefore
not gameable) for a technician or a site manager who does not. Keying on the order id alone
(not on its content or on the model) means that re-sending or re-scoring an order never re-rolls
its draw; only π can move.

All tunable numbers live in the policy file (``serving/policy.yaml``), parsed strictly by
:meth:`Policy.from_dict` so that a typo is an error rather than a silently ignored key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np

from models.schemas import CATEGORIES, PRIORITIES

#: Risk levels, from least to most risky (their order is the ordinal used by ``risk_level``).
RISK_LEVELS: tuple[str, ...] = ("low", "medium", "high")

#: Score columns of the two heads (``models.estimators.HEADS`` values), the keys of thresholds.
SCORE_COLUMNS: tuple[str, ...] = ("rework_risk", "dissatisfaction_prob")

#: Hash domains: separate draws for separate purposes, so one never predicts the other.
SAMPLE_DOMAIN = "third_party_sample"
SPOT_CHECK_DOMAIN = "emergency_spot_check"

#: Every inspection reason code with its business wording (Chinese) — one declaration, used by
#: the API, the audit store and the docs. Model reasons are formatted with the score and bound.
INSPECTION_REASONS: dict[str, str] = {
    "fire_safety": "消防类工单必检",
    "emergency_off_hours": "夜间/节假日特急工单抽检",
    "uncertified_technician": "维修人员无该类别持证",
    "rework_order": "本单为返修单",
    "unit_complaint_recent": "该户近{days:g}天内有投诉",
    "model_rework_risk": "模型返修风险{value:.0%}≥阈值{bound:.0%}",
    "model_dissatisfaction": "模型不满意概率{value:.0%}≥阈值{bound:.0%}",
    "model_capacity": "模型风险位列本小区当日前{k}名",
}

_U64 = float(2**64)


class PolicyError(ValueError):
    """The policy file is invalid (unknown key, bad value, inconsistent thresholds)."""


def _strict(cls: type, d: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """Copy ``d`` and refuse keys that ``cls`` does not declare (typos must not pass silently)."""
    d = dict(d or {})
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {sorted(unknown)}")
    return d


@dataclass(frozen=True)
class RiskLevels:
    """Score bounds of the ``medium`` and ``high`` levels, per head.

    An order's level is the highest level any head reaches: an order likely to be reworked is
    risky even when the resident is unlikely to complain, and vice versa.
    """

    medium: dict[str, float] = field(
        default_factory=lambda: {"rework_risk": 0.15, "dissatisfaction_prob": 0.20}
    )
    high: dict[str, float] = field(
        default_factory=lambda: {"rework_risk": 0.30, "dissatisfaction_prob": 0.40}
    )

    def __post_init__(self) -> None:
        for name in ("medium", "high"):
            bounds = getattr(self, name)
            if set(bounds) != set(SCORE_COLUMNS):
                raise PolicyError(f"risk_levels.{name}: needs exactly {list(SCORE_COLUMNS)}")
            if not all(0.0 < float(v) <= 1.0 for v in bounds.values()):
                raise PolicyError(f"risk_levels.{name}: bounds must be in (0, 1]")
        if any(self.high[c] < self.medium[c] for c in SCORE_COLUMNS):
            raise PolicyError("risk_levels: a high bound is below its medium bound")


@dataclass(frozen=True)
class ModelFlags:
    """How the model's scores raise a mandatory inspection.

    Attributes
    ----------
    mode
        ``"threshold"``: flag when a head's score reaches its threshold. ``"capacity"``: the
        inspection team of a community can visit ``capacity_per_community_day`` orders a day;
        orders arrive one by one, so the first orders of the day at or above
        ``capacity_min_risk`` take the slots (an online top-k: the future of the day is unknown
        when an order is completed, and a decision must not change after it was given).
    thresholds
        Per head, the score at or above which the order is flagged (threshold mode).
    capacity_per_community_day, capacity_min_risk
        Slots per community per local day and the lowest max-head score worth a slot.
    """

    mode: Literal["threshold", "capacity"] = "threshold"
    thresholds: dict[str, float] = field(
        default_factory=lambda: {"rework_risk": 0.35, "dissatisfaction_prob": 0.45}
    )
    capacity_per_community_day: int = 3
    capacity_min_risk: float = 0.2

    def __post_init__(self) -> None:
        if self.mode not in ("threshold", "capacity"):
            raise PolicyError(f"model_flags.mode: {self.mode!r} is not threshold or capacity")
        if set(self.thresholds) != set(SCORE_COLUMNS):
            raise PolicyError(f"model_flags.thresholds: needs exactly {list(SCORE_COLUMNS)}")
        if self.capacity_per_community_day < 0:
            raise PolicyError("model_flags.capacity_per_community_day must be >= 0")


@dataclass(frozen=True)
class HardRules:
    """The quality mechanism's rules (质检制度); each can be switched off, none is a model.

    Attributes
    ----------
    fire_safety
        Fire-safety work is always inspected (life safety, regulatory).
    emergency_off_hours_rate
        Share of emergency orders reported at night or on a statutory holiday that are
        spot-checked (thin staffing, rushed work); 0 switches the rule off, 1 checks all.
    uncertified_technician
        The technician holds no certification for the order's category.
    rework_order
        The order is itself a rework: it names a parent order, or the same home reported the
        same category within ``rework_window_days`` after a completion.
    rework_window_days
        The window of the rework rule (the label's window by default).
    unit_complaint_days
        A resident complaint on the home within this many days before completion; 0 = off.
    """

    fire_safety: bool = True
    emergency_off_hours_rate: float = 0.5
    uncertified_technician: bool = True
    rework_order: bool = True
    rework_window_days: float = 30.0
    unit_complaint_days: float = 30.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.emergency_off_hours_rate <= 1.0:
            raise PolicyError("hard_rules.emergency_off_hours_rate must be in [0, 1]")
        if self.rework_window_days < 0 or self.unit_complaint_days < 0:
            raise PolicyError("hard_rules: windows must be >= 0 days")


@dataclass(frozen=True)
class SamplingConfig:
    """Third-party Poisson sampling parameters.

    ``base`` is not a parameter: it is solved (:func:`solve_base`) so that the expected number
    of sampled orders in a month, ``expected_monthly_orders × Σ_level share × π(level)``,
    equals ``monthly_budget`` — the contract with the third-party inspector is a budget, not a
    rate.

    Attributes
    ----------
    monthly_budget
        Orders the third party can inspect per month.
    expected_monthly_orders
        Completed orders per month the budget is planned for (from the operation's history).
    pi_min
        Floor of every inclusion probability (> 0: no order is invisible to the estimates,
        and the variance of Σ y/π stays bounded).
    level_weights
        Relative weight of each risk level: risky orders are sampled more often, which lowers
        the variance of the estimated defect rate because defects concentrate there.
    reference_level_shares
        Expected share of each level among completed orders (planning input of the solve).
    """

    monthly_budget: float = 300.0
    expected_monthly_orders: float = 4000.0
    pi_min: float = 0.01
    level_weights: dict[str, float] = field(
        default_factory=lambda: {"low": 1.0, "medium": 2.0, "high": 4.0}
    )
    reference_level_shares: dict[str, float] = field(
        default_factory=lambda: {"low": 0.7, "medium": 0.2, "high": 0.1}
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.pi_min <= 1.0:
            raise PolicyError("sampling.pi_min must be in (0, 1]")
        if self.monthly_budget <= 0 or self.expected_monthly_orders <= 0:
            raise PolicyError("sampling: budget and expected orders must be > 0")
        for name in ("level_weights", "reference_level_shares"):
            d = getattr(self, name)
            if set(d) != set(RISK_LEVELS) or any(float(v) < 0 for v in d.values()):
                raise PolicyError(f"sampling.{name}: needs non-negative {list(RISK_LEVELS)}")
        if not np.isclose(sum(self.reference_level_shares.values()), 1.0, atol=1e-6):
            raise PolicyError("sampling.reference_level_shares must sum to 1")
        if self.monthly_budget > self.expected_monthly_orders:
            raise PolicyError("sampling.monthly_budget exceeds expected_monthly_orders")

    @property
    def base(self) -> float:
        """The solved base probability (see :func:`solve_base`)."""
        return solve_base(self)


#: Contract categories and priorities: the keys the queue's severity needs (declared once).
_CATEGORIES = CATEGORIES
_PRIORITIES = PRIORITIES


@dataclass(frozen=True)
class InspectionQueue:
    """How the quality team works the flagged orders (质检任务队列); never changes a decision.

    Orders flagged for mandatory inspection are ranked by *expected harm* =
    max(rework_risk, dissatisfaction_prob) × severity, where severity =
    ``category_severity[category] × priority_factor[priority]``: a likely-bad fire-safety or
    waterproofing job hurts more than a likely-bad light bulb, so it is visited first.

    Attributes
    ----------
    capacity_per_community_day
        Inspections a community's quality team can do per day: the queue lists this many.
    deadline_hours
        Per priority, hours after completion by which the inspection must be done (then overdue).
    carry_over_days
        Flagged orders completed up to this many days before the queue's date that are still
        not inspected stay in the queue (overdue work is not forgotten at midnight).
    category_severity, priority_factor
        The severity weights; every contract category / priority must be given (> 0).
    """

    capacity_per_community_day: int = 5
    deadline_hours: dict[str, float] = field(
        default_factory=lambda: {"normal": 72.0, "urgent": 48.0, "emergency": 24.0}
    )
    carry_over_days: int = 7
    category_severity: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(_CATEGORIES, 1.0)
    )
    priority_factor: dict[str, float] = field(
        default_factory=lambda: {"normal": 1.0, "urgent": 1.5, "emergency": 2.0}
    )

    def __post_init__(self) -> None:
        if self.capacity_per_community_day < 0 or self.carry_over_days < 0:
            raise PolicyError("inspection_queue: capacity and carry_over_days must be >= 0")
        for name, keys in (
            ("deadline_hours", _PRIORITIES),
            ("category_severity", _CATEGORIES),
            ("priority_factor", _PRIORITIES),
        ):
            d = getattr(self, name)
            if not isinstance(d, dict) or set(d) != set(keys):
                missing = sorted(set(keys) - set(d or {}))
                extra = sorted(set(d or {}) - set(keys))
                raise PolicyError(
                    f"inspection_queue.{name}: needs exactly {list(keys)}"
                    + (f" (missing {missing})" if missing else "")
                    + (f" (unknown {extra})" if extra else "")
                )
            if not all(isinstance(v, int | float) and float(v) > 0 for v in d.values()):
                raise PolicyError(f"inspection_queue.{name}: values must be numbers > 0")

    def severity(self, category: str, priority: str) -> float:
        """Severity of a bad job of this category and priority (unknown values weigh 1)."""
        return float(self.category_severity.get(category, 1.0)) * float(
            self.priority_factor.get(priority, 1.0)
        )


#: Longest policy ``version``: it is stored with every decision in a ``String`` column of this
#: length (PostgreSQL enforces it), so a longer one is refused when the policy is loaded instead
#: of failing every score afterwards.
POLICY_VERSION_LENGTH = 64


@dataclass(frozen=True)
class Policy:
    """The whole inspection policy; ``version`` is stored with every decision."""

    version: str
    risk_levels: RiskLevels = field(default_factory=RiskLevels)
    model_flags: ModelFlags = field(default_factory=ModelFlags)
    hard_rules: HardRules = field(default_factory=HardRules)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    inspection_queue: InspectionQueue = field(default_factory=InspectionQueue)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Policy:
        """Build and validate a policy from its YAML mapping; unknown keys are errors."""
        top = _strict(cls, d, "policy")
        if not str(top.get("version") or "").strip():
            raise PolicyError("policy: a non-empty version is required")
        if len(str(top["version"])) > POLICY_VERSION_LENGTH:
            raise PolicyError(
                f"policy.version: at most {POLICY_VERSION_LENGTH} characters "
                f"(got {len(str(top['version']))}); it is stored with every decision"
            )
        parts: dict[str, Any] = {"version": str(top["version"])}
        for name, sub in (
            ("risk_levels", RiskLevels),
            ("model_flags", ModelFlags),
            ("hard_rules", HardRules),
            ("sampling", SamplingConfig),
            ("inspection_queue", InspectionQueue),
        ):
            try:
                parts[name] = sub(**_strict(sub, top.get(name), name))
            except TypeError as exc:  # wrong value type in a field
                raise PolicyError(f"{name}: {exc}") from exc
        return cls(**parts)


# --------------------------------------------------------------------------------------------
# Risk level and inclusion probabilities
# --------------------------------------------------------------------------------------------


def risk_level(scores: Mapping[str, np.ndarray], levels: RiskLevels) -> np.ndarray:
    """Level per order (object array of ``low``/``medium``/``high``): the max over heads."""
    n = len(np.asarray(scores[SCORE_COLUMNS[0]]))
    ordinal = np.zeros(n, dtype=np.int64)
    for col in SCORE_COLUMNS:
        s = np.asarray(scores[col], dtype=float)
        ordinal = np.maximum(ordinal, (s >= levels.medium[col]).astype(np.int64))
        ordinal = np.maximum(ordinal, 2 * (s >= levels.high[col]).astype(np.int64))
    return np.asarray(RISK_LEVELS, dtype=object)[ordinal]


def _expected_rate(base: float, cfg: SamplingConfig) -> float:
    """Expected sampling rate per order for a given base (planning mix of levels)."""
    return sum(
        share * float(np.clip(base * cfg.level_weights[lvl], cfg.pi_min, 1.0))
        for lvl, share in cfg.reference_level_shares.items()
    )


def solve_base(cfg: SamplingConfig, tol: float = 1e-12) -> float:
    """The base with ``expected_monthly_orders × E[π] = monthly_budget`` (bisection).

    E[π] is continuous and non-decreasing in the base, so bisection converges; when even
    π = π_min everywhere exceeds the budget, the floor wins (every order must stay drawable)
    and the smallest base is returned.
    """
    target = cfg.monthly_budget / cfg.expected_monthly_orders
    lo, hi = 0.0, 1.0 / max(min(w for w in cfg.level_weights.values() if w > 0), 1e-12)
    if _expected_rate(lo, cfg) >= target:
        return lo
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if _expected_rate(mid, cfg) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < tol:
            break
    return hi


def inclusion_probabilities(
    levels: Sequence[str] | np.ndarray, cfg: SamplingConfig, base: float | None = None
) -> np.ndarray:
    """π = clip(base × weight(level), π_min, 1) per order."""
    b = solve_base(cfg) if base is None else base
    w = np.array([cfg.level_weights[str(lv)] for lv in levels], dtype=float)
    return np.clip(b * w, cfg.pi_min, 1.0)


# --------------------------------------------------------------------------------------------
# Keyed draws
# --------------------------------------------------------------------------------------------


def keyed_uniform(secret: bytes, key: str, domain: str = SAMPLE_DOMAIN) -> float:
    """Uniform number in [0, 1) from ``HMAC-SHA256(secret, domain | key)``.

    The first 8 bytes of the MAC as an unsigned integer over 2**64: without the secret the
    value is unpredictable; with it, anyone can recompute it (audit).
    """
    mac = hmac.new(secret, f"{domain}|{key}".encode(), hashlib.sha256).digest()
    return int.from_bytes(mac[:8], "big") / _U64


def keyed_uniforms(secret: bytes, keys: Iterable[Any], domain: str = SAMPLE_DOMAIN) -> list[float]:
    """``[keyed_uniform(secret, str(k), domain) for k in keys]``, ~3x faster.

    Why: ``hmac.new`` pads the key and starts both hashes for every message; here that keyed
    state is made once and copied per key (the same MAC: HMAC's inner and outer hashes of
    the padded key are independent of the message).
    """
    keyed = hmac.new(secret, b"", hashlib.sha256)
    copy, prefix, u64 = keyed.copy, f"{domain}|", _U64
    out = []
    for k in keys:
        h = copy()
        h.update(f"{prefix}{k}".encode())
        out.append(int.from_bytes(h.digest()[:8], "big") / u64)
    return out


def draw(
    secret: bytes, order_ids: Sequence[str], pi: np.ndarray, domain: str = SAMPLE_DOMAIN
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson draw: ``(u, sampled)`` with ``sampled = u < π`` per order."""
    u = np.array(keyed_uniforms(secret, order_ids, domain), dtype=float)
    return u, u < np.asarray(pi, dtype=float)


# --------------------------------------------------------------------------------------------
# Mandatory inspection
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderFacts:
    """What the hard rules look at, one array per fact (aligned with the scored orders).

    Taken from the as-of features where they exist (night / holiday / certification / repeat
    timing come from ``models.features``, declared once there) and from the order itself.
    ``tech_certified`` is NaN when the technician is unknown: no rule fires on missing facts.
    """

    order_ids: np.ndarray
    category: np.ndarray
    priority: np.ndarray
    report_night: np.ndarray
    report_holiday: np.ndarray
    tech_certified: np.ndarray
    has_parent: np.ndarray
    days_since_unit_cat_done: np.ndarray
    days_since_unit_complaint: np.ndarray


def hard_rule_reasons(facts: OrderFacts, rules: HardRules, secret: bytes) -> list[list[str]]:
    """Codes of the hard rules that fire, per order (empty list: none).

    Each rule is one vectorised test; a firing order gets the codes in the rules' order
    (fire safety, emergency off hours, uncertified technician, rework order, unit complaint).
    The emergency spot check draws its keyed number only for emergencies at night or on a
    holiday.
    """
    n = len(facts.order_ids)
    out: list[list[str]] = [[] for _ in range(n)]
    night_or_holiday = (np.nan_to_num(facts.report_night) > 0) | (
        np.nan_to_num(facts.report_holiday) > 0
    )
    none = np.zeros(n, dtype=bool)
    fire = (np.asarray(facts.category) == "fire_safety") if rules.fire_safety else none
    emergency = none
    if rules.emergency_off_hours_rate > 0:
        emergency = (np.asarray(facts.priority) == "emergency") & night_or_holiday
        at = np.flatnonzero(emergency)
        u = keyed_uniforms(secret, (facts.order_ids[i] for i in at), SPOT_CHECK_DOMAIN)
        emergency = none.copy()
        emergency[at] = np.array(u, dtype=float) < rules.emergency_off_hours_rate
    uncertified = none
    if rules.uncertified_technician:
        uncertified = np.asarray(facts.tech_certified, dtype=float) == 0
    rework = none
    if rules.rework_order:
        d = np.asarray(facts.days_since_unit_cat_done, dtype=float)
        with np.errstate(invalid="ignore"):  # NaN: no earlier order, never within the window
            rework = np.asarray(facts.has_parent, dtype=bool) | (d <= rules.rework_window_days)
    complaint = none
    if rules.unit_complaint_days > 0:
        c = np.asarray(facts.days_since_unit_complaint, dtype=float)
        with np.errstate(invalid="ignore"):
            complaint = c <= rules.unit_complaint_days
    for code, hit in (
        ("fire_safety", fire),
        ("emergency_off_hours", emergency),
        ("uncertified_technician", uncertified),
        ("rework_order", rework),
        ("unit_complaint_recent", complaint),
    ):
        for i in np.flatnonzero(hit).tolist():
            out[i].append(code)
    return out


def model_threshold_reasons(scores: Mapping[str, np.ndarray], flags: ModelFlags) -> list[list[str]]:
    """Codes of the model signals at or above their threshold (threshold mode)."""
    code = {"rework_risk": "model_rework_risk", "dissatisfaction_prob": "model_dissatisfaction"}
    n = len(np.asarray(scores[SCORE_COLUMNS[0]]))
    out: list[list[str]] = [[] for _ in range(n)]
    for col in SCORE_COLUMNS:
        hit = np.asarray(scores[col], dtype=float) >= flags.thresholds[col]
        for i in np.flatnonzero(hit):
            out[i].append(code[col])
    return out


def capacity_flags(max_risk: np.ndarray, slots_used: np.ndarray, flags: ModelFlags) -> np.ndarray:
    """Online capacity mode: flag while slots remain and the risk is worth a slot.

    ``slots_used`` is, per order, the number of slots of its community-day already taken
    *before it* (the caller counts orders of the same batch in arrival order).
    """
    return (np.asarray(max_risk) >= flags.capacity_min_risk) & (
        np.asarray(slots_used) < flags.capacity_per_community_day
    )


def reason_text(code: str, **values: Any) -> str:
    """Business wording of an inspection reason code (values fill the template)."""
    template = INSPECTION_REASONS[code]
    try:
        return template.format(**values)
    except (KeyError, ValueError):
        return template


# --------------------------------------------------------------------------------------------
# Unbiased estimation from the sample (Horvitz–Thompson)
# --------------------------------------------------------------------------------------------


def ht_total(y: np.ndarray, pi: np.ndarray) -> float:
    """Horvitz–Thompson estimate of the population total of ``y`` from sampled units.

    Unbiased under Poisson sampling because each sampled unit stands for 1/π units.
    """
    y = np.asarray(y, dtype=float)
    pi = np.asarray(pi, dtype=float)
    if np.any(pi <= 0):
        raise ValueError("inclusion probabilities must be > 0")
    return float(np.sum(y / pi))


def ht_variance(y: np.ndarray, pi: np.ndarray) -> float:
    """Unbiased variance estimate of :func:`ht_total` under Poisson sampling: Σ (1-π) y² / π²."""
    y = np.asarray(y, dtype=float)
    pi = np.asarray(pi, dtype=float)
    return float(np.sum((1.0 - pi) * y**2 / pi**2))


def hajek_mean(y: np.ndarray, pi: np.ndarray) -> float:
    """Population mean (e.g. defect rate) as Σ(y/π) / Σ(1/π).

    The ratio (Hájek) form is preferred to dividing by a known N for Poisson samples: the
    realised sample size is random, and the ratio cancels most of that variability.
    """
    w = 1.0 / np.asarray(pi, dtype=float)
    return float(np.sum(w * np.asarray(y, dtype=float)) / np.sum(w))
