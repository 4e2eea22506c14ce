"""The service's as-of history, kept up to date order by order (no periodic rebuild).

Why: every scored order is history for the next one (unit repeats, technician workload, resident
urging...). Rebuilding :func:`models.features.build_history` from the store costs from 0.1 s to
seconds and, in a background thread, steals the interpreter from requests (p99) while the history
lags. Here the indexes built at start-up (*main*) stay untouched and each new order adds its
event rows to a small *delta* index per event kind; a query asks both and adds the answers.

The rows come from the training code (:func:`models.features.history_arrays`,
:func:`~models.features.history_events`), so the definitions exist once. What a new order changes
in *earlier* orders is applied as retractions (weight -1) and corrected rows (+1):

* rework labels (:func:`models.labels.rework_labels`' definition, recomputed here for the homes
  and parents the new orders touch, see :func:`_first_repeat`);
* the first report of a home (``unit_first`` / ``*_first``) when an order reports earlier;
* the case-mix expectation of the technician index (``tech_oe``), recomputed for orders after
  the earliest changed event — lazily: an order's ``tech_oe`` row only becomes visible to a
  query once its rework window has closed (weeks after its completion), so the recomputation
  is marked due at that time and done just before the first query that could see the row
  (:meth:`IncrementalHistory._settle_case_mix`), not in every append. An order arriving out of
  completion order moves the case mix of every later order of its kind: eagerly that was
  hundreds of rows recomputed per append (a late request's largest cost); now it is a mark.

So the features equal those of a full rebuild (tests/test_serving_history.py): counts exactly,
float sums up to rounding (the order of additions differs). Corrections of stored orders, new
technicians/units tables and orders reported before the history's start are not incremental:
the owner rebuilds (``needs_rebuild``). Growing deltas make queries slower, so the owner folds
them into a new main index from time to time (:meth:`IncrementalHistory.rebuilt`).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import threading
import weakref
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from models.features import (
    _TIME_BITS,
    GROUPS,
    EventIndex,
    FeatureConfig,
    History,
    TextScorer,
    _bool,
    _group_keys,
    _num,
    _secs,
    _str,
    build_history,
    expected_reworks,
    history_arrays,
    history_events,
    tech_oe_rows,
)
from models.labels import label_orders
from models.schemas import ORDERS

#: Weight column of the delta indexes (a count is the sum of weights).
_W = "__weight"
#: Queries x recent rows up to which the recent delta level is scanned instead of sorted.
_SCAN_CELLS = 64 * 256
#: Appended frames are concatenated in groups of this many of one size level (see
#: ``IncrementalHistory._compact_frames``).
FRAME_FANOUT = 16
#: When a query reaches a due case-mix recomputation, rows due up to this much later are
#: recomputed with it (one vectorised call per few hours of stream time, not one per request).
SETTLE_AHEAD_S = 6 * 3600.0
#: The first-report indexes and which per-order array holds their key.
_FIRSTS: dict[str, str] = {"unit_first": "kind", **{f"{g}_first": g for g in GROUPS}}


class GrowingVocab:
    """A vocabulary index plus ids seen since it was built (codes continue after it).

    Offers what :func:`models.features._codes` uses of a ``pandas.Index``.
    """

    def __init__(self, base: pd.Index):
        self.base = base
        self.extra: dict[Any, int] = {}

    def __len__(self) -> int:
        return len(self.base) + len(self.extra)

    def get_loc(self, value: Any) -> int:
        """Code of one value (KeyError when unknown)."""
        try:
            return int(self.base.get_loc(value))
        except KeyError:
            return self.extra[value]

    def get_indexer(self, values: pd.Index) -> np.ndarray:
        """Codes of many values (-1 unknown)."""
        codes = self.base.get_indexer(values)
        if self.extra:
            for i in np.flatnonzero(codes < 0):
                codes[i] = self.extra.get(values[i], -1)
        return codes

    def add(self, values: np.ndarray) -> None:
        """Give codes to the present values not known yet (in order of appearance)."""
        for v in dict.fromkeys(values.tolist()):  # unique, in order of appearance
            if v is None or v is pd.NA or v in self.extra:
                continue
            try:
                self.base.get_loc(v)
            except KeyError:
                self.extra[v] = len(self)


_Rows3 = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]


class _Level:
    """Rows of one delta level and their sorted index (built on first use after a change)."""

    def __init__(self, rows: _Rows3):
        self.rows = rows
        self._index: EventIndex | None = None
        # whole seconds, clipped at 0: the time part of EventIndex's sort key
        self.seconds = np.where(rows[1] > 0, rows[1], 0.0).astype(np.int64)

    def __len__(self) -> int:
        return len(self.rows[0])

    @property
    def index(self) -> EventIndex | None:
        if self._index is None and len(self):
            self._index = EventIndex(*self.rows)
        return self._index


def _concat(a: _Rows3, b: _Rows3) -> _Rows3:
    return (
        np.concatenate([a[0], b[0]]),
        np.concatenate([a[1], b[1]]),
        {k: np.concatenate([a[2][k], b[2][k]]) for k in a[2]},
    )


class _Recent:
    """The newest, small delta level: rows as Python lists, a key -> rows map.

    Why lists: a single order adds one or two rows to each of ~25 indexes per append and
    asks ~60 one-row queries; as numpy arrays every add re-concatenated the level (~15 numpy
    calls, ~18 us) and every one-row query scanned it with masks (~5 us). Here an add is a few
    list appends and a one-row query looks its key up. The arrays (``rows``, ``seconds``) and
    the sorted ``index`` that batch queries use are built on demand and kept until the next
    add. Mutated in place by :meth:`DeltaIndex.add` (under the owner's lock, as every read).
    """

    def __init__(self, value_names: list[str]):
        self.names = [*value_names, _W]
        self.keys: list[int] = []
        self.times: list[float] = []
        self.vals: dict[str, list[float]] = {k: [] for k in self.names}
        #: whole seconds, clipped at 0: the time part of EventIndex's sort key
        self.sec: list[int] = []
        self.by_key: dict[int, list[int]] = {}
        self._arrays: _Rows3 | None = None
        self._seconds: np.ndarray | None = None
        self._index: EventIndex | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def extend(self, keys: list[int], times: list[float], vals: dict[str, list[float]]) -> None:
        start = len(self.keys)
        self.keys += keys
        self.times += times
        for k in self.names:
            self.vals[k] += vals[k]
        self.sec += [int(t) if t > 0 else 0 for t in times]
        by_key = self.by_key
        for i, k in enumerate(keys, start):
            rows = by_key.get(k)
            if rows is None:
                by_key[k] = [i]
            else:
                rows.append(i)
        self._arrays = self._seconds = self._index = None

    @property
    def rows(self) -> _Rows3:
        if self._arrays is None:
            self._arrays = (
                np.array(self.keys, dtype=np.int64),
                np.array(self.times, dtype=float),
                {k: np.array(v, dtype=float) for k, v in self.vals.items()},
            )
        return self._arrays

    @property
    def seconds(self) -> np.ndarray:
        if self._seconds is None:
            self._seconds = np.array(self.sec, dtype=np.int64)
        return self._seconds

    @property
    def index(self) -> EventIndex | None:
        if self._index is None and len(self):
            self._index = EventIndex(*self.rows)
        return self._index


class DeltaIndex:
    """Weighted events added after the main index: count = sum of weights (-1 retracts).

    A log-structured merge: each add touches only the small *recent* level (scanned by the
    queries, never sorted); past ``RECENT_ROWS`` it becomes an indexed level, and an indexed
    level is merged into the one before it while it holds more than ``1/GROWTH`` of its rows.
    Why geometric levels: with a single settled level, every spill re-sorted all rows since the
    last rebuild (~256 rows of any index: a sort of tens of thousands), ~40 % of the CPU of a
    sequential single-order request late in a merge period; now a row is re-sorted O(GROWTH *
    log_GROWTH(n)) times and a query visits at most ~log_GROWTH(n / RECENT_ROWS) + 1 levels.
    ``levels`` is the indexed levels, largest first, then the recent one (always last, a
    :class:`_Recent` extended in place). Adds and queries run under the history's lock.
    """

    RECENT_ROWS = 256
    GROWTH = 4

    def __init__(self, value_names: list[str], stagger: int = 0):
        self.value_names = value_names
        #: the recent level spills this many rows earlier than ``RECENT_ROWS``: indexes that
        #: grow in step (one row per order each) then spill at different orders, not all at
        #: the same one (each spill sorts a level for its next query: ~25 at once was ~3 ms)
        self.stagger = stagger
        self.levels: tuple[Any, ...] = (_Recent(value_names),)
        self.retracted = False

    def __len__(self) -> int:
        return sum(len(lv) for lv in self.levels)

    def add(self, keys: np.ndarray, times: np.ndarray, values: dict[str, np.ndarray], w: float):
        """Add event rows with weight ``w`` (+1 new, -1 retract)."""
        keys = np.asarray(keys, dtype=np.int64)
        times = np.asarray(times, dtype=float)
        ok = (keys >= 0) & ~np.isnan(times)
        m = int(np.count_nonzero(ok))
        if not m:
            return
        every = m == len(keys)
        if not every:
            keys, times = keys[ok], times[ok]
        fw = float(w)
        *indexed, recent = self.levels
        if len(recent) + m > max(self.RECENT_ROWS - self.stagger, 1):  # spills: arrays straight
            # to an indexed level
            arr: dict[str, np.ndarray] = {}
            for k in self.value_names:  # NaN -> 0 as EventIndex does
                v = np.asarray(values[k], dtype=float)
                v = v if every else v[ok]
                arr[k] = fw * np.where(v == v, v, 0.0)
            arr[_W] = np.full(m, fw)
            new_rows = (keys.copy(), times.copy(), arr) if every else (keys, times, arr)
            rows = _concat(recent.rows, new_rows) if len(recent) else new_rows
            stack = [*indexed, _Level(rows)]
            while len(stack) >= 2 and len(stack[-1]) * self.GROWTH > len(stack[-2]):
                top = stack.pop()
                stack[-1] = _Level(_concat(stack[-1].rows, top.rows))
            self.levels = (*stack, _Recent(self.value_names))
        else:
            vals: dict[str, list[float]] = {}
            for k in self.value_names:  # NaN -> 0 as EventIndex does
                v = np.asarray(values[k], dtype=float)
                vals[k] = [fw * x if x == x else fw * 0.0 for x in (v if every else v[ok]).tolist()]
            vals[_W] = [fw] * m
            recent.extend(keys.tolist(), times.tolist(), vals)
        self.retracted |= w < 0


class LayeredIndex:
    """A main :class:`EventIndex` plus a :class:`DeltaIndex`, queried as one index.

    ``before_query(t)``: called with the latest query time before any query is answered (the
    owner brings rows that a query up to ``t`` could see up to date).
    """

    def __init__(
        self,
        main: EventIndex,
        delta: DeltaIndex,
        before_query: Callable[[float], None] | None = None,
    ):
        self.main = main
        self.delta = delta
        self.before_query = before_query
        self._scalar_cache: tuple[Any, list] | None = None

    def query(
        self, keys: np.ndarray, times: np.ndarray, window_s: Any = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """:meth:`EventIndex.query` over all layers (the search keys are computed once)."""
        keys = np.asarray(keys, dtype=np.int64)
        times = np.asarray(times, dtype=float)
        if len(keys) == 1:
            return self._query_one(int(keys[0]), float(times[0]), window_s)
        if self.before_query is not None and len(times):
            known = times[~np.isnan(times)]
            if len(known):
                self.before_query(float(known.max()))
        bad = (keys < 0) | np.isnan(times)
        base = np.where(bad, 0, keys) << _TIME_BITS
        hi_key = base + np.where(times > 0, times, 0.0).astype(np.int64)
        if window_s is None:
            lo_key = base
        else:
            t0 = times - window_s
            lo_key = base + np.where(t0 > 0, t0, 0.0).astype(np.int64)
        count = None
        sums: dict[str, np.ndarray] = {}
        recent = self.delta.levels[-1]
        scan = 0 < len(recent) and len(keys) * len(recent) <= _SCAN_CELLS
        find_hi, order = _finder(hi_key)
        find_lo, _ = _finder(lo_key, order)
        for index, weighted in self._layers(recent=not scan):
            hi = find_hi(index.comp)
            lo = np.minimum(find_lo(index.comp), hi)
            if weighted:
                c = index.cum[_W]
                count = count + (c[hi] - c[lo])
            else:
                count = (hi - lo).astype(float)
            for name, c in index.cum.items():
                if name != _W:
                    d = c[hi] - c[lo]
                    sums[name] = sums[name] + d if name in sums else d
        assert count is not None
        if scan:  # the small recent level of a small batch: one masked product, no sort
            keys_r, _, values_r = recent.rows
            sec = recent.seconds[None, :]
            hit = (
                (keys_r[None, :] == np.where(bad, 0, keys)[:, None])
                & (sec >= (lo_key - base)[:, None])
                & (sec < (hi_key - base)[:, None])
            ).astype(float)
            count = count + hit @ values_r[_W]
            sums = {k: v + hit @ values_r[k] for k, v in sums.items()}
        if bad.any():
            count = np.where(bad, 0.0, count)
            sums = {k: np.where(bad, 0.0, v) for k, v in sums.items()}
        return count, sums

    def _query_one(
        self, key: int, t: float, window_s: Any
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One query in plain Python scalars.

        A single API order runs ~60 queries, and the array form's dozen numpy calls per layer
        cost ~1 us each on one element. Same additions in the same order as :meth:`query`.
        """
        names = list(self.main.cum)
        if key < 0 or t != t:
            return np.zeros(1), {n: np.zeros(1) for n in names}
        if self.before_query is not None:
            self.before_query(t)
        hi_s = int(t) if t > 0 else 0
        if window_s is None:
            lo_s = 0
        else:
            w = float(window_s) if isinstance(window_s, float | int) else float(window_s[0])
            t0 = t - w
            lo_s = int(t0) if t0 > 0 else 0
        base = key << _TIME_BITS
        hi_key, lo_key = base + hi_s, base + lo_s
        count = 0.0
        sums: list[Any] = [0.0] * len(names)
        recent = self.delta.levels[-1]
        mine = recent.by_key.get(key)
        if mine:  # the small recent level: its rows of this key, instead of a sorted index
            sec = recent.sec
            hit = [i for i in mine if lo_s <= sec[i] < hi_s]
            if hit:
                vals = recent.vals
                count = float(sum(vals[_W][i] for i in hit))
                sums = [float(sum(vals[n][i] for i in hit)) for n in names]
        for comp, cums, weights in self._scalar_layers(names):
            hi = int(comp.searchsorted(hi_key))
            lo = int(comp.searchsorted(lo_key))
            if lo > hi:
                lo = hi
            count = count + (weights[hi] - weights[lo] if weights is not None else float(hi - lo))
            for i, c in enumerate(cums):
                sums[i] = sums[i] + (c[hi] - c[lo])
        return np.array([count]), {
            n: np.array([v], dtype=float) for n, v in zip(names, sums, strict=True)
        }

    def _scalar_layers(self, names: list[str]) -> list[tuple[np.ndarray, list[np.ndarray], Any]]:
        """Per indexed layer: sort keys, cumulative sums per name, cumulative weights or None.

        Kept until the delta's indexed levels change (a spill replaces the ``levels`` tuple).
        """
        levels = self.delta.levels
        cached = self._scalar_cache
        if cached is not None and cached[0] is levels:
            return cached[1]
        out: list[tuple[np.ndarray, list[np.ndarray], Any]] = [
            (self.main.comp, [self.main.cum[n] for n in names], None)
        ]
        for level in levels[:-1]:
            index = level.index
            if index is not None:
                out.append((index.comp, [index.cum[n] for n in names], index.cum[_W]))
        self._scalar_cache = (levels, out)
        return out

    def _layers(self, recent: bool = True) -> list[tuple[EventIndex, bool]]:
        out = [(self.main, False)]
        for level in self.delta.levels if recent else self.delta.levels[:-1]:
            if level.index is not None:
                out.append((level.index, True))
        return out

    def last_time(self, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        """:meth:`EventIndex.last_time` over both layers."""
        # only report / completion indexes are asked this, and their rows are never retracted
        if len(keys) == 1:  # one order: Python scalars, as in ``_query_one``
            return self._last_time_one(int(keys[0]), float(times[0]))
        last = self.main.last_time(keys, times)
        for level in self.delta.levels:
            d = level.index
            if d is not None:
                last = np.fmax(last, d.last_time(keys, times))
        return last

    def _last_time_one(self, key: int, t: float) -> np.ndarray:
        if key < 0 or t != t:
            return np.full(1, np.nan)
        base = key << _TIME_BITS
        hi_key = base + (int(t) if t > 0 else 0)
        last = np.nan
        *indexed, recent = self.delta.levels
        for index in [self.main, *(lv.index for lv in indexed)]:
            if index is None:
                continue
            hi = int(index.comp.searchsorted(hi_key))
            if hi > int(index.comp.searchsorted(base)):
                v = float(index.times[hi - 1])
                last = v if last != last or v > last else last
        hi_s, sec = hi_key - base, recent.sec
        before = [sec[i] for i in recent.by_key.get(key, ()) if sec[i] < hi_s]
        if before:  # the recent level's rows of this key, as its sorted index would answer
            v = float(max(before))
            last = v if last != last or v > last else last
        return np.array([last])


#: From this many needles on, ``searchsorted`` runs on them sorted (numpy is ~5x faster on
#: sorted needles: 10,000 into 100k keys 1.8 -> 0.33 ms, the sort 0.17 ms, once per query).
_SORT_NEEDLES = 64


def _finder(
    needles: np.ndarray, order: np.ndarray | None = None
) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray | None]:
    """``lambda comp: np.searchsorted(comp, needles, side="left")`` for every layer.

    A big query's needles are searched in sorted order (numpy's searchsorted is ~5x faster on
    sorted needles), with the same positions returned in the needles' order. Returns the
    finder and the order it uses. ``order``: search in this order instead of sorting (a
    query's lower bounds in its upper bounds' order: sorted or nearly, and the positions do
    not depend on the order in any case).
    """
    if len(needles) < _SORT_NEEDLES:
        return (lambda comp: np.searchsorted(comp, needles, side="left")), None
    if order is None:
        order = _sort_order(needles)
    ordered = needles[order]

    def find(comp: np.ndarray) -> np.ndarray:
        out = np.empty(len(needles), dtype=np.intp)
        out[order] = np.searchsorted(comp, ordered, side="left")
        return out

    return find, order


#: The last few big needle arrays and their sort order: a batch's ~60 feature queries search
#: a handful of distinct ``(key, time)`` arrays (the unit's, the technician's, ... at report
#: or completion time) in different event indexes, so most argsorts are repeats.
_ORDERS: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=8)


def _sort_order(needles: np.ndarray) -> np.ndarray:
    """``np.argsort(needles, kind="stable")``, reused when equal needles were sorted lately."""
    n = len(needles)
    for seen, order in list(_ORDERS):  # a snapshot: other threads may append meanwhile
        if (
            len(seen) == n
            and seen[0] == needles[0]
            and seen[-1] == needles[-1]
            and np.array_equal(seen, needles)
        ):
            return order
    order = np.argsort(needles, kind="stable")
    _ORDERS.append((needles.copy(), order))
    return order


class _Rows:
    """Per-order arrays of every order in the history, appendable (capacity doubling)."""

    def __init__(self, a: dict[str, np.ndarray]):
        self.n = len(next(iter(a.values())))
        self.cols = {k: np.asarray(v).copy() for k, v in a.items()}

    def append(self, a: dict[str, np.ndarray]) -> np.ndarray:
        m = len(next(iter(a.values())))
        for k, v in a.items():
            col = self.cols[k]
            if self.n + m > len(col):
                grown = np.empty(max(2 * len(col), self.n + m), dtype=col.dtype)
                grown[: self.n] = col[: self.n]
                self.cols[k] = col = grown
            col[self.n : self.n + m] = v
        rows = np.arange(self.n, self.n + m)
        self.n += m
        return rows

    def take(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[rows] for k, v in self.cols.items()}

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name][: self.n]


def _ns(s: pd.Series) -> np.ndarray:
    """Integer nanoseconds since the epoch (NaT -> int64 min), whatever the column's unit."""
    if not isinstance(s.dtype, pd.DatetimeTZDtype):
        s = pd.to_datetime(s).dt.tz_localize("UTC")
    i8 = s.array.asi8
    scale = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[s.dtype.unit]
    return np.where(i8 == np.iinfo(np.int64).min, i8, i8 * scale)


_NAT = np.iinfo(np.int64).min


class Columns:
    """A DataFrame's columns, each extracted once (``frame[col]`` costs ~15 us in pandas 3).

    Scoring one order reads the same ~25 columns from ~150 places (store rows, history rows,
    features, policy); this read-only view is what they get instead of the frame. It offers
    what they use: ``[name]``, ``len``, ``in``, ``index`` and ``frame``.
    """

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.index = frame.index
        self._cols: dict[str, pd.Series] = {}

    def __getitem__(self, name: Any) -> Any:
        if not isinstance(name, str):
            return self.frame[name]
        s = self._cols.get(name)
        if s is None:
            s = self._cols[name] = self.frame[name]
        return s

    def __len__(self) -> int:
        return len(self.frame)

    def __contains__(self, name: object) -> bool:
        return name in self.frame


def _cell_kind(dtype: Any) -> str | None:
    """How :class:`_RowBuffer` keeps a column of this dtype (None: not kept that way)."""
    if isinstance(dtype, pd.StringDtype):
        return "str"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "tz"
    if isinstance(dtype, pd.BooleanDtype | pd.Int64Dtype):
        return "masked"
    if dtype == np.dtype("float64"):
        return "float"
    if dtype == np.dtype("int64"):
        return "int"
    return None


class _RowBuffer:
    """Appended one-order frames kept as plain values per column, until the frames are read.

    Why: a frame per scored order is ~230 objects the cyclic GC tracks, so they were merged
    in groups of 16 on the request path (a 16-frame concat ~1-2 ms every 16th order, a 16 x 16
    rows one ~4 ms every 256th: the sequential tail). Here an order adds one value per column
    to lists of strings, ints, floats and None (untracked by the GC); the readers (a rebuild,
    the reasons reference, tests) get one frame with exactly the original dtypes.
    """

    def __init__(self, orders: Any):
        frame = getattr(orders, "frame", orders)
        self.columns = list(frame.columns)
        self.dtypes = [orders[c].dtype for c in self.columns]
        self.kinds = [_cell_kind(d) for d in self.dtypes]
        self.values: list[list[Any]] = [[] for _ in self.columns]
        self.n = 0

    @staticmethod
    def can_hold(orders: Any) -> bool:
        """One order whose columns all have a kept kind.

        Dtypes through ``orders[c]`` (cached by :class:`Columns`): ``DataFrame.dtypes`` builds
        a Series, ~50 us.
        """
        frame = getattr(orders, "frame", orders)
        return len(frame) == 1 and all(_cell_kind(orders[c].dtype) is not None for c in frame)

    def matches(self, orders: Any) -> bool:
        columns = list(getattr(orders, "frame", orders).columns)
        return columns == self.columns and all(
            orders[c].dtype == d for c, d in zip(columns, self.dtypes, strict=True)
        )

    def add(self, orders: Any) -> None:
        """One order (a one-row frame or :class:`Columns` view of one)."""
        for j, (c, kind) in enumerate(zip(self.columns, self.kinds, strict=True)):
            a = orders[c].array
            if kind == "tz":
                v: Any = int(a.asi8[0])
            elif kind == "str" and hasattr(a, "_pa_array"):  # Arrow strings: None when missing
                v = a._pa_array.to_pylist()[0]
            elif kind in ("float", "int"):
                v = a[0].item() if hasattr(a[0], "item") else a[0]
            else:  # strings, nullable booleans and integers: NA -> None
                v = a[0]
                v = None if v is pd.NA or v is None or (isinstance(v, float) and v != v) else v
                v = v.item() if hasattr(v, "item") else v
            self.values[j].append(v)
        self.n += 1

    def frame(self) -> pd.DataFrame:
        arrays: list[Any] = []
        for vals, dtype, kind in zip(self.values, self.dtypes, self.kinds, strict=True):
            if kind == "tz":
                naive = np.array(vals, dtype=np.int64).view(f"M8[{dtype.unit}]")
                arrays.append(pd.Series(naive).dt.tz_localize("UTC").dt.tz_convert(dtype.tz).array)
            elif kind in ("float", "int"):
                arrays.append(np.array(vals, dtype=dtype))
            else:
                arrays.append(pd.array(vals, dtype=dtype))
        return pd.DataFrame(dict(zip(self.columns, arrays, strict=True)))


def _settler(inc: IncrementalHistory) -> Callable[[float], None]:
    """``inc._settle_case_mix`` for its tech_oe index, holding ``inc`` weakly.

    Why: a bound method would make a cycle (history -> its indexes -> the method -> history),
    and a cycle is freed only by the cyclic GC, which never looks at frozen objects: the
    service freezes each new history (``gc.freeze`` in ``HistoryCache.install``), so every
    replaced history stayed in memory for good (~80 MB per 10,000 orders merged). Without
    cycles a replaced history is freed by reference counting as soon as the last request
    using it ends (tested).
    """
    ref = weakref.ref(inc)

    def settle(t: float) -> None:
        owner = ref()
        if owner is not None:
            owner._settle_case_mix(t)

    return settle


class IncrementalHistory:
    """The features' :class:`History` of the stored orders, extended per appended batch."""

    def __init__(
        self,
        orders: pd.DataFrame,
        technicians: pd.DataFrame | None,
        units: pd.DataFrame | None,
        config: FeatureConfig,
        text_scorer: TextScorer | None = None,
        complaints: dict[str, list[float]] | None = None,
        text_models: dict[str, TextScorer] | None = None,
    ):
        self.config = config
        self.technicians = technicians
        self.units = units
        self.text_scorer = text_scorer
        self.text_models = dict(text_models or {})
        self.window_ns = int(round(config.rework_window_days * 86400 * 10**9))
        self.follow_s = config.followup_delay_hours * 3600.0
        self._frames: list[pd.DataFrame] = [orders]
        self._buffer: _RowBuffer | None = None
        self.needs_rebuild = False
        self.appended = 0
        main = build_history(
            orders,
            technicians=technicians,
            units=units,
            config=config,
            text_scorer=text_scorer,
            text_models=self.text_models,
        )
        self.main = main
        self.vocab = {k: GrowingVocab(v) for k, v in main.vocab.items() if k != "team"}
        vocab: dict[str, Any] = {**self.vocab, "team": main.vocab["team"]}
        spread = max(DeltaIndex.RECENT_ROWS // 2, 1)
        self.deltas = {
            name: DeltaIndex(list(ix.cum), stagger=i * spread // len(main.events))
            for i, (name, ix) in enumerate(main.events.items())
        }
        #: Serialises appends and due case-mix recomputations (which a query may trigger).
        self._mutex = threading.RLock()
        #: (time its tech_oe row becomes visible, row) of rows whose case mix may be stale
        self._due: list[tuple[float, int]] = []
        settle = _settler(self)
        self.history = History(
            config,
            vocab,
            {
                name: LayeredIndex(ix, self.deltas[name], settle if name == "tech_oe" else None)
                for name, ix in main.events.items()
            },
            main.technicians,
            main.units,
            text_scorer,
            main.start,
            text_models=self.text_models,
        )
        # per-order state: the arrays the events are made of, plus what labels are made of
        lab = label_orders(orders[ORDERS.names], config.label_config())
        a = self._arrays(
            orders,
            rework_known_at=_secs(lab["rework_known_at"]),
            rework_pos=lab["rework_order_id"].notna().to_numpy(dtype=float),
            dissatisfied=lab["dissatisfied"].to_numpy(dtype=float),
        )
        a["exp"] = expected_reworks(main.events, a, main.start, config)
        # the tech_oe row of each order as it is in the indexes now (exp above, the closed
        # window's label; oe_in: the row is in; oe_due: its recomputation is pending)
        a["oe_pos"] = tech_oe_rows(a, a["exp"], config)[2]["pos"]
        a["oe_in"] = np.ones(len(orders))
        a["oe_due"] = np.zeros(len(orders))
        self.rows = _Rows(a)
        # the indexed rows by their latest time (report or completion), NaN left out: the
        # orders after a moment are a slice (appended rows are few and scanned)
        t_last = np.fmax(a["t_rep"], a["t_done"])
        by_time = np.argsort(t_last, kind="stable")[: int(np.count_nonzero(~np.isnan(t_last)))]
        self._n_main = len(orders)
        self._by_time, self._by_time_t = by_time, t_last[by_time]
        self.ids: dict[str, int] = {}
        self.row_ids: list[str] = []
        self.row_parent: list[str | None] = []
        self.row_group: list[tuple[str, str] | None] = []
        self.group: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.kids: dict[str, list[int]] = defaultdict(list)
        self._register(orders, np.arange(len(orders)))
        self.firsts: dict[str, dict[int, tuple[float, int]]] = {}
        for name, key in _FIRSTS.items():
            self.firsts[name] = self._initial_firsts(key)
        self.complaints = complaints if complaints is not None else {}

    @property
    def frames(self) -> list[pd.DataFrame]:
        """Every order of the history as frames, in the order they were added.

        A new list, read under the history's mutex: a reader outside the owner's lock (the
        reasons reference at a reload) never sees an append half done.
        """
        with self._mutex:
            self._unbuffer()
            return list(self._frames)

    @frames.setter
    def frames(self, frames: list[pd.DataFrame]) -> None:
        with self._mutex:
            if self._buffer is not None and self._buffer.n:
                raise RuntimeError("read the frames (and buffered orders) before replacing them")
            self._frames = list(frames)

    def _unbuffer(self) -> None:
        """Move the buffered one-order frames into ``_frames`` as one frame."""
        buffer = self._buffer
        if buffer is not None and buffer.n:
            self._buffer = None
            self._frames.append(buffer.frame())
            self._compact_frames()

    def _keep(self, orders: Any) -> None:
        """Keep appended orders for ``frames``: one-order frames in the row buffer."""
        buffer = self._buffer
        if _RowBuffer.can_hold(orders):
            if buffer is None or not buffer.matches(orders):
                self._unbuffer()  # earlier buffered orders first: the row order is kept
                buffer = self._buffer = _RowBuffer(orders)
            buffer.add(orders)
            return
        self._unbuffer()
        self._frames.append(getattr(orders, "frame", orders))
        self._compact_frames()

    def rebuilt(self) -> IncrementalHistory:
        """A new history of the same orders and tables with everything in the main indexes."""
        frames = self.frames
        orders = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        complaints = {u: list(t) for u, t in self.complaints.items()}
        return IncrementalHistory(
            orders,
            self.technicians,
            self.units,
            self.config,
            self.text_scorer,
            complaints,
            self.text_models,
        )

    def _compact_frames(self) -> None:
        """Concatenate the appended frames in groups of ``FRAME_FANOUT`` of one size level.

        Why: a frame kept per scored request until the next rebuild is ~230 objects the cyclic
        GC tracks (pandas blocks, Arrow arrays); a few thousand of them made every full
        collection scan 100k+ objects, pauses of 50-170 ms growing through a merge period (the
        sequential p99). Levels of sizes ``FRAME_FANOUT**k`` (an LSM of frames, at most one
        merge per append) keep their number logarithmic at ~1/16 of a 16-frame concat (~1 ms)
        per append; mixed sizes that
        never fill a level are folded into one frame beyond four levels' worth. The base frame
        (index 0) is never merged here. Row order is kept, so ``rebuilt`` and the ``orders``
        readers see the same rows as before.
        """
        f, k = self._frames, FRAME_FANOUT

        def level(frame: pd.DataFrame) -> int:
            return int(np.log(max(len(frame), 1)) / np.log(k) + 1e-9)

        # one merge per append, the leftmost (largest) run of k frames of one level: a full
        # level no longer cascades into the next in the same append (the 256th single order
        # paid a 16-frame and a 16 x 16-row concat at once, ~3 ms), it waits for the next one
        levels = [level(x) for x in f]
        for i in range(1, len(f) - k + 1):
            if levels[i] == levels[i + k - 1] and len(set(levels[i : i + k])) == 1:
                f[i : i + k] = [pd.concat(f[i : i + k], ignore_index=True)]
                break
        if len(f) - 1 > 4 * k:
            f[1:] = [pd.concat(f[1:], ignore_index=True)]

    # ---- building blocks ------------------------------------------------------------------
    def _arrays(
        self, orders: pd.DataFrame, groups: dict[str, np.ndarray] | None = None, **labels: Any
    ) -> dict[str, np.ndarray]:
        if groups is None:
            groups = _group_keys(orders, self.main.units)
        vocab: dict[str, Any] = {**self.vocab, "team": self.main.vocab["team"]}
        a = history_arrays(
            orders, vocab, self.main.technicians, groups, self.config, self.text_scorer, **labels
        )
        a["rep_ns"] = _ns(orders["reported_at"])
        a["done_ns"] = _ns(orders["completed_at"])
        return a

    def _register(self, orders: pd.DataFrame, rows: np.ndarray) -> None:
        """Index orders' ids, (home, category) groups and parent links for label updates."""
        live = self.rows["live"][rows]
        for r, i, u, c, p, lv in zip(
            rows.tolist(),
            _str(orders["order_id"]),
            _str(orders["unit_id"]),
            _str(orders["category"]),
            _str(orders["parent_order_id"]),
            live.tolist(),
            strict=True,
        ):
            self.ids[i] = r
            self.row_ids.append(i)
            self.row_parent.append(p)
            key = (u, c) if u is not None and c is not None else None
            self.row_group.append(key)
            if key is not None:
                self.group[key].append(r)
            if p is not None and lv:
                self.kids[p].append(r)

    def _initial_firsts(self, key: str) -> dict[int, tuple[float, int]]:
        """Home -> (time, row) of its first report with a known ``key`` (as ``first_rows``)."""
        unit, t, k = self.rows["unit"], self.rows["t_rep"], self.rows[key]
        ok = (unit >= 0) & (k >= 0) & ~np.isnan(t)
        firsts: dict[int, tuple[float, int]] = {}
        for r in np.flatnonzero(ok)[np.argsort(t[ok], kind="stable")].tolist():
            firsts.setdefault(int(unit[r]), (float(t[r]), r))
        return firsts

    def _first_repeat(
        self, r: int, reports: dict[tuple[str, str], list[int]] | None = None
    ) -> tuple[float, float]:
        """(rework_known_at seconds, rework_pos) of row ``r`` — the label's definition.

        Same as :func:`models.labels.rework_labels`: the first later live report on the same
        home and category within the window after completion, or the earliest live order naming
        it as parent if reported after its completion, whichever is earlier.

        ``reports``: a cache of each group's sorted live report times, filled here (for calls
        on many rows of the same groups while ``live`` and the report times do not change:
        one sort per group instead of one scan of the group per row).
        """
        rows = self.rows
        if not rows["completed"][r]:
            return np.nan, 0.0
        done = int(rows["done_ns"][r])
        live, rep = rows["live"], rows["rep_ns"]
        first: int | None = None
        key = self.row_group[r]
        if key is not None:
            times = None if reports is None else reports.get(key)
            if times is None:
                times = sorted(int(rep[x]) for x in self.group[key] if live[x] and rep[x] != _NAT)
                if reports is not None:
                    reports[key] = times
            k = bisect.bisect_right(times, done)  # the first live report after completion
            if k < len(times) and times[k] - done <= self.window_ns:
                first = times[k]
        kids = [x for x in self.kids.get(self.row_ids[r], ()) if rep[x] != _NAT]
        if kids:  # the earliest child (ties: the first stored), if reported after completion
            t = int(rep[min(kids, key=lambda x: (int(rep[x]), x))])
            if t > done and (first is None or t < first):
                first = t
        if first is None:
            return (done + self.window_ns) / 1e9, 0.0
        return first / 1e9, 1.0

    def _completed_between(self, span: dict[tuple[str, str], tuple[int, int]]) -> list[int]:
        """Rows of each group ``(home, category) -> (lo, hi)`` completed in ``[lo - W, hi)``.

        Why: a new report at ``t`` can change only the rework label of an order of its group
        completed in ``[t - W, t)`` (the label: the first later report within the window W
        after completion), so these rows — with the new orders' parents — are every row whose
        label an append can move. Recomputing every row of a touched group instead made each
        append cost the groups' whole past: back-to-back 10,000-order batches got ~0.05 s
        slower each as the homes filled up.
        """
        if not span:
            return []
        groups = [self.group[k] for k in span]
        sizes = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
        members = np.fromiter(
            itertools.chain.from_iterable(groups), dtype=np.int64, count=int(sizes.sum())
        )
        bounds = np.array(list(span.values()), dtype=np.int64).reshape(-1, 2)
        lo = np.repeat(bounds[:, 0] - self.window_ns, sizes)
        hi = np.repeat(bounds[:, 1], sizes)
        done = self.rows["done_ns"][members]
        return members[(done != _NAT) & (done >= lo) & (done < hi)].tolist()

    def _first_repeats(self, rs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_first_repeat` of rows ``rs`` at once: the same values, column-wise.

        Why: an append recomputes the labels of its ~10,000 new orders and their neighbours;
        one Python call per row was ~30 ms of a 10,000-order batch. The live reports of the
        rows' groups are sorted once by (group, report time) and each completion finds its
        first later report with one ``searchsorted``; children (parent links) are few and
        looked up per row as before.
        """
        rows = self.rows
        m = len(rs)
        known, pos = np.full(m, np.nan), np.zeros(m)
        if not m:
            return known, pos
        done = rows["done_ns"][rs]
        completed = rows["completed"][rs].astype(bool)
        live, rep = rows["live"], rows["rep_ns"]
        codes: dict[tuple[str, str], int] = {}
        row_group = self.row_group
        gcode = np.fromiter(
            (
                -1 if (k := row_group[r]) is None else codes.setdefault(k, len(codes))
                for r in rs.tolist()
            ),
            dtype=np.int64,
            count=m,
        )
        first = np.full(m, _NAT, dtype=np.int64)  # first live report after completion
        if codes:
            groups = [self.group[k] for k in codes]
            sizes = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
            members = np.fromiter(
                itertools.chain.from_iterable(groups), dtype=np.int64, count=int(sizes.sum())
            )
            mcode = np.repeat(np.arange(len(groups), dtype=np.int64), sizes)
            ok = (live[members] != 0) & (rep[members] != _NAT)
            members, mcode = members[ok], mcode[ok]
            mrep = rep[members]
            # (group, time) as one int64 key: dense ranks of the times (as quality._ranks)
            values, inverse = np.unique(np.concatenate([mrep, done]), return_inverse=True)
            n_ranks = len(values) + 1
            key = mcode * n_ranks + inverse[: len(mrep)]
            srt = np.argsort(key, kind="stable")
            key, srep = key[srt], mrep[srt]
            q = gcode * n_ranks + inverse[len(mrep) :]
            at = np.searchsorted(key, q, side="right")  # the first report after completion
            hit = (gcode >= 0) & (at < len(key)) & (done != _NAT)
            at = np.minimum(at, max(len(key) - 1, 0))
            if len(key):
                hit &= key[at] // n_ranks == gcode
                cand = srep[at]
                hit &= cand - done <= self.window_ns
                first = np.where(hit, cand, _NAT)
        kids_of, row_ids = self.kids, self.row_ids
        for i, r in enumerate(rs.tolist()):
            kids = kids_of.get(row_ids[r])
            if not kids:
                continue
            kids = [x for x in kids if rep[x] != _NAT]
            if kids:  # the earliest child (ties: the first stored), if reported after completion
                t = int(rep[min(kids, key=lambda x: (int(rep[x]), x))])
                if t > done[i] and (first[i] == _NAT or t < first[i]):
                    first[i] = t
        found = completed & (first != _NAT)
        open_ = completed & (first == _NAT)
        known[found] = first[found] / 1e9
        pos[found] = 1.0
        known[open_] = (done[open_] + self.window_ns) / 1e9
        return known, pos

    # ---- appending ----------------------------------------------------------------------------
    def contains(self, order_id: str) -> bool:
        """Whether the order is part of the history."""
        return order_id in self.ids

    def append(self, orders: pd.DataFrame) -> None:
        """Add new orders (typed, ids not in the history) as history; see the module doc."""
        if not len(orders):
            return
        with self._mutex:
            self._append(orders)

    def _append(self, orders: pd.DataFrame) -> None:
        cfg = self.config
        if any(i in self.ids for i in _str(orders["order_id"])):
            raise ValueError("append() takes new orders only (corrections need a rebuild)")
        t_rep_new = _secs(orders["reported_at"])
        if np.isfinite(t_rep_new).any() and np.nanmin(t_rep_new) < self.main.start:
            self.needs_rebuild = True  # the history's start (exposure) would move
        for name in ("unit_id", "technician_id", "resident_id", "community_id"):
            self.vocab[name].add(_str(orders[name]))
        groups = _group_keys(orders, self.main.units)
        for g, keys in groups.items():
            self.vocab[g].add(keys)
        n = len(orders)
        a = self._arrays(
            orders,
            groups,
            rework_known_at=np.full(n, np.nan),
            rework_pos=np.zeros(n),
            dissatisfied=dissatisfied(orders, cfg),
        )
        a["exp"] = np.full(n, np.nan)
        a["oe_pos"] = np.zeros(n)
        a["oe_in"] = np.zeros(n)
        a["oe_due"] = np.zeros(n)
        rows = self.rows
        new_rows = rows.append(a)
        self._register(orders, new_rows)
        self._keep(orders)
        self.appended += n

        # rework labels of the new orders and of the earlier ones they may be repeats of
        new_set = set(new_rows.tolist())
        touched: set[int] = set(new_set)
        rep_ns = rows["rep_ns"]
        span: dict[tuple[str, str], tuple[int, int]] = {}  # group -> new reports' min, max
        for r in new_set:
            key = self.row_group[r]
            t = int(rep_ns[r])
            if key is not None and t != _NAT:
                lo, hi = span.get(key, (t, t))
                span[key] = (min(lo, t), max(hi, t))
            p = self.row_parent[r]
            if p is not None and p in self.ids:
                touched.add(self.ids[p])
        touched.update(self._completed_between(span))
        old_rows = np.array(sorted(touched - new_set), dtype=np.int64)
        before = rows.take(old_rows)
        order = np.array(sorted(touched), dtype=np.int64)
        known, pos = self._first_repeats(order)
        moved = (order < new_rows[0]) & (  # earlier rows whose label the new orders moved
            (pos != rows["rw_pos"][order]) | ~_same_arr(known, rows["rw_known"][order])
        )
        changed: list[int] = order[moved].tolist()
        rows.cols["rw_known"][order] = known
        rows.cols["rw_pos"][order] = pos
        new_a = rows.take(new_rows)
        self._add_rows(history_events(new_a, cfg), +1)
        sel = np.isin(old_rows, changed)
        if changed:
            old = {k: v[sel] for k, v in before.items()}
            self._replace(history_events(old, cfg), history_events(rows.take(old_rows[sel]), cfg))

        # first reports of homes; tau: the earliest moment an input of the case mix changed
        tau = float(np.nanmin(new_a["t_rep"])) if np.isfinite(new_a["t_rep"]).any() else np.inf
        for name, key in _FIRSTS.items():
            tau = min(tau, self._update_firsts(name, key, new_rows))
        if changed:
            t_closed = rows["t_done"][changed] + cfg.rework_window_days * 86400.0
            if np.isfinite(t_closed).any():
                tau = min(tau, float(np.nanmin(t_closed)))

        # case mix (tech_oe): the new orders, and earlier ones whose as-of inputs moved — due
        # when their rows become visible (see the module doc)
        self._mark_due(
            np.concatenate([self._after(tau), new_rows, np.asarray(changed, dtype=np.int64)])
        )
        self._add_complaints(orders)

    def _after(self, tau: float) -> np.ndarray:
        """Rows reported or completed after ``tau`` (the ones whose case mix it can move)."""
        main = self._by_time[np.searchsorted(self._by_time_t, tau, side="right") :]
        rows, start = self.rows, self._n_main
        t_last = np.fmax(rows["t_rep"][start:], rows["t_done"][start:])
        return np.concatenate([main, start + np.flatnonzero(t_last > tau)])

    def _mark_due(self, rows: np.ndarray) -> None:
        """Mark rows' case mix for recomputation before a query can see their tech_oe row."""
        cols = self.rows.cols
        t_closed = self.rows["t_done"][rows] + self.config.rework_window_days * 86400.0
        fresh = (cols["oe_due"][rows] == 0) & (self.rows["tech"][rows] >= 0) & ~np.isnan(t_closed)
        if not fresh.any():
            return
        rows, first = np.unique(rows[fresh], return_index=True)  # a row may be listed twice
        t_closed = np.maximum(t_closed[fresh][first], 0.0)  # EventIndex clips times at 0
        cols["oe_due"][rows] = 1.0
        items = list(zip(t_closed.tolist(), rows.tolist(), strict=True))
        if len(items) > 64:
            self._due.extend(items)
            heapq.heapify(self._due)
        else:
            for item in items:
                heapq.heappush(self._due, item)

    def _settle_case_mix(self, t: float) -> None:
        """Recompute the due case mix of rows a query at time ``t`` could see (tech_oe).

        The rows' ``exp`` is what a full rebuild computes from the current history (the
        definition does not depend on when it is evaluated), so doing it late is exact.
        """
        due = self._due
        if not due or due[0][0] > t:
            return
        with self._mutex:
            limit, ready = t + SETTLE_AHEAD_S, []
            while due and due[0][0] <= limit:
                ready.append(heapq.heappop(due)[1])
            if ready:
                self._recompute_case_mix(np.array(sorted(ready), dtype=np.int64))

    def _recompute_case_mix(self, r: np.ndarray) -> None:
        rows, cfg = self.rows, self.config
        cur = rows.take(r)
        exp = expected_reworks(self.history.events, cur, self.main.start, cfg)
        keys, t_closed, vals = tech_oe_rows(cur, exp, cfg)
        inn = cur["oe_in"] > 0
        if inn.any():
            self._replace(
                {
                    "tech_oe": (
                        keys[inn],
                        t_closed[inn],
                        {"pos": cur["oe_pos"][inn], "exp": cur["exp"][inn]},
                    )
                },
                {"tech_oe": (keys[inn], t_closed[inn], {"pos": vals["pos"][inn], "exp": exp[inn]})},
            )
        if not inn.all():
            out = ~inn
            self.deltas["tech_oe"].add(
                keys[out], t_closed[out], {"pos": vals["pos"][out], "exp": exp[out]}, +1
            )
        rows.cols["exp"][r] = exp
        rows.cols["oe_pos"][r] = vals["pos"]
        rows.cols["oe_in"][r] = 1.0
        rows.cols["oe_due"][r] = 0.0

    def _add_rows(self, events: dict[str, Any], w: float) -> None:
        for name, (keys, times, values) in events.items():
            self.deltas[name].add(keys, times, values, w)

    def _replace(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Retract the rows of ``old`` and add those of ``new`` where an index's row changed."""
        for name, (ko, to, vo) in old.items():
            kn, tn, vn = new[name]
            ko, kn = np.asarray(ko, dtype=np.int64), np.asarray(kn, dtype=np.int64)
            diff = (ko != kn) | ~_same_arr(np.asarray(to, float), np.asarray(tn, float))
            for v in vo:
                diff |= ~_same_arr(np.asarray(vo[v], float), np.asarray(vn[v], float))
            if diff.any():
                self.deltas[name].add(ko[diff], np.asarray(to)[diff], _sel(vo, diff), -1)
                self.deltas[name].add(kn[diff], np.asarray(tn)[diff], _sel(vn, diff), +1)

    def _update_firsts(self, name: str, key: str, new_rows: np.ndarray) -> float:
        """New first reports of homes; returns the earliest changed time (inf: none)."""
        rows, firsts, delta = self.rows, self.firsts[name], self.deltas[name]
        tau = np.inf
        keys = rows[key]
        units, ks, ts = (rows["unit"][new_rows], keys[new_rows], rows["t_rep"][new_rows])
        # the index's rows are a sum of weighted events: gathered here and added in two calls
        # (one per weight) instead of two ``add`` calls per new first (10k orders: 10-20k)
        retract: tuple[list[int], list[float]] = ([], [])
        first: tuple[list[int], list[float]] = ([], [])
        for r, u, k, t in zip(
            new_rows.tolist(), units.tolist(), ks.tolist(), ts.tolist(), strict=True
        ):
            u, k = int(u), int(k)
            if u < 0 or k < 0 or t != t:
                continue
            cur = firsts.get(u)
            if cur is not None and cur[0] <= t:
                continue  # an earlier (or tied, stored first) report stays the first
            if cur is not None:
                retract[0].append(int(keys[cur[1]]))
                retract[1].append(cur[0])
            first[0].append(k)
            first[1].append(t)
            firsts[u] = (t, r)
            tau = min(tau, t)
        if retract[0]:
            delta.add(np.array(retract[0], dtype=np.int64), np.array(retract[1]), {}, -1)
        if first[0]:
            delta.add(np.array(first[0], dtype=np.int64), np.array(first[1]), {}, +1)
        return tau

    def _add_complaints(self, orders: pd.DataFrame) -> None:
        comp = np.nan_to_num(_bool(orders["complaint"])) > 0
        if not comp.any():
            return
        done = _secs(orders["completed_at"]) + self.follow_s
        for u, t in zip(_str(orders["unit_id"])[comp], done[comp], strict=True):
            if u is not None and not np.isnan(t):
                bisect.insort(self.complaints.setdefault(u, []), float(t))


def dissatisfied(orders: pd.DataFrame, cfg: FeatureConfig) -> np.ndarray:
    """The history's dissatisfaction label, from arrays.

    :func:`models.labels.dissatisfied_labels` without comment sentiment, as ``build_history``
    derives it; one order costs microseconds here, ~5 ms through the DataFrame function
    (tests/test_serving_history.py checks both agree).
    """
    lc = cfg.label_config()
    # NaT through the int64 view: ``Series.notna`` costs ~0.2 ms on one row
    completed = (_str(orders["status"]) == "completed") & (_ns(orders["completed_at"]) != _NAT)
    rating = _num(orders["rating"])
    complaint = np.nan_to_num(_bool(orders["complaint"])) > 0
    with np.errstate(invalid="ignore"):
        low = rating <= lc.dissatisfied_max_rating
    label = np.where(~np.isnan(rating), 0.0, np.nan)
    label[complaint | low] = 1.0
    label[~completed] = np.nan
    return label


def _sel(values: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[mask] for k, v in values.items()}


def _same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == b


def _same_arr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))
