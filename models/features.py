"""As-of features: one builder for training, batch scoring and the API.

Every feature of an order is computed *as of its completion* from what was known then:

* the order's own facts up to ``completed_at`` (never its outcome columns, see
  :data:`models.schemas.OUTCOME_COLUMNS`);
* counts over *earlier* orders, each event counted from the moment it became known: a report at
  ``reported_at``, a completion at ``completed_at``, a rating / comment / complaint at
  ``completed_at + followup_delay``, a rework at the report of the repeat order and a non-rework
  only once its window has closed (``rework_known_at`` from :mod:`models.labels`).

Why one event index instead of rolling windows: all history statistics reduce to "how many events
(and what sum of values) with key *k* happened in ``[t - w, t)``". :class:`EventIndex` answers
that with two ``searchsorted`` calls on a sorted composite key, vectorised over any number of
queries, so training on 1M orders and scoring a single order against a stored history use the
same code path: build a :class:`History` once (``build_history``), then call
:func:`features_for` per batch; the cost per query is a few binary searches.

Self-exclusion is by time, not by id: report-based counts are queried at the order's own
``reported_at`` and completion/outcome-based ones at its ``completed_at``, both strictly before.
Whether the scored order is part of the history frame or not (API) therefore gives the same
features.

Target-derived encodings (technician / resident / community / category rates) are as-of by
construction: they only use labels known strictly before the order's completion and never the
order's own label, which is the time-series form of cross-fitting. They are shrunk toward the
as-of global rate with a pseudo-count so that new technicians do not get extreme rates.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.labels import LabelConfig, label_orders
from models.schemas import AREA_TYPES, CATEGORIES, CHANNELS, ORDERS, PRIORITIES, TIMEZONE

#: ``text_scorer(texts) -> P(positive)`` per text; the sentiment component plugs in here.
TextScorer = Callable[[Sequence[str]], np.ndarray]

_EPOCH = pd.Timestamp(0, tz="UTC")
_EPOCH_DATE = dt.date(1970, 1, 1)
_DAY = 86400.0
_HOUR = 3600.0
#: Bits reserved for seconds in the composite (key, time) sort key: 2**34 s is ~544 years.
_TIME_BITS = 34

#: Categorical feature columns and their fixed levels (from the contract, so that training and
#: scoring agree on the codes without storing a fitted vocabulary).
CATEGORICAL_LEVELS: dict[str, tuple[str, ...]] = {
    "category": CATEGORIES,
    "priority": PRIORITIES,
    "channel": CHANNELS,
    "area_type": AREA_TYPES,
}


@dataclass(frozen=True)
class TextCues:
    """Keyword cues in Chinese descriptions; each list becomes a 0/1 feature ``cue_<name>``.

    A simple, transparent stand-in until the sentiment component's aspect tags are wired in;
    the words are what residents write when a problem recurs, is urgent, or they are annoyed.
    """

    repeat: tuple[str, ...] = (
        "又",
        "再次",
        "还是",
        "反复",
        "第二次",
        "上次",
        "没修好",
        "老问题",
        "老毛病",
        "仍然",
        "第三次",
        "刚修过",
        "跟没修一样",
        "同样的问题",
    )
    urgent: tuple[str, ...] = ("严重", "急", "马上", "赶紧", "淹", "冒烟", "漏电", "困人")
    #: how bad the fault is, in the resident's words (``desc_severity``: severe − mild)
    severe: tuple[str, ...] = (
        "严重",
        "厉害",
        "没法用",
        "不能用",
        "用不了",
        "楼下",
        "危险",
        "淹",
        "冒烟",
        "漏电",
        "困人",
        "大面积",
        "影响使用",
        "影响生活",
    )
    mild: tuple[str, ...] = (
        "不急",
        "不着急",
        "不算太急",
        "问题不大",
        "小问题",
        "有空",
        "方便的时候",
        "有时间",
        "不影响",
    )
    annoyed: tuple[str, ...] = ("投诉", "不满", "太慢", "没人", "一直没", "多次", "催", "差")
    positive: tuple[str, ...] = (
        "满意",
        "谢谢",
        "感谢",
        "很好",
        "及时",
        "专业",
        "不错",
        "认真",
        "辛苦",
    )
    negative: tuple[str, ...] = (
        "不满意",
        "差",
        "太慢",
        "敷衍",
        "没修好",
        "态度",
        "投诉",
        "垃圾",
        "失望",
    )


@dataclass(frozen=True)
class FeatureConfig:
    """Parameters of the as-of features (``params.yaml: features``).

    Attributes
    ----------
    followup_delay_hours
        A rating / comment / complaint is known this long after completion (回访 delay).
    rework_window_days
        Rework window of the labels used for past orders' outcomes (same as ``label``).
    history_windows_days
        Look-back windows of the unit and resident order counts.
    recent_days
        Window of the as-of global / category rates (short enough to follow a drifting base
        rate, long enough to be stable).
    prior_strength
        Pseudo-count of the shrinkage of per-technician / resident / community rates toward
        the as-of global rate.
    workload_hours
        Window of the community and technician workload counts.
    min_exposure_days
        Floor of the observed time when turning a unit's order count into a yearly rate (the
        first weeks of a history would otherwise give huge rates).
    proneness_prior
        Pseudo-count (gamma shape) of the unit fault-proneness estimate.
    group_prior
        Pseudo-count (in expected reports) of the fault-proneness of a unit's building and
        cohort (community × building year): groups pool many units, so the prior is stronger.
    unit_rework_prior
        Pseudo-count of the unit's own past rework rate (a home has only a few orders; the
        technicians' / communities' ``prior_strength`` would flatten it to the mean).
    oe_prior
        Pseudo-count (in reworks) of a technician's observed / expected rework ratio.
    arrival_sla_hours
        Response SLA per priority (上门时限): arrival later than this is overdue.
    night_start_hour, night_end_hour
        Local hours counted as night (reports at night get slower, angrier service).
    norm_days, norm_min_jobs
        Window of the repair-time norm per category × parts replaced, and the completed jobs
        it needs before a job is compared with it (``repair_time_z``).
    cues
        Keyword cues of the description.
    """

    followup_delay_hours: float = 72.0
    rework_window_days: float = 30.0
    history_windows_days: tuple[int, ...] = (30, 90, 365)
    recent_days: float = 90.0
    prior_strength: float = 20.0
    workload_hours: float = 24.0
    min_exposure_days: float = 90.0
    proneness_prior: float = 1.5
    group_prior: float = 20.0
    unit_rework_prior: float = 2.0
    oe_prior: float = 5.0
    arrival_sla_hours: dict[str, float] = field(
        default_factory=lambda: {"normal": 24.0, "urgent": 4.0, "emergency": 1.0}
    )
    night_start_hour: int = 22
    night_end_hour: int = 7
    norm_days: float = 365.0
    norm_min_jobs: int = 30
    cues: TextCues = field(default_factory=TextCues)

    @classmethod
    def from_dict(cls, d: dict | None) -> FeatureConfig:
        """Build from a ``params.yaml`` block, ignoring unknown keys would hide typos: refuse."""
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown feature parameters: {sorted(unknown)}")
        if "history_windows_days" in d:
            d["history_windows_days"] = tuple(int(x) for x in d["history_windows_days"])
        if "cues" in d and isinstance(d["cues"], dict):
            d["cues"] = TextCues(**{k: tuple(v) for k, v in d["cues"].items()})
        return cls(**d)

    def label_config(self) -> LabelConfig:
        """The label windows the history's outcomes are derived with."""
        return LabelConfig(
            rework_window_days=self.rework_window_days,
            followup_delay_hours=self.followup_delay_hours,
        )


# --------------------------------------------------------------------------------------------
# Typing helpers
# --------------------------------------------------------------------------------------------


def coerce_orders(orders: pd.DataFrame) -> pd.DataFrame:
    """Return typed contract orders (idempotent on frames ``models.validation`` produced).

    Why here: the pyfunc model and ``mlflow models serve`` receive JSON, where timestamps are
    strings; this gives them the typed-orders format without rejecting rows (validation's job).
    Missing optional columns are added as NA.
    """
    out = orders.copy()
    for c in ORDERS.columns:
        if c.name not in out:
            out[c.name] = pd.NA
        s = out[c.name]
        if c.dtype == "timestamp":
            if not isinstance(s.dtype, pd.DatetimeTZDtype):
                s = pd.to_datetime(s, errors="coerce", format="ISO8601")
                s = s.dt.tz_localize(TIMEZONE) if s.dt.tz is None else s.dt.tz_convert(TIMEZONE)
            out[c.name] = s
        elif c.dtype == "bool":
            if str(s.dtype) != "boolean":
                m = s.map(
                    lambda v: (
                        v
                        if isinstance(v, bool | np.bool_)
                        else {"true": True, "1": True, "false": False, "0": False}.get(
                            str(v).strip().lower(), pd.NA
                        )
                        if v is not None and not (isinstance(v, float) and np.isnan(v))
                        else pd.NA
                    )
                )
                s = m.astype("boolean")
            out[c.name] = s
        elif c.dtype == "int":
            out[c.name] = pd.to_numeric(s, errors="coerce").round().astype("Int64")
        elif c.dtype == "float":
            out[c.name] = pd.to_numeric(s, errors="coerce").astype("float64")
        else:
            out[c.name] = s.astype("string")
    return out


#: Divisor from a datetime column's integer unit to seconds.
_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
_NAT = np.iinfo(np.int64).min
#: Up to this many rows, string work runs as plain Python (pandas' vectorised string kernels
#: have a fixed cost of ~50 us per call, which dominates a single API order).
_SMALL = 64


def _secs(s: pd.Series) -> np.ndarray:
    """Seconds since the epoch (UTC) as float, NaN for missing: unit-agnostic and tz-safe.

    From the column's integers directly (``int / unit``, exactly what pandas' timedelta
    division computes) — the Series arithmetic costs ~40 us per call, too much per API order.
    """
    if not isinstance(s.dtype, pd.DatetimeTZDtype):
        s = pd.to_datetime(s).dt.tz_localize(TIMEZONE)
    i8 = s.array.asi8
    return np.where(i8 == _NAT, np.nan, i8 / _PER_SECOND[s.dtype.unit])


@dataclass(frozen=True)
class _LocalTime:
    """Wall-clock fields of a tz-aware column in :data:`TIMEZONE`, as numpy arrays (NaN = NaT)."""

    hour: np.ndarray
    weekday: np.ndarray
    month: np.ndarray
    year: np.ndarray
    day: np.ndarray  # local day number since 1970-01-01 (int64; meaningless where missing)
    missing: np.ndarray
    midnight: np.ndarray  # epoch seconds of the local midnight starting the day

    @classmethod
    def of(cls, s: pd.Series) -> _LocalTime:
        """Fields from integer arithmetic on local wall-clock time (no pandas accessors)."""
        if not isinstance(s.dtype, pd.DatetimeTZDtype):
            s = pd.to_datetime(s).dt.tz_localize(TIMEZONE)
        arr = s.array.tz_convert(TIMEZONE)
        per = int(_PER_SECOND[s.dtype.unit])
        utc = arr.asi8
        local = arr.tz_localize(None).asi8
        missing = utc == _NAT
        day = np.where(missing, 0, local // (86400 * per))
        month_no = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)

        def nan_where_missing(x: np.ndarray) -> np.ndarray:
            return np.where(missing, np.nan, x.astype(float))

        since_midnight = local - day * (86400 * per)
        return cls(
            hour=nan_where_missing(since_midnight // (3600 * per)),
            weekday=nan_where_missing((day + 3) % 7),  # 1970-01-01 was a Thursday
            month=nan_where_missing(month_no % 12 + 1),
            year=nan_where_missing(month_no // 12 + 1970),
            day=day,
            missing=missing,
            midnight=np.where(missing, np.nan, (utc - since_midnight) / _PER_SECOND[s.dtype.unit]),
        )


def _str(s: pd.Series) -> np.ndarray:
    """Object array of strings with ``None`` for missing (fast factorize / lookup input)."""
    if isinstance(s.dtype, pd.StringDtype):  # already strings: no conversion pass
        return s.to_numpy(dtype=object, na_value=None)
    return s.astype("string").to_numpy(dtype=object, na_value=None)


def _bool(s: pd.Series) -> np.ndarray:
    """Float 1/0/NaN of a nullable boolean column."""
    if isinstance(s.dtype, pd.BooleanDtype):
        return s.to_numpy(dtype="float64", na_value=np.nan)
    return s.astype("boolean").astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def _num(s: pd.Series) -> np.ndarray:
    if s.dtype.kind in "fiu" or isinstance(s.dtype, pd.Int64Dtype | pd.Float64Dtype):
        return s.to_numpy(dtype="float64", na_value=np.nan)
    return (
        pd.to_numeric(s, errors="coerce")
        .astype("Float64")
        .to_numpy(dtype="float64", na_value=np.nan)
    )


@functools.lru_cache(maxsize=64)
def _any_word_re(words: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(w) for w in words))


def _contains_any(texts: pd.Series, words: Sequence[str]) -> np.ndarray:
    """0/1 whether each text contains any of ``words`` (one regex pass, NA → 0)."""
    if not words:
        return np.zeros(len(texts))
    if len(texts) <= _SMALL:  # same literal alternation, searched by Python's re
        rx = _any_word_re(tuple(words))
        return np.array([1.0 if isinstance(t, str) and rx.search(t) else 0.0 for t in _str(texts)])
    pat = "|".join(re.escape(w) for w in words)
    return texts.astype("string").str.contains(pat, regex=True).fillna(False).to_numpy(dtype=float)


def _text_len(texts: pd.Series) -> np.ndarray:
    """Characters per text (NaN missing)."""
    if len(texts) <= _SMALL:
        return np.array([float(len(t)) if isinstance(t, str) else np.nan for t in _str(texts)])
    return texts.astype("string").str.len().to_numpy(dtype=float, na_value=np.nan)


def lexicon_sentiment(texts: Sequence[str] | pd.Series, cues: TextCues | None = None) -> np.ndarray:
    """P(positive) of texts from cue-word counts: the fallback when no text model is given.

    Laplace-smoothed share of positive cue hits among all cue hits, 0.5 with no cue; NaN for
    missing texts. Crude, but monotone in what residents write, and dependency-free.
    """
    cues = cues or TextCues()
    pos_re = re.compile("|".join(re.escape(w) for w in cues.positive))
    neg_re = re.compile("|".join(re.escape(w) for w in cues.negative))
    values = list(texts)
    p = np.full(len(values), np.nan)
    for i, t in enumerate(values):
        if isinstance(t, str):
            pos, neg = len(pos_re.findall(t)), len(neg_re.findall(t))
            p[i] = (pos + 1.0) / (pos + neg + 2.0)
    return p


def _score_texts(texts: pd.Series, scorer: TextScorer | None, cues: TextCues) -> np.ndarray:
    """Apply the text scorer to the non-missing texts only (models are slow; NA stays NaN)."""
    out = np.full(len(texts), np.nan)
    strs = _str(texts)
    present = np.fromiter((t is not None for t in strs), dtype=bool, count=len(strs))
    if not present.any():
        return out
    vals = strs[present].tolist()
    out[present] = np.asarray(
        scorer(vals) if scorer is not None else lexicon_sentiment(vals, cues), dtype=float
    )
    return out


_HOLIDAY_CACHE: dict[object, tuple[float, float]] = {}


def _day_flags(d: dt.date) -> tuple[float, float]:
    """(is_holiday, is_offday) of one date, cached."""
    if d not in _HOLIDAY_CACHE:
        import chinese_calendar

        try:
            is_hol, name = chinese_calendar.get_holiday_detail(d)
            # statutory holiday (not a plain weekend); off-day includes weekends and 调休
            _HOLIDAY_CACHE[d] = (
                float(bool(is_hol) and name is not None),
                float(not chinese_calendar.is_workday(d)),
            )
        except (NotImplementedError, ValueError):
            _HOLIDAY_CACHE[d] = (np.nan, float(d.weekday() >= 5))
    return _HOLIDAY_CACHE[d]


def _calendar_flags(local_dates: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(is_holiday, is_offday) per date from ``chinesecalendar``.

    Holidays and make-up workdays (调休) follow the State Council calendar; years the library
    does not cover fall back to weekends, with holiday unknown (NaN), rather than failing.
    """
    codes, uniq = pd.factorize(local_dates)
    hol = np.empty(len(uniq))
    off = np.empty(len(uniq))
    for i, d in enumerate(uniq):
        hol[i], off[i] = _day_flags(d)
    res_h = np.full(len(local_dates), np.nan)
    res_o = np.full(len(local_dates), np.nan)
    ok = codes >= 0
    res_h[ok] = hol[codes[ok]]
    res_o[ok] = off[codes[ok]]
    return res_h, res_o


def _calendar_flags_local(local: _LocalTime) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_calendar_flags` of the local days of :class:`_LocalTime` (no dates per row)."""
    res_h = np.full(len(local.day), np.nan)
    res_o = np.full(len(local.day), np.nan)
    ok = ~local.missing
    if not ok.any():
        return res_h, res_o
    uniq, inv = np.unique(local.day[ok], return_inverse=True)
    hol = np.empty(len(uniq))
    off = np.empty(len(uniq))
    for i, n in enumerate(uniq.tolist()):
        hol[i], off[i] = _day_flags(_EPOCH_DATE + dt.timedelta(days=n))
    res_h[ok] = hol[inv]
    res_o[ok] = off[inv]
    return res_h, res_o


# --------------------------------------------------------------------------------------------
# Event index
# --------------------------------------------------------------------------------------------


class EventIndex:
    """Events (key, time, values) sorted once; windowed counts and sums per query in O(log n).

    Parameters
    ----------
    keys
        Non-negative integer key per event (rows with a negative key or NaN time are dropped).
    times
        Event time in epoch seconds.
    values
        Named value arrays to sum (e.g. ``pos`` for a rework label); count is always available.
    """

    def __init__(
        self, keys: np.ndarray, times: np.ndarray, values: dict[str, np.ndarray] | None = None
    ):
        keys = np.asarray(keys, dtype=np.int64)
        times = np.asarray(times, dtype=float)
        ok = (keys >= 0) & ~np.isnan(times)
        vals = {k: np.nan_to_num(np.asarray(v, dtype=float)[ok]) for k, v in (values or {}).items()}
        comp = (keys[ok] << _TIME_BITS) + np.clip(times[ok], 0, None).astype(np.int64)
        order = np.argsort(comp, kind="stable")
        if vals and (np.diff(comp[order]) == 0).any():
            # events of one key in the same second (exports rounded to the minute have many)
            # go by their values: the running sums then do not depend on the export's row order
            order = np.lexsort((*(vals[k] for k in sorted(vals, reverse=True)), comp))
        self.comp = comp[order]
        self.times = np.clip(times[ok][order], 0, None).astype(np.int64)
        self.cum = {k: np.concatenate([[0.0], np.cumsum(v[order])]) for k, v in vals.items()}

    def _pos(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        # NaN -> 0 and negative -> 0 in one pass (``nan_to_num`` + ``clip`` cost ~10 us each
        # on a one-row query, and a single order runs ~60 queries)
        t = np.where(times > 0, times, 0.0).astype(np.int64)
        return np.searchsorted(self.comp, (keys << _TIME_BITS) + t, side="left")

    def query(
        self, keys: np.ndarray, times: np.ndarray, window_s: float | np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Count and value sums of events with the query's key and time in ``[t - w, t)``.

        Queries with an unknown key (negative) or missing time get count 0 (and NaN sums are
        avoided: sums are 0 too), which is what "no history" means.
        """
        keys = np.asarray(keys, dtype=np.int64)
        times = np.asarray(times, dtype=float)
        bad = (keys < 0) | np.isnan(times)
        k = np.where(bad, 0, keys)
        hi = self._pos(k, times)
        lo = (
            np.searchsorted(self.comp, k << _TIME_BITS, side="left")
            if window_s is None
            else self._pos(k, times - window_s)
        )
        lo = np.minimum(lo, hi)
        count = np.where(bad, 0, hi - lo).astype(float)
        sums = {name: np.where(bad, 0.0, c[hi] - c[lo]) for name, c in self.cum.items()}
        return count, sums

    def last_time(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Time of the latest event with the key strictly before each query time (NaN if none)."""
        keys = np.asarray(keys, dtype=np.int64)
        times = np.asarray(times, dtype=float)
        bad = (keys < 0) | np.isnan(times)
        k = np.where(bad, 0, keys)
        hi = self._pos(k, times)
        start = np.searchsorted(self.comp, k << _TIME_BITS, side="left")
        has = (hi > start) & ~bad
        out = np.full(len(keys), np.nan)
        out[has] = self.times[hi[has] - 1]
        return out


# --------------------------------------------------------------------------------------------
# History state
# --------------------------------------------------------------------------------------------


@dataclass
class History:
    """Everything the features need from past orders, indexed for cheap as-of lookups.

    Built once from a history of contract orders (``build_history``); then
    :func:`features_for` scores any batch of orders against it. The API keeps one in memory.
    """

    config: FeatureConfig
    vocab: dict[str, pd.Index]
    events: dict[str, EventIndex]
    technicians: pd.DataFrame | None
    units: pd.DataFrame | None
    text_scorer: TextScorer | None = None
    start: float = float("nan")
    #: Per-id arrays of the side tables (built on first use, see :func:`_side_lookups`).
    side: _SideLookups | None = field(default=None, repr=False, compare=False)
    #: Description models learnt from the training labels (``feature name -> scorer``,
    #: :mod:`models.description`), set by the fitted model: each adds its column.
    text_models: dict[str, TextScorer] = field(default_factory=dict)


@dataclass
class _SideLookups:
    """The side-table facts the features read, as arrays aligned with the tables' rows.

    Why: reindexing the technicians / units frames per call costs ~0.2 ms each; one
    ``get_indexer`` per table and array takes cost microseconds. ``None``: no such column.
    """

    tech_index: pd.Index | None
    team: np.ndarray | None  # team code per technician (-1 none)
    team_size: np.ndarray | None
    tech_known: np.ndarray | None
    certs: list[list[str]] | None
    hire: np.ndarray | None  # epoch seconds
    subcontractor: np.ndarray | None
    unit_index: pd.Index | None
    building_year: np.ndarray | None
    floor: np.ndarray | None
    area: np.ndarray | None

    def tech_rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each technician id in the table (-1 unknown or no table)."""
        return _rows(self.tech_index, ids)

    def unit_rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each unit id in the table (-1 unknown or no table)."""
        return _rows(self.unit_index, ids)


def _rows(index: pd.Index | None, ids: np.ndarray) -> np.ndarray:
    if index is None:
        return np.full(len(ids), -1, dtype=np.int64)
    return _codes(ids, index)


def _take(values: np.ndarray | None, rows: np.ndarray, missing: float) -> np.ndarray:
    """``values[rows]`` with ``missing`` for row -1 (or when there are no values)."""
    if values is None or not len(values):
        return np.full(len(rows), missing, dtype=np.int64 if isinstance(missing, int) else float)
    return np.where(rows >= 0, values[np.maximum(rows, 0)], missing)


def _side_lookups(history: History) -> _SideLookups:
    """The history's :class:`_SideLookups`, built once (same values as reindexing per call)."""
    if history.side is not None:
        return history.side
    techs, units = history.technicians, history.units
    tech_index = team = team_size = tech_known = certs = hire = sub = None
    if techs is not None:
        tech_index = techs.index
        tech_known = techs["technician_id"].notna().to_numpy()
        if "team" in techs:
            team_of_tech = techs["team"]
            ids = tech_index.to_numpy(dtype=object)
            team = _team_codes(ids, team_of_tech, history.vocab["team"])
            team_size = team_of_tech.map(team_of_tech.value_counts()).to_numpy(
                dtype=float, na_value=np.nan
            )
        if "certifications" in techs:
            certs = [
                str(c).split(";")
                for c in techs["certifications"].astype("string").fillna("").to_numpy(dtype=object)
            ]
        if "hire_date" in techs:
            h = pd.to_datetime(techs["hire_date"], errors="coerce")
            if getattr(h.dt, "tz", None) is None:
                h = h.dt.tz_localize(TIMEZONE)
            hire = _secs(h)
        if "employment" in techs:
            emp = techs["employment"].astype("string")
            sub = np.where(
                emp.isna(), np.nan, (emp == "subcontractor").fillna(False).to_numpy(dtype=float)
            )
    unit_index = year = floor = area = None
    if units is not None:
        unit_index = units.index
        year = _num(units["building_year"]) if "building_year" in units else None
        floor = _num(units["floor"]) if "floor" in units else None
        area = _num(units["area_m2"]) if "area_m2" in units else None
    history.side = _SideLookups(
        tech_index, team, team_size, tech_known, certs, hire, sub, unit_index, year, floor, area
    )
    return history.side


def _obj_index(values) -> pd.Index:
    """Object-dtype index of strings, for cheap lookups of a few ids.

    Its hash table is built once, so the API's single-order lookups cost microseconds, unlike
    Arrow-backed string indexes which convert on every ``get_indexer``.
    """
    return pd.Index(np.asarray(list(values), dtype=object), dtype=object)


def _vocab(values) -> pd.Index:
    """The distinct ids, sorted: codes that do not depend on the export's row order.

    Event sums are running sums over events sorted by code, so codes in order of appearance
    made the same history, exported in another row order, give features that differ in the
    13th digit, and LightGBM then grew other trees from them.
    """
    return _obj_index(sorted(pd.unique(np.asarray(values, dtype=object)), key=str))


def _tech_table(technicians: pd.DataFrame | None) -> pd.DataFrame | None:
    """Technicians indexed by id (first row per id), or None."""
    if technicians is None or not len(technicians):
        return None
    t = technicians.drop_duplicates("technician_id")
    return t.set_index(_obj_index(t["technician_id"].astype(str).to_numpy(dtype=object)))


def _team_codes(
    tech_ids: np.ndarray, team_of_tech: pd.Series | None, vocab: pd.Index
) -> np.ndarray:
    """Team code of each order's technician (-1 when unknown)."""
    if team_of_tech is None or not len(vocab):
        return np.full(len(tech_ids), -1, dtype=np.int64)
    if len(tech_ids) <= 4:  # an API order: hash lookups instead of a reindex (~0.2 ms)
        return np.array([_code1(vocab, _lookup(team_of_tech, t)) for t in tech_ids], dtype=np.int64)
    teams = team_of_tech.reindex(pd.Index(tech_ids, dtype=object)).to_numpy(dtype=object)
    teams = np.array([None if (v is pd.NA or v is None) else v for v in teams], dtype=object)
    return _codes(teams, vocab)


def _codes(values: np.ndarray, vocab: pd.Index) -> np.ndarray:
    """Integer code of each value in ``vocab`` (-1 for missing or unknown)."""
    if len(values) <= 4:  # a single API order: hash lookups without building an Index
        return np.array([_code1(vocab, v) for v in values], dtype=np.int64)
    return vocab.get_indexer(pd.Index(values, dtype=object)).astype(np.int64)


def _code1(vocab: pd.Index, value: object) -> int:
    if value is None:
        return -1
    try:
        loc = vocab.get_loc(value)
    except (KeyError, TypeError):
        return -1
    return loc if isinstance(loc, int) else -1


def _lookup(values: pd.Series, key: object) -> object:
    """``values`` at index label ``key`` (unique index), None when absent or missing."""
    if key is None:
        return None
    try:
        loc = values.index.get_loc(key)
    except (KeyError, TypeError):
        return None
    if not isinstance(loc, int):
        return None
    v = values.iat[loc]
    return None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v


def _as_float(v: object) -> float:
    """``pd.to_numeric(errors="coerce")`` of one value as float (NaN when not a number)."""
    if v is None:
        return np.nan
    try:
        return float(pd.to_numeric(v, errors="coerce")) if isinstance(v, str) else float(v)
    except (TypeError, ValueError):
        return np.nan


def _present(values: np.ndarray) -> np.ndarray:
    """Whether each value of an object array from :func:`_str` is present."""
    return np.fromiter((v is not None for v in values), dtype=bool, count=len(values))


#: Index of the contract categories (codes of ``category``).
_CATEGORY_INDEX = pd.Index(CATEGORIES, dtype=object)
_LEVEL_INDEX: dict[str, pd.Index] = {}


def _level_index(col: str) -> pd.Index:
    """Object index of a categorical feature's contract levels (built once)."""
    if col not in _LEVEL_INDEX:
        _LEVEL_INDEX[col] = pd.Index(list(CATEGORICAL_LEVELS[col]), dtype=object)
    return _LEVEL_INDEX[col]


def _pair(a: np.ndarray, b: np.ndarray, nb: int) -> np.ndarray:
    """Combine two code arrays into one key (-1 where either is unknown)."""
    return np.where((a < 0) | (b < 0), -1, a * nb + b)


def _group_keys(orders: pd.DataFrame, units: pd.DataFrame | None) -> dict[str, np.ndarray]:
    """Keys of the groups of homes that share their faults, as strings (None when unknown).

    * ``cohort``: community × building year (units table) — homes built together share
      materials, pipes and waterproofing; both fields are in the data contract.
    * ``building``: community × the unit id without its last ``-``/``_``/``/``/space-separated
      token (``C001-01-0101`` → building ``C001-01``). The id format is not in the contract, so
      an id without a separator is its own "building" (the feature then repeats the unit's
      proneness, harmless) and an unparseable id never fails.
    """
    comm = _str(orders["community_id"])
    uid = _str(orders["unit_id"])
    year = None
    if units is not None and "building_year" in units and len(uid) <= 4:
        by = units["building_year"]
        year = np.array([_as_float(_lookup(by, u)) for u in uid], dtype=float)
    elif units is not None and "building_year" in units:
        year = units["building_year"].reindex(pd.Index(uid, dtype=object))
        year = pd.to_numeric(year, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return _group_keys_of(comm, uid, year)


def _group_keys_of(
    comm: np.ndarray, uid: np.ndarray, year: np.ndarray | None
) -> dict[str, np.ndarray]:
    """:func:`_group_keys` from community ids, unit ids and building years (None: no table)."""
    bldg = np.array(
        [
            None
            if u is None
            else f"{c}|{m.group(1)}"
            if (m := _BUILDING_RE.match(u))
            else f"{c}|{u}"
            for c, u in zip(comm, uid, strict=True)
        ],
        dtype=object,
    )
    cohort = np.full(len(uid), None, dtype=object)
    if year is not None:
        cohort = np.array(
            [
                None if (c is None or np.isnan(y)) else f"{c}|{int(y)}"
                for c, y in zip(comm, year, strict=True)
            ],
            dtype=object,
        )
    vintage = np.full(len(uid), None, dtype=object)
    if year is not None:
        vintage = np.array([None if np.isnan(y) else str(int(y)) for y in year], dtype=object)
    return {"building": bldg, "cohort": cohort, "vintage": vintage}


#: Unit id → building prefix: everything before the last separator (needs a non-empty head).
_BUILDING_RE = re.compile(r"^(.+)[-_/ ][^-_/ ]+$")


def _units_table(units: pd.DataFrame | None) -> pd.DataFrame | None:
    """Units indexed by id (first row per id), or None."""
    if units is None or not len(units):
        return None
    u = units.drop_duplicates("unit_id")
    return u.set_index(_obj_index(u["unit_id"].astype(str).to_numpy(dtype=object)))


def build_history(
    orders: pd.DataFrame,
    *,
    technicians: pd.DataFrame | None = None,
    units: pd.DataFrame | None = None,
    config: FeatureConfig | None = None,
    text_scorer: TextScorer | None = None,
    text_models: dict[str, TextScorer] | None = None,
) -> History:
    """Index a history of typed contract orders for as-of feature lookups.

    Labels of the history are derived here with :func:`models.labels.label_orders`, keeping
    only their *known-at* times: the label value at the data's end is never used, so orders
    reported later cannot change what an earlier query sees.

    The work is split so that the API can maintain the same indexes incrementally
    (``serving.history``): :func:`history_arrays` (per-order codes, times and outcomes),
    :func:`history_events` (the event rows each order contributes), the first report of each
    home (:func:`first_rows`) and the case-mix expectation (:func:`expected_reworks`).
    """
    cfg = config or FeatureConfig()
    lab = label_orders(orders[ORDERS.names], cfg.label_config())  # re-derived, never reused
    vocab = {
        name: _vocab(_str(orders[name])[orders[name].notna().to_numpy()])
        for name in ("unit_id", "technician_id", "resident_id", "community_id")
    }
    techs = _tech_table(technicians)
    team_of_tech = None if techs is None or "team" not in techs else techs["team"]
    vocab["team"] = _vocab([] if team_of_tech is None else team_of_tech.dropna().to_numpy())
    unit_tab = _units_table(units)
    groups = _group_keys(orders, unit_tab)
    for g, keys in groups.items():
        vocab[g] = _vocab(keys[pd.notna(keys)])
    a = history_arrays(
        orders,
        vocab,
        techs,
        groups,
        cfg,
        text_scorer,
        rework_known_at=_secs(lab["rework_known_at"]),
        rework_pos=lab["rework_order_id"].notna().to_numpy(dtype=float),
        dissatisfied=lab["dissatisfied"].to_numpy(dtype=float),
    )
    t_rep = a["t_rep"]
    start = float(np.nanmin(t_rep)) if np.isfinite(t_rep).any() else float("nan")
    ev = {name: EventIndex(*rows) for name, rows in history_events(a, cfg).items()}
    # units of each kind seen so far (first report): the denominator of the per-unit rate,
    # counted as of the query so that units appearing later cannot change it
    ev["unit_first"] = EventIndex(*first_rows(a["unit"], t_rep, a["kind"]))
    for g in groups:
        ev[f"{g}_first"] = EventIndex(*first_rows(a["unit"], t_rep, a[g]))
    ev["tech_oe"] = EventIndex(*tech_oe_rows(a, expected_reworks(ev, a, start, cfg), cfg))
    return History(
        cfg, vocab, ev, techs, unit_tab, text_scorer, start, text_models=dict(text_models or {})
    )


def history_arrays(
    orders: pd.DataFrame,
    vocab: dict[str, pd.Index],
    techs: pd.DataFrame | None,
    groups: dict[str, np.ndarray],
    cfg: FeatureConfig,
    text_scorer: TextScorer | None,
    *,
    rework_known_at: np.ndarray,
    rework_pos: np.ndarray,
    dissatisfied: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per-order arrays the history's events are made of (codes in ``vocab``, epoch seconds).

    ``rework_known_at`` (seconds), ``rework_pos`` (1 when a repeat was found) and
    ``dissatisfied`` are the order's labels as :func:`models.labels.label_orders` derives them.
    """
    ncat = len(CATEGORIES)
    a: dict[str, np.ndarray] = {}
    a["cat"] = cat = _codes(_str(orders["category"]), _CATEGORY_INDEX)
    a["unit"] = unit = _codes(_str(orders["unit_id"]), vocab["unit_id"])
    a["tech"] = _codes(_str(orders["technician_id"]), vocab["technician_id"])
    a["res"] = _codes(_str(orders["resident_id"]), vocab["resident_id"])
    a["comm"] = _codes(_str(orders["community_id"]), vocab["community_id"])
    a["unit_cat"] = _pair(unit, cat, ncat)
    a["kind"] = (_str(orders["area_type"]) == "public").astype(np.int64)
    team_of_tech = None if techs is None or "team" not in techs else techs["team"]
    a["team"] = _team_codes(_str(orders["technician_id"]), team_of_tech, vocab["team"])
    for g, keys in groups.items():
        a[g] = _codes(keys, vocab[g])

    status = _str(orders["status"])
    live = status != "cancelled"
    completed = (status == "completed") & orders["completed_at"].notna().to_numpy()
    a["live"] = live.astype(bool)
    a["completed"] = completed.astype(bool)
    a["t_rep"] = np.where(live, _secs(orders["reported_at"]), np.nan)
    a["t_arr"] = t_arr = _secs(orders["arrived_at"])
    a["t_done"] = t_done = np.where(completed, _secs(orders["completed_at"]), np.nan)
    a["rw_known"] = np.where(completed, rework_known_at, np.nan)
    a["rw_pos"] = np.asarray(rework_pos, dtype=float)
    a["ds"] = np.asarray(dissatisfied, dtype=float)
    a["rating"] = _num(orders["rating"])
    a["complaint"] = np.nan_to_num(_bool(orders["complaint"]))
    a["comment_sent"] = _score_texts(orders["feedback_comment"], text_scorer, cfg.cues)
    a["urge"] = _num(orders["urge_count"])
    a["arrival_h"] = (t_arr - _secs(orders["reported_at"])) / _HOUR
    a["repair_h"] = (t_done - t_arr) / _HOUR
    a["parts"] = _bool(orders["parts_replaced"])
    a["cm_quality"], a["cm_attitude"] = _comment_complaints(orders["feedback_comment"])
    return a


#: The aspects of a follow-up comment the technician/home features read.
_COMPLAINT_ASPECTS: tuple[str, ...] = ("quality", "attitude")


def _comment_complaints(comments: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per follow-up comment: 1 when it complains about workmanship (质量/复发) / attitude (态度).

    NaN where there is no comment. Why: a resident writes 又漏了 / 修了跟没修一样 three days
    after the visit, weeks before the rework window closes, so a technician's workmanship
    shows in comments long before it shows in matured rework labels. Aspect tags come from the
    sentiment component (negation-aware lexicon).
    """
    from models.sentiment import aspect_tags

    strs = _str(comments)
    q = np.full(len(strs), np.nan)
    att = np.full(len(strs), np.nan)
    for i, t in enumerate(strs):
        if t is not None and t.strip():
            tags = aspect_tags(t, _COMPLAINT_ASPECTS)
            q[i] = float(tags.get("quality", 0) < 0)
            att[i] = float(tags.get("attitude", 0) < 0)
    return q, att


#: One index's event rows: keys, times and named values (see :class:`EventIndex`).
EventRows = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]


def history_events(a: dict[str, np.ndarray], cfg: FeatureConfig) -> dict[str, EventRows]:
    """The event rows of every per-order index, from :func:`history_arrays`.

    Each order contributes at most one row per index, computed from its own arrays only; the
    indexes that depend on other orders (first report of a home, case mix) are built apart.
    """
    ncat = len(CATEGORIES)
    unit, tech, res, comm, cat = a["unit"], a["tech"], a["res"], a["comm"], a["cat"]
    unit_cat, kind = a["unit_cat"], a["kind"]
    t_rep, t_arr, t_done = a["t_rep"], a["t_arr"], a["t_done"]
    zero = np.zeros(len(unit), dtype=np.int64)
    # rework outcome of past orders: a positive is known at the repeat's report; rates use only
    # orders whose window has closed (t_closed), because counting early-known positives with
    # not-yet-known negatives would inflate every recent rate
    rw_known, rw_pos = a["rw_known"], a["rw_pos"]
    t_closed, rw_closed_pos = _closed_window(a, cfg)
    rw_pos_known = np.where(rw_pos > 0, rw_known, np.nan)
    # dissatisfaction / rating / comment / complaint: known after the follow-up delay
    t_follow = t_done + cfg.followup_delay_hours * _HOUR
    ds = a["ds"]
    ds_known = np.where(np.isnan(ds), np.nan, t_follow)
    rating, complaint, comment_sent, urge = (
        a["rating"],
        a["complaint"],
        a["comment_sent"],
        a["urge"],
    )
    arrival_h, repair_h = a["arrival_h"], a["repair_h"]
    closed = {"pos": rw_closed_pos}

    ev: dict[str, EventRows] = {}
    ev["team_report"] = (a["team"], t_rep, {})
    ev["kind_report"] = (kind, t_rep, {})
    ev["unit_rework_closed"] = (unit, t_closed, closed)
    ev["unit_cat_report"] = (unit_cat, t_rep, {})
    ev["unit_report"] = (unit, t_rep, {})
    ev["unit_cat_done"] = (unit_cat, t_done, {})
    ev["unit_rework"] = (unit, rw_pos_known, {})
    ev["unit_cat_rework"] = (unit_cat, rw_pos_known, {})
    ev["tech_done"] = (tech, t_done, {})
    ev["tech_rework"] = (tech, t_closed, closed)
    ev["tech_recent_rework"] = (tech, rw_pos_known, {})
    ev["tech_cat_rework"] = (_pair(tech, cat, ncat), t_closed, closed)
    ev["tech_dissat"] = (tech, ds_known, {"pos": ds})
    ev["res_report"] = (res, t_rep, {})
    ev["res_done"] = (res, t_done, {"urge": urge, "has_urge": ~np.isnan(urge)})
    ev["res_dissat"] = (res, ds_known, {"pos": ds})
    ev["res_rating"] = (np.where(np.isnan(rating), -1, res), t_follow, {"rating": rating})
    ev["res_complaint"] = (res, t_follow, {"complaint": complaint})
    ev["res_comment"] = (
        np.where(np.isnan(comment_sent), -1, res),
        t_follow,
        {"sent": comment_sent},
    )
    ev["comm_report"] = (comm, t_rep, {})
    ev["comm_cat_report"] = (_pair(comm, cat, ncat), t_rep, {})
    ev["comm_dissat"] = (comm, ds_known, {"pos": ds})
    ev["comm_rework"] = (comm, t_closed, closed)
    # fault-proneness of homes, their buildings and cohorts (see _group_keys): reports per
    # known home, each home counted from its first report, per category and per kind
    ev["kind_cat_report"] = (kind * ncat + cat, t_rep, {})
    for g in GROUPS:
        ev[f"{g}_report"] = (a[g], t_rep, {})
        ev[f"{g}_rework"] = (a[g], t_closed, closed)
    ev["global_rework"] = (zero, t_closed, closed)
    ev["cat_rework"] = (cat, t_closed, closed)
    ev["global_dissat"] = (zero, ds_known, {"pos": ds})
    ev["cat_arrival"] = (np.where(np.isnan(arrival_h), -1, cat), t_arr, {"h": arrival_h})
    ev["cat_repair"] = (np.where(np.isnan(repair_h), -1, cat), t_done, {"h": repair_h})
    cm_q, cm_a = a["cm_quality"], a["cm_attitude"]
    cm = {"q": cm_q, "att": cm_a}
    has_cm = ~np.isnan(cm_q)
    ev["tech_comment"] = (np.where(has_cm, tech, -1), t_follow, cm)
    ev["unit_comment"] = (np.where(has_cm, unit, -1), t_follow, cm)
    ev["global_comment"] = (np.where(has_cm, 0, -1), t_follow, cm)
    lh, key = _log_repair(repair_h, cat, a["parts"])
    ev["cat_parts_repair"] = (key, t_done, {"lh": lh, "lh2": lh * lh})
    return ev


def _log_repair(
    repair_h: np.ndarray, cat: np.ndarray, parts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Log repair hours and the key category × parts replaced (-1 where either is unknown).

    Why log and why with parts: repair times are skewed (a job waiting for parts takes days),
    so a rushed job shows as a short time on the log scale against jobs of the same kind.
    """
    ok = (repair_h > 0) & (cat >= 0) & ~np.isnan(parts)
    lh = np.where(ok, np.log(np.where(ok, repair_h, 1.0)), np.nan)
    key = np.where(ok, cat * 2 + np.nan_to_num(parts).astype(np.int64), -1)
    return lh, key


#: The groups of homes of :func:`_group_keys` (each has a ``_report``, ``_rework`` and
#: ``_first`` index and a vocabulary).
GROUPS: tuple[str, ...] = ("building", "cohort", "vintage")


def first_rows(
    unit: np.ndarray, t_rep: np.ndarray, key: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(key, time) of the first report of each known home (by report time, ties in order)."""
    seen = pd.DataFrame({"u": unit, "t": t_rep, "k": key})[(unit >= 0) & (key >= 0)]
    first = seen.sort_values("t", kind="stable").drop_duplicates("u")
    return first["k"].to_numpy(), first["t"].to_numpy()


def tech_oe_rows(a: dict[str, np.ndarray], expected: np.ndarray, cfg: FeatureConfig) -> EventRows:
    """Rows of the technicians' observed / expected reworks index (``tech_oe``)."""
    t_closed, rw_closed_pos = _closed_window(a, cfg)
    return a["tech"], t_closed, {"pos": rw_closed_pos, "exp": expected}


def _closed_window(a: dict[str, np.ndarray], cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """When each order's rework window closes and whether a repeat was known by then."""
    t_closed = a["t_done"] + cfg.rework_window_days * _DAY
    # what the closed window said: a repeat linked by parent_order_id after the window closed
    # was unknown at the close, so it must not count there (it would move past features)
    return t_closed, np.where(a["rw_known"] <= t_closed, a["rw_pos"], 0.0)


def expected_reworks(
    ev: dict[str, Any], a: dict[str, np.ndarray], start: float, cfg: FeatureConfig
) -> np.ndarray:
    """Case mix of each past order, as of its own completion.

    A technician sent to leaky old homes and hard categories gets more reworks without being
    worse, so their skill is observed / expected reworks. Expected: the category's as-of rate
    scaled by the home's proneness (a rework is a failed repair or a new fault of the home;
    about half each).
    """
    zero = np.zeros(len(a["cat"]), dtype=np.int64)
    recent = cfg.recent_days * _DAY
    g_n, g_s = ev["global_rework"].query(zero, a["t_done"], recent)
    c_n, c_s = ev["cat_rework"].query(a["cat"], a["t_done"], recent)
    cat_rate = _shrunk(c_s["pos"], c_n, (g_s["pos"] + 1.0) / (g_n + 2.0), cfg.prior_strength)
    prone = _unit_proneness(ev, a["unit"], a["kind"], a["t_rep"], start, cfg)
    return cat_rate * (0.5 + 0.5 * prone)


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


def _unit_proneness(
    ev: dict[str, EventIndex],
    unit: np.ndarray,
    kind: np.ndarray,
    t_rep: np.ndarray,
    start: float,
    cfg: FeatureConfig,
) -> np.ndarray:
    """Poisson-gamma posterior of a home's fault-proneness as of ``t_rep``.

    Relative to an average home of its kind (indoor / public): (a + k) / (a + expected k),
    expected from the as-of report rate per known home of that kind over the observed time.
    """
    observed = np.maximum((t_rep - start) / _DAY, cfg.min_exposure_days)
    kr, _ = ev["kind_report"].query(kind, t_rep, 365 * _DAY)
    kind_units = ev["unit_first"].query(kind, t_rep)[0]
    per_unit = kr / np.maximum(kind_units, 1.0) / np.minimum(observed, 365.0)
    k = ev["unit_report"].query(unit, t_rep)[0]
    a = cfg.proneness_prior
    return (a + k) / (a + per_unit * observed)


def _shrunk(pos: np.ndarray, n: np.ndarray, prior: np.ndarray, m: float) -> np.ndarray:
    """Rate shrunk toward ``prior`` with pseudo-count ``m``: (pos + m·prior) / (n + m)."""
    return (pos + m * prior) / (n + m)


def features_for(history: History, orders: pd.DataFrame) -> pd.DataFrame:
    """Features of ``orders`` (typed, completed) as of each one's ``completed_at``.

    Parameters
    ----------
    history
        Indexed past orders; may or may not contain ``orders`` themselves (same result).
    orders
        The orders to score. Their outcome columns are never read.

    Returns
    -------
    DataFrame indexed like ``orders`` with ``order_id`` and one column per feature
    (categoricals as ``pandas.Categorical`` with the contract's levels).
    """
    f: dict[str, Any] = feature_arrays(history, orders)
    for col, levels in CATEGORICAL_LEVELS.items():
        f[col] = pd.Categorical.from_codes(f[col], categories=list(levels))
    out = pd.DataFrame(f, index=orders.index)
    out.insert(0, "order_id", orders["order_id"].astype("string").to_numpy())
    return out


def feature_arrays(history: History, orders: pd.DataFrame) -> dict[str, np.ndarray]:
    """The computation of :func:`features_for`, as one numpy array per feature.

    Categorical features are their integer codes in :data:`CATEGORICAL_LEVELS` (-1 missing or
    unknown), which is also what LightGBM was trained on. Why a separate entry point: the API
    scores one order per call, where building and taking apart a 100-column DataFrame costs
    more than the features themselves; training gets the DataFrame from :func:`features_for`,
    so both run exactly this code.
    """
    cfg = history.config
    ev = history.events
    n = len(orders)
    f: dict[str, np.ndarray] = {}
    ncat = len(CATEGORIES)
    side = _side_lookups(history)

    t_rep = _secs(orders["reported_at"])
    t_dis = _secs(orders["dispatched_at"])
    t_arr = _secs(orders["arrived_at"])
    t_done = _secs(orders["completed_at"])
    cat_s = _str(orders["category"])
    cat = _codes(cat_s, _CATEGORY_INDEX)
    unit_ids = _str(orders["unit_id"])
    unit = _codes(unit_ids, history.vocab["unit_id"])
    tech_ids = _str(orders["technician_id"])
    tech = _codes(tech_ids, history.vocab["technician_id"])
    res_ids = _str(orders["resident_id"])
    res = _codes(res_ids, history.vocab["resident_id"])
    comm_ids = _str(orders["community_id"])
    comm = _codes(comm_ids, history.vocab["community_id"])
    unit_cat = _pair(unit, cat, ncat)
    zero = np.zeros(n, dtype=np.int64)
    has_res = _present(res_ids)
    has_tech = _present(tech_ids)

    # ---- order facts --------------------------------------------------------------------
    for col in CATEGORICAL_LEVELS:
        f[col] = cat if col == "category" else _codes(_str(orders[col]), _level_index(col))
    rep_local = _LocalTime.of(orders["reported_at"])
    done_local = _LocalTime.of(orders["completed_at"])
    rep_hour = rep_local.hour
    f["report_hour"] = rep_hour
    f["report_night"] = (
        (rep_hour >= cfg.night_start_hour) | (rep_hour < cfg.night_end_hour)
    ).astype(float)
    f["report_weekday"] = rep_local.weekday
    # season: leaks and air conditioning have their months (梅雨, summer), and so do repeats
    f["report_month"] = rep_local.month
    hol, off = _calendar_flags_local(rep_local)
    f["report_holiday"] = hol
    f["report_offday"] = off
    f["complete_hour"] = done_local.hour
    f["linked_rework"] = _present(_str(orders["parent_order_id"])).astype(float)

    dispatch_h = (t_dis - t_rep) / _HOUR
    arrival_h = (t_arr - t_rep) / _HOUR
    repair_h = (t_done - t_arr) / _HOUR
    f["dispatch_hours"] = dispatch_h
    f["arrival_hours"] = arrival_h
    f["repair_hours"] = repair_h
    f["total_hours"] = (t_done - t_rep) / _HOUR
    sla_of = cfg.arrival_sla_hours
    sla = np.array([sla_of.get(p, np.nan) for p in _str(orders["priority"])], dtype=float)
    f["arrival_sla_ratio"] = arrival_h / sla
    f["arrival_overdue"] = np.where(np.isnan(arrival_h), np.nan, (arrival_h > sla).astype(float))
    recent = cfg.recent_days * _DAY
    c_arr, s_arr = ev["cat_arrival"].query(cat, t_arr, recent)  # own arrival excluded
    c_rep, s_rep = ev["cat_repair"].query(cat, t_done, recent)
    with np.errstate(invalid="ignore", divide="ignore"):
        f["arrival_vs_category"] = arrival_h / (s_arr["h"] / c_arr)
        f["repair_vs_category"] = repair_h / (s_rep["h"] / c_rep)
    # a job much shorter than usual for its kind (category, parts or not) was likely rushed
    lh, pkey = _log_repair(repair_h, cat, _bool(orders["parts_replaced"]))
    pn, ps = ev["cat_parts_repair"].query(pkey, t_done, cfg.norm_days * _DAY)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = ps["lh"] / pn
        sd = np.sqrt(np.maximum(ps["lh2"] / pn - mu * mu, 0.0))
        z = (lh - mu) / np.maximum(sd, 0.05)  # floor: a category of identical times
        f["repair_time_z"] = np.where(pn >= cfg.norm_min_jobs, z, np.nan)
    f["urge_count"] = _num(orders["urge_count"])
    f["parts_replaced"] = _bool(orders["parts_replaced"])
    f["paid"] = _bool(orders["paid"])
    f["cost_yuan"] = _num(orders["cost_yuan"])

    # ---- description ------------------------------------------------------------------------
    desc = orders["description"]
    f["desc_len"] = _text_len(desc)
    for name in ("repeat", "urgent", "annoyed"):
        f[f"cue_{name}"] = _contains_any(desc, getattr(cfg.cues, name))
    f["desc_sentiment"] = _score_texts(desc, history.text_scorer, cfg.cues)
    f["desc_severity"] = _contains_any(desc, cfg.cues.severe) - _contains_any(desc, cfg.cues.mild)
    for name, model in history.text_models.items():
        f[name] = _score_texts(desc, model, cfg.cues)

    # ---- global / category as-of rates (priors; follow drift) -------------------------------
    g_n, g_s = ev["global_rework"].query(zero, t_done, recent)
    prior_rw = (g_s["pos"] + 1.0) / (g_n + 2.0)
    gd_n, gd_s = ev["global_dissat"].query(zero, t_done, recent)
    prior_ds = (gd_s["pos"] + 1.0) / (gd_n + 2.0)
    f["global_rework_rate"] = prior_rw
    f["global_dissat_rate"] = prior_ds
    m = cfg.prior_strength
    cn, cs = ev["cat_rework"].query(cat, t_done, recent)
    f["category_rework_rate"] = _shrunk(cs["pos"], cn, prior_rw, m)

    # ---- unit history -----------------------------------------------------------------------
    for w in cfg.history_windows_days:
        f[f"unit_cat_orders_{w}d"] = ev["unit_cat_report"].query(unit_cat, t_rep, w * _DAY)[0]
    f["unit_orders_365d"] = ev["unit_report"].query(unit, t_rep, 365 * _DAY)[0]
    last_rep = ev["unit_cat_report"].last_time(unit_cat, t_rep)
    last_done = ev["unit_cat_done"].last_time(unit_cat, t_rep)
    f["days_since_unit_cat_report"] = (t_rep - last_rep) / _DAY
    f["days_since_unit_cat_done"] = (t_rep - last_done) / _DAY
    f["unit_reworks_365d"] = ev["unit_rework"].query(unit, t_done, 365 * _DAY)[0]
    # all-time unit history: some homes (old pipes, bad waterproofing) fail again and again
    f["unit_orders_all"] = ev["unit_report"].query(unit, t_rep)[0]
    f["unit_reworks_all"] = ev["unit_rework"].query(unit, t_done)[0]
    # exposure: counts since the history began mean little without how long that was
    observed = np.maximum((t_rep - history.start) / _DAY, cfg.min_exposure_days)
    f["history_days"] = (t_rep - history.start) / _DAY
    f["unit_orders_per_year"] = f["unit_orders_all"] / observed * 365.0
    f["unit_cat_orders_all"] = ev["unit_cat_report"].query(unit_cat, t_rep)[0]
    f["unit_cat_orders_per_year"] = f["unit_cat_orders_all"] / observed * 365.0
    # Poisson-gamma posterior of the unit's fault-proneness relative to an average unit of
    # its kind (indoor / public): (a + k) / (a + expected k), expected from the as-of report
    # rate per known unit of that area type
    kind = (f["area_type"] == _level_index("area_type").get_loc("public")).astype(np.int64)
    kr, _ = ev["kind_report"].query(kind, t_rep, 365 * _DAY)
    kind_units = ev["unit_first"].query(kind, t_rep)[0]
    per_unit = kr / np.maximum(kind_units, 1.0) / np.minimum(observed, 365.0)
    a = cfg.proneness_prior
    f["unit_proneness"] = (a + f["unit_orders_all"]) / (a + per_unit * observed)
    un, us = ev["unit_rework_closed"].query(unit, t_done)
    f["unit_rework_rate"] = _shrunk(us["pos"], un, prior_rw, m)

    # team workload (overloaded teams rush jobs): reports so far today and in the last 24 h
    tpos = side.tech_rows(tech_ids)
    team = _take(side.team, tpos, -1)
    midnight = rep_local.midnight
    has_team = team >= 0
    f["team_orders_today"] = np.where(
        has_team, ev["team_report"].query(team, t_rep, t_rep - midnight)[0], np.nan
    )
    team_24h = ev["team_report"].query(team, t_rep, cfg.workload_hours * _HOUR)[0]
    size = _take(side.team_size, tpos, np.nan)
    f["team_load_24h"] = np.where(has_team, team_24h / size, np.nan)
    f["unit_cat_reworks_365d"] = ev["unit_cat_rework"].query(unit_cat, t_done, 365 * _DAY)[0]

    # ---- technician track record ------------------------------------------------------------
    f["tech_orders"] = ev["tech_done"].query(tech, t_done)[0]
    f["tech_orders_workload"] = ev["tech_done"].query(tech, t_done, cfg.workload_hours * _HOUR)[0]
    tn, ts = ev["tech_rework"].query(tech, t_done)
    f["tech_rework_known"] = tn
    f["tech_rework_rate"] = _shrunk(ts["pos"], tn, prior_rw, m)
    f["tech_recent_reworks"] = ev["tech_recent_rework"].query(
        tech, t_done, cfg.rework_window_days * _DAY
    )[0]
    tcn, tcs = ev["tech_cat_rework"].query(_pair(tech, cat, ncat), t_done)
    f["tech_cat_rework_rate"] = _shrunk(tcs["pos"], tcn, f["category_rework_rate"], m)
    dn, dsum = ev["tech_dissat"].query(tech, t_done)
    f["tech_dissat_rate"] = _shrunk(dsum["pos"], dn, prior_ds, m)
    for k in ("tech_rework_rate", "tech_cat_rework_rate", "tech_dissat_rate"):
        f[k] = np.where(has_tech, f[k], np.nan)
    # what residents wrote about this technician's past jobs (known after the follow-up)
    gcn, gcs = ev["global_comment"].query(zero, t_done, recent)
    prior_q, prior_a = (gcs["q"] + 1.0) / (gcn + 2.0), (gcs["att"] + 1.0) / (gcn + 2.0)
    tcn_, tcs_ = ev["tech_comment"].query(tech, t_done)
    f["tech_quality_complaint_rate"] = np.where(
        has_tech, _shrunk(tcs_["q"], tcn_, prior_q, m), np.nan
    )
    f["tech_attitude_complaint_rate"] = np.where(
        has_tech, _shrunk(tcs_["att"], tcn_, prior_a, m), np.nan
    )
    tcn_, tcs_ = ev["tech_comment"].query(tech, t_done, recent)
    f["tech_quality_complaint_rate_recent"] = np.where(
        has_tech, _shrunk(tcs_["q"], tcn_, prior_q, m), np.nan
    )
    f["unit_quality_complaints"] = ev["unit_comment"].query(unit, t_done)[1]["q"]

    certified = np.full(n, np.nan)
    if side.certs is not None:
        certified = np.array(
            [
                (c in side.certs[p]) if p >= 0 and side.tech_known[p] else np.nan
                for c, p in zip(cat_s, tpos.tolist(), strict=True)
            ],
            dtype=float,
        )
    f["tech_certified"] = certified
    f["tech_tenure_days"] = (t_done - _take(side.hire, tpos, np.nan)) / _DAY
    f["tech_subcontractor"] = _take(side.subcontractor, tpos, np.nan)

    # ---- resident history ---------------------------------------------------------------------
    f["res_orders_365d"] = np.where(
        has_res, ev["res_report"].query(res, t_rep, 365 * _DAY)[0], np.nan
    )
    rn, rs = ev["res_done"].query(res, t_done)
    with np.errstate(invalid="ignore", divide="ignore"):
        f["res_mean_urge"] = np.where(rs["has_urge"] > 0, rs["urge"] / rs["has_urge"], np.nan)
    rdn, rds = ev["res_dissat"].query(res, t_done)
    f["res_dissat_known"] = np.where(has_res, rdn, np.nan)
    f["res_dissat_rate"] = np.where(has_res, _shrunk(rds["pos"], rdn, prior_ds, m / 4), np.nan)
    rrn, rrs = ev["res_rating"].query(res, t_done)
    with np.errstate(invalid="ignore", divide="ignore"):
        f["res_mean_rating"] = np.where(rrn > 0, rrs["rating"] / rrn, np.nan)
        f["res_rated_share"] = np.where(rn > 0, rrn / rn, np.nan)
    f["res_complaints"] = np.where(
        has_res, ev["res_complaint"].query(res, t_done)[1]["complaint"], np.nan
    )
    rcn, rcs = ev["res_comment"].query(res, t_done)
    with np.errstate(invalid="ignore", divide="ignore"):
        f["res_comment_sentiment"] = np.where(rcn > 0, rcs["sent"] / rcn, np.nan)

    # ---- community --------------------------------------------------------------------------
    f["comm_orders_workload"] = ev["comm_report"].query(comm, t_rep, cfg.workload_hours * _HOUR)[0]
    f["comm_orders_7d"] = ev["comm_report"].query(comm, t_rep, 7 * _DAY)[0]
    # current intensity of this kind of fault here (season, weather, ageing stock): the last
    # 30 days' same-category reports against the community's yearly monthly average
    comm_cat = _pair(comm, cat, ncat)
    cc30 = ev["comm_cat_report"].query(comm_cat, t_rep, 30 * _DAY)[0]
    cc365 = ev["comm_cat_report"].query(comm_cat, t_rep, 365 * _DAY)[0]
    months_seen = np.minimum(observed, 365.0) / 30.0
    f["comm_cat_orders_30d"] = cc30
    f["comm_cat_intensity"] = (cc30 + 1.0) / (cc365 / months_seen + 1.0)
    cdn, cds = ev["comm_dissat"].query(comm, t_done, 365 * _DAY)
    f["comm_dissat_rate"] = _shrunk(cds["pos"], cdn, prior_ds, m)
    crn, crs = ev["comm_rework"].query(comm, t_done, 365 * _DAY)
    f["comm_rework_rate"] = _shrunk(crs["pos"], crn, prior_rw, m)

    # ---- unit facts ---------------------------------------------------------------------------
    upos = side.unit_rows(unit_ids)
    built = _take(side.building_year, upos, np.nan)
    f["building_age"] = done_local.year - built
    f["floor"] = _take(side.floor, upos, np.nan)
    f["area_m2"] = _take(side.area, upos, np.nan)

    # ---- fault-proneness: the home per category, across categories, its building / cohort ----
    # Poisson-gamma posteriors (a + reports) / (a + expected reports), the expectation from the
    # as-of report rate per known home of its kind (and category). Old pipes leak in plumbing
    # and waterproofing alike, and homes built together fail together, so the evidence is
    # pooled at every level and the trees pick the mix.
    kcr = ev["kind_cat_report"].query(kind * ncat + cat, t_rep, 365 * _DAY)[0]
    per_unit_cat = kcr / np.maximum(kind_units, 1.0) / np.minimum(observed, 365.0)
    f["unit_cat_proneness"] = (a + f["unit_cat_orders_all"]) / (a + per_unit_cat * observed)
    f["unit_other_cat_proneness"] = (a + f["unit_orders_all"] - f["unit_cat_orders_all"]) / (
        a + np.maximum(per_unit - per_unit_cat, 0.0) * observed
    )
    ag = cfg.group_prior
    cohort_year = built if side.building_year is not None else None
    for g, keys in _group_keys_of(comm_ids, unit_ids, cohort_year).items():
        code = _codes(keys, history.vocab[g])
        known = code >= 0
        g_rep = ev[f"{g}_report"].query(code, t_rep, 365 * _DAY)[0]
        g_units = ev[f"{g}_first"].query(code, t_rep)[0]
        expected = per_unit * np.minimum(observed, 365.0) * g_units
        f[f"{g}_proneness"] = np.where(known, (ag + g_rep) / (ag + expected), np.nan)
        # the home against homes like it: an old block makes every home report more, so the
        # home's own excess is its count against the group's rate, not the kind's
        g_level = np.where(known, f[f"{g}_proneness"], 1.0)
        f[f"unit_proneness_in_{g}"] = (a + f["unit_orders_all"]) / (
            a + per_unit * observed * g_level
        )
        gn, gs = ev[f"{g}_rework"].query(code, t_done, 365 * _DAY)
        f[f"{g}_rework_lift"] = np.where(known, (gs["pos"] + m) / (gn * prior_rw + m), np.nan)
    # the home's own reworks against what its number of closed orders would give at the mean
    ar = cfg.unit_rework_prior
    f["unit_rework_lift"] = (us["pos"] + ar) / (un * prior_rw + ar)
    # technician × category, shrunk to the technician's own level scaled to the category
    # (a plumber who is good overall is likely good at toilets too), and recent form
    tech_level = f["tech_rework_rate"] / prior_rw
    f["tech_cat_rework_hier"] = np.where(
        has_tech, _shrunk(tcs["pos"], tcn, tech_level * f["category_rework_rate"], m), np.nan
    )
    k0 = cfg.oe_prior
    on, os_ = ev["tech_oe"].query(tech, t_done)
    f["tech_rework_oe"] = np.where(has_tech, (os_["pos"] + k0) / (os_["exp"] + k0), np.nan)
    on, os_ = ev["tech_oe"].query(tech, t_done, 180 * _DAY)
    f["tech_rework_oe_180d"] = np.where(has_tech, (os_["pos"] + k0) / (os_["exp"] + k0), np.nan)
    t90n, t90s = ev["tech_rework"].query(tech, t_done, 90 * _DAY)
    f["tech_rework_rate_90d"] = np.where(has_tech, _shrunk(t90s["pos"], t90n, prior_rw, m), np.nan)
    # products the trees find only with many splits: home / building risk × repair risk
    f["expected_rework"] = (
        f["category_rework_rate"]
        * f["unit_cat_proneness"]
        * np.where(has_tech, f["tech_cat_rework_hier"] / f["category_rework_rate"], 1.0)
    )
    f["unit_prone_x_cat"] = f["unit_proneness"] * f["category_rework_rate"]
    # a repeat within the rework window is also a *new* fault of a fault-prone home: expected
    # same-category reports of this home in the next window = its proneness × the current
    # per-home rate of the category (leaks in the rainy season, air conditioning in summer),
    # seen in the last window and in the coming window one year ago
    win = cfg.rework_window_days * _DAY
    kc = kind * ncat + cat
    f["cat_rate_window"] = ev["kind_cat_report"].query(kc, t_rep, win)[0] / np.maximum(
        kind_units, 1.0
    )
    t_ly = t_rep - 365 * _DAY + win
    units_ly = ev["unit_first"].query(kind, t_ly)[0]
    rate_ly = ev["kind_cat_report"].query(kc, t_ly, win)[0] / np.maximum(units_ly, 1.0)
    f["cat_rate_window_last_year"] = np.where(t_rep - 365 * _DAY >= history.start, rate_ly, np.nan)
    season = np.where(
        np.isnan(f["cat_rate_window_last_year"]),
        f["cat_rate_window"],
        0.5 * (f["cat_rate_window"] + f["cat_rate_window_last_year"]),
    )
    f["background_expected"] = f["unit_proneness"] * season
    f["background_expected_cat"] = f["unit_cat_proneness"] * season
    # the home's posterior shrunk toward homes of its building year (same construction
    # standards and materials) instead of toward the estate's average home
    vintage_level = np.where(np.isnan(f["vintage_proneness"]), 1.0, f["vintage_proneness"])
    f["unit_proneness_hier"] = vintage_level * f["unit_proneness_in_vintage"]
    f["background_expected_hier"] = f["unit_proneness_hier"] * season

    return f


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The model input columns of a feature frame (everything but ids, labels and bookkeeping)."""
    skip = {"order_id", "completed_at", "split", "rework", "dissatisfied", "community_id"}
    return [c for c in frame.columns if c not in skip and not c.startswith("_")]


def completed_mask(orders: pd.DataFrame) -> pd.Series:
    """Orders that can be scored: completed, with a completion time."""
    return (orders["status"] == "completed").fillna(False) & orders["completed_at"].notna()


def build_features(
    orders: pd.DataFrame,
    *,
    technicians: pd.DataFrame | None = None,
    units: pd.DataFrame | None = None,
    score_mask: pd.Series | np.ndarray | None = None,
    config: FeatureConfig | None = None,
    text_scorer: TextScorer | None = None,
) -> pd.DataFrame:
    """As-of features of the completed orders in ``orders`` (optionally only ``score_mask``).

    The whole of ``orders`` serves as history; each scored order only sees what was known at its
    own completion, so scoring a batch equals scoring each order alone against its past.

    Parameters
    ----------
    orders
        Typed contract orders (see :func:`coerce_orders`).
    technicians, units
        Optional typed side tables.
    score_mask
        Boolean mask over ``orders`` of the orders to score (intersected with completed ones);
        default all completed orders.
    config
        Feature parameters.
    text_scorer
        ``texts -> P(positive)``; default :func:`lexicon_sentiment`.
    """
    history = build_history(
        orders, technicians=technicians, units=units, config=config, text_scorer=text_scorer
    )
    mask = completed_mask(orders).to_numpy(dtype=bool)
    if score_mask is not None:
        mask = mask & np.asarray(score_mask, dtype=bool)
    return features_for(history, orders[mask])
