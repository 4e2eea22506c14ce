"""The whole decision for a batch of validated orders: store, features, heads, policy, sample.

Why an in-memory history: as-of features need the past orders of the same home, technician,
resident and community. Rebuilding the feature index from the database per request would cost
seconds, so the service keeps the history of every stored order in memory
(:class:`HistoryCache`): each batch's new orders are appended before its features are computed,
so they are history for each other (as in training) and for the next request at once; a
background thread folds corrections in and re-indexes a grown delta. Features are computed by
``models.features.feature_arrays`` / ``features_for``, the training code path.

Big batches (up to 10,000 orders) take column-wise paths in the store (hashes, rows, rework
links, inserts) that record exactly what the per-order paths record (tests compare both), run
with the cyclic GC paused, and the history merge they trigger waits until they are answered.
Their inserts run on a writer thread while the request thread works on (orders: history
append and decisions; decisions: the rows and the answer's JSON); the transaction commits only
after both, so an answered decision is a recorded one.

Idempotency: a decision is keyed by (order id, content hash, model version). Sending the same
order again returns the recorded decision; ``rescore`` asks for a decision under the model being
served now, and both rows are kept. The sample draw is keyed on the order id alone, so neither
re-sending nor re-scoring can re-roll it.
"""

from __future__ import annotations

import bisect
import datetime as dt
import gc
import logging
import os
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models import sampling as S
from models.estimators import HEADS, RiskModel
from models.features import CATEGORICAL_LEVELS, History, feature_arrays, features_for
from models.features import _secs as epoch_seconds
from models.reasons import Reasoner
from models.schemas import ORDERS, TIMEZONE
from models.validation import SOURCE_ROW, validate_records
from serving.history import Columns, IncrementalHistory
from serving.model_source import ModelIdentity
from serving.store.db import Store, content_hashes, frame_rows, utcnow

log = logging.getLogger(__name__)

_DAY_S = 86400.0


@dataclass
class ServedModel:
    """A loaded model with its identity and its reasons table (swapped atomically)."""

    model: RiskModel
    identity: ModelIdentity
    reasoner: Reasoner
    #: Heads score numpy rows (``RiskHead.predict_proba_matrix``): set when the load-time
    #: check found them equal to the DataFrame path on the smoke batch.
    numpy_heads: bool = False


def freeze_long_lived() -> None:
    """Move every live object out of the cyclic GC's scans (``gc.freeze``), garbage first.

    Why: the model and the history live until the next reload or merge, and rescanning them
    at every full collection cost batches ~20 % of their rate. The cyclic GC never frees a
    frozen object, so a cycle that is garbage at the freeze would stay in memory for good:
    ``gc.collect`` first. It scans only what was made since the last freeze (~2-5 ms after a
    merge, measured); a replaced history itself has no cycles and goes by reference counting
    (``serving.history._settler``).
    """
    gc.collect()
    gc.freeze()


class HistoryCache:
    """Every stored order as an as-of history, extended by each scored batch (no lag).

    The history is a :class:`serving.history.IncrementalHistory`: a batch's new orders are
    appended before its features are computed, so they are history for each other (as in
    training) and for the next request at once. What cannot be appended — corrected orders,
    new technicians / units tables, an order reported before the history's start — and a
    delta grown past ``merge_orders`` is folded in by a rebuild in a background thread
    (at most every ``refresh_seconds``); orders appended meanwhile are re-appended to the new
    history before it is swapped in, so none is lost.

    ``lock`` serialises appends and the feature reads of the scorer (one scoring at a time
    mutates the history; reads by other code see a consistent old or new delta row set).
    """

    def __init__(self, store: Store, refresh_seconds: float, merge_orders: int = 5000):
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.merge_orders = merge_orders
        self.lock = threading.RLock()
        self._seed = store.orders_frame()
        self._technicians = store.side_frame("technicians")
        self._units = store.side_frame("units")
        self._corrections: list[pd.DataFrame] = []
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: IncrementalHistory | None = None
        self.built_at = 0.0
        self.appended_since_check = 0

    @property
    def history(self) -> History | None:
        """The features' history (None before the first build)."""
        return None if self.current is None else self.current.history

    @property
    def complaints(self) -> dict[str, list[float]]:
        """Home -> sorted times at which a complaint on it became known."""
        return {} if self.current is None else self.current.complaints

    @property
    def orders(self) -> pd.DataFrame:
        """Every order of the history (typed contract frame)."""
        if self.current is None:
            return self._seed
        frames = self.current.frames
        if len(frames) > 1:  # concatenate once, keep the result for the next reader
            merged = pd.concat(frames, ignore_index=True)
            merged = merged.drop(columns=[SOURCE_ROW], errors="ignore")
            self.current.frames = frames = [merged]
        return frames[0]

    def known(self, ids: list[str]) -> np.ndarray:
        """Which order ids are part of the history."""
        cur = self.current
        if cur is None:
            return np.zeros(len(ids), dtype=bool)
        return np.fromiter((cur.contains(i) for i in ids), dtype=bool, count=len(ids))

    def add(
        self,
        orders: pd.DataFrame,
        side_changed: bool = False,
        corrected: pd.DataFrame | None = None,
    ) -> None:
        """Fold stored orders (typed) into the history.

        ``orders``: orders not in the history yet (appended at once). ``corrected``: orders of
        the history whose stored content may have changed (folded in by the next rebuild).
        """
        with self.lock:
            if side_changed:
                self._technicians = self.store.side_frame("technicians")
                self._units = self.store.side_frame("units")
                self._dirty.set()
            if corrected is not None and len(corrected):
                self._corrections.append(corrected)
                self._dirty.set()
            cur = self.current
            if cur is None or not len(orders):
                return
            cur.append(orders)
            self.appended_since_check += len(orders)
            if not np.isfinite(cur.main.start):  # a first batch into an empty store: the
                # history's start (exposure features) comes from it, so index it fully now
                self.current = cur = cur.rebuilt()
                freeze_long_lived()  # long-lived indexes: out of the cyclic GC's collections
            if cur.needs_rebuild or cur.appended >= self.merge_orders:
                self._dirty.set()

    def rebuild(self, model: RiskModel) -> None:
        """Build the history now from everything known (start-up, reload, tests) and install."""
        self.install(self.build(model))

    def build(self, model: RiskModel) -> IncrementalHistory:
        """A history of the current orders under ``model``'s feature config (not installed).

        Orders appended to the current history while this runs are not in it: ``install``
        appends them.
        """
        with self.lock:
            frames = [self.orders, *self._corrections]
            self._corrections = []
            self._dirty.clear()
            techs, units = self._technicians, self._units
        orders = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        orders = orders.drop(columns=[SOURCE_ROW], errors="ignore")
        orders = orders.drop_duplicates("order_id", keep="last").reset_index(drop=True)
        cfg = model.feature_config
        complaints = {
            k: list(v) for k, v in _complaint_index(orders, cfg.followup_delay_hours).items()
        }
        return IncrementalHistory(
            orders,
            techs,
            units,
            cfg,
            model.text_scorer,
            complaints,
            getattr(model, "text_models", {}),  # a duck-typed model may have none
        )

    def install(self, inc: IncrementalHistory) -> None:
        """Make a built history the one requests use; catches up on orders appended since."""
        with self.lock:
            cur = self.current
            if cur is not None:  # orders appended while ``inc`` was built: append them too
                missing = [r for r, i in enumerate(cur.row_ids) if not inc.contains(i)]
                if missing:
                    frames = cur.frames
                    every = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
                    inc.append(every.iloc[missing])
            inc.frames = (
                [pd.concat(inc.frames, ignore_index=True)] if len(inc.frames) > 1 else inc.frames
            )
            self.current = inc
            self.built_at = time.monotonic()
        # the new indexes live until the next rebuild: keep the cyclic GC from rescanning them
        # at every full collection during requests (as main.py does after start-up)
        freeze_long_lived()

    def start(self, current: Any, on_rebuild: Any = None) -> None:
        """Background merger; ``current()`` returns the served model at each rebuild.

        ``on_rebuild()`` runs after each rebuild and after new orders were appended (the state
        upgrades exact reasons to binned ones once the store holds a reference sample).
        """

        def loop() -> None:
            while not self._stop.is_set():
                if self._dirty.wait(timeout=0.5) and not self._stop.is_set():
                    wait = self.refresh_seconds - (time.monotonic() - self.built_at)
                    if wait > 0 and self._stop.wait(wait):
                        return
                    if self._after_batches():
                        return
                    try:
                        self.rebuild(current().model)
                    except Exception:  # keep serving the old history
                        log.exception("history rebuild failed")
                        self.built_at = time.monotonic()
                elif not self.appended_since_check:
                    continue
                elif self._after_batches():
                    return
                self.appended_since_check = 0
                if on_rebuild is not None:
                    try:
                        on_rebuild()
                    except Exception:
                        log.exception("after-rebuild hook failed")

        self._thread = threading.Thread(target=loop, name="history-merge", daemon=True)
        self._thread.start()

    def _after_batches(self) -> bool:
        """Wait while a big batch is being scored (at most ``MERGE_DEFER_SECONDS``).

        Why: a 10,000-order batch appends past ``merge_orders`` and so wakes this merger in the
        middle of its own request; the rebuild (and the reasons upgrade) then competed with it
        for the GIL, ~0.4 s of a ~1.7 s request. Started after the batch, the merge costs the
        same but no request waits for it. Returns True when the service is stopping.
        """
        deadline = time.monotonic() + MERGE_DEFER_SECONDS
        while big_batches_in_flight() and time.monotonic() < deadline:
            if self._stop.wait(0.02):
                return True
        return self._stop.is_set()

    def stop(self) -> None:
        """Stop the merger (shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def days_since_unit_complaint(self, units: np.ndarray, t_done: np.ndarray) -> np.ndarray:
        """Days since the latest complaint on each home known before each completion."""
        out = np.full(len(units), np.nan)
        complaints = self.complaints
        for i, (u, t) in enumerate(zip(units, t_done, strict=True)):
            times = complaints.get(u)
            if not times or np.isnan(t):
                continue
            k = bisect.bisect_left(times, t)
            if k:
                out[i] = (t - times[k - 1]) / _DAY_S
        return out


def _secs(s: pd.Series) -> np.ndarray:
    """Epoch seconds of a tz-aware timestamp column (NaN missing)."""
    return (
        (s.dt.tz_convert("UTC") - pd.Timestamp(0, tz="UTC"))
        .dt.total_seconds()
        .to_numpy(dtype=float, na_value=np.nan)
    )


def _complaint_index(orders: pd.DataFrame, followup_hours: float) -> dict[str, np.ndarray]:
    """Home -> sorted times at which a complaint on it became known (completion + follow-up)."""
    c = orders[orders["complaint"].fillna(False).astype(bool) & orders["completed_at"].notna()]
    if not len(c):
        return {}
    known = _secs(c["completed_at"]) + followup_hours * 3600.0
    frame = pd.DataFrame({"unit": c["unit_id"].astype(str).to_numpy(), "t": known})
    return {u: np.sort(g["t"].to_numpy()) for u, g in frame.groupby("unit")}


_NAT = np.iinfo(np.int64).min
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US_PER = {"s": 10**6, "ms": 10**3, "us": 1}


def db_rows(orders: pd.DataFrame) -> list[dict[str, Any]]:
    """``frame_rows(orders, ORDERS)`` from numpy columns (~2x faster for one order or 10,000).

    Same values and Python types (the content hash of an order depends on them; the serving
    tests check equality); falls back to ``frame_rows`` for unknown dtypes.
    """
    return db_rows_and_columns(orders)[0]


def db_rows_and_columns(
    orders: pd.DataFrame,
) -> tuple[list[dict[str, Any]], dict[str, list[Any]] | None]:
    """:func:`db_rows` and the same values per column (None after the fallback).

    The columns spare the batch's hashes and insert reading every cell back out of the rows.
    """
    cols = [c for c in ORDERS.names if c in orders]
    values = []
    for c in cols:
        v = _db_values(orders[c])
        if v is None:
            return frame_rows(orders, ORDERS), None
        values.append(v)
    rows = [dict(zip(cols, row, strict=True)) for row in zip(*values, strict=True)]
    return rows, dict(zip(cols, values, strict=True))


def _db_values(s: pd.Series) -> list[Any] | None:
    """DB values of one typed column (None: a dtype this fast path does not know)."""
    dtype = s.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) and dtype.unit in ("ns", *_US_PER):
        i8 = s.array.asi8
        us = i8 // 1000 if dtype.unit == "ns" else i8 * _US_PER[dtype.unit]
        return [
            None if x == _NAT else _EPOCH_UTC + dt.timedelta(microseconds=u)
            for x, u in zip(i8.tolist(), us.tolist(), strict=True)
        ]
    if isinstance(dtype, pd.StringDtype) or dtype is np.dtype(object):
        return s.to_numpy(dtype=object, na_value=None).tolist()
    if isinstance(dtype, pd.BooleanDtype | pd.Int64Dtype):  # Python bool / int, NA -> None
        return s.to_numpy(dtype=object, na_value=None).tolist()
    if dtype == np.float64:
        return [None if v != v else v for v in s.to_numpy().tolist()]
    return None


def _decision_rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The decisions of :meth:`Scorer._decide`'s columns as one dict per decision.

    ``model_versions`` is one shared dict in the columns; every row gets its own copy.
    """
    keys = list(columns)
    rows = [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    for r in rows:
        r["model_versions"] = dict(r["model_versions"])
    return rows


def _uuid4_hexes(n: int) -> list[str]:
    """``[uuid.uuid4().hex for _ in range(n)]`` from one ``os.urandom`` call (10k: ~30 -> 3 ms).

    Random UUIDs as RFC 4122 version 4 (the version and variant bits set as ``uuid4`` does).
    """
    if n == 1:
        return [uuid.uuid4().hex]
    b = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    b[:, 6] = (b[:, 6] & 0x0F) | 0x40
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80
    text = b.tobytes().hex()
    return [text[32 * i : 32 * (i + 1)] for i in range(n)]


def _strs(s: pd.Series) -> np.ndarray:
    """Object array of a required string column (ids, category): no per-call conversion."""
    return s.to_numpy(dtype=object, na_value=None).astype(str)


def feature_matrix(arrays: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """``numeric_matrix(features_for(...), names)`` straight from :func:`feature_arrays`.

    Categoricals are already their contract level codes (-1 -> NaN), which is what
    ``numeric_matrix`` computes from the DataFrame; the state checks both agree at load time.
    """
    n = len(next(iter(arrays.values()))) if arrays else 0
    M = np.empty((n, len(names)))
    for j, c in enumerate(names):
        v = arrays[c]
        M[:, j] = np.where(v >= 0, v, np.nan) if c in CATEGORICAL_LEVELS else v
    return M


class _Column:
    """One feature column of a :class:`FeatureView` (``to_numpy`` like a Series)."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray):
        self.values = values

    def to_numpy(self, dtype: Any = None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype)


class FeatureView:
    """The few frame operations the binned reasons read (``len``, ``in``, ``[c].to_numpy()``).

    Why not a DataFrame: building one from ~100 arrays and taking it apart again costs more
    than a single order's features. Categoricals read back as their level strings (NaN
    missing), exactly as from the ``features_for`` frame.
    """

    def __init__(self, arrays: dict[str, np.ndarray], n: int):
        self.arrays = arrays
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __contains__(self, name: object) -> bool:
        return name in self.arrays

    def __getitem__(self, name: str) -> _Column:
        v = self.arrays[name]
        if name in CATEGORICAL_LEVELS:
            levels = np.array([*CATEGORICAL_LEVELS[name], np.nan], dtype=object)
            return _Column(levels[np.where(v >= 0, v, -1)])
        return _Column(v)

    def frame(self, index: pd.Index) -> pd.DataFrame:
        """The same features as a DataFrame (what ``features_for`` returns, without ids)."""
        data: dict[str, Any] = dict(self.arrays)
        for col, levels in CATEGORICAL_LEVELS.items():
            data[col] = pd.Categorical.from_codes(data[col], categories=list(levels))
        return pd.DataFrame(data, index=index)


class Coalescer:
    """Scores small concurrent requests together, on one thread, without waiting for company.

    Why: the whole decision of one order has a large fixed cost per call (validation frames,
    DB transactions, history append); the same work for 50 orders costs little more. Requests
    queue here; the scoring thread takes everything queued when it becomes free (up to
    ``max_orders``) and handles it as one batch, so a lone request is scored at once (no
    batching window, no added latency) while under concurrency the fixed cost is shared.
    Requests whose order ids overlap, or that differ in ``rescore``, go in separate batches;
    each request still gets exactly its own decisions, in its own order, and an error fails
    only the requests of that batch.

    ``submit_raw`` takes the request's order dicts unvalidated: they are validated together
    with the batch's other requests (one vectorised pass instead of one per request); a request
    with any invalid order gets ``None`` back and is validated alone by its route for the
    exact error messages, and is not scored here.
    """

    def __init__(self, scorer: Scorer, max_orders: int = 256):
        self.scorer = scorer
        self.max_orders = max_orders
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: Held while a batch is scored (by the scoring thread or inline by a lone request).
        self._busy = threading.Lock()
        self._inflight = 0

    def submit(
        self, orders: pd.DataFrame, rescore: bool
    ) -> tuple[list[dict[str, Any]], list[bool]]:
        """What ``Scorer.score(orders, rescore)`` returns, scored in the next free batch."""
        return self._submit(_Job(orders, None, rescore, set(orders["order_id"]), len(orders)))

    def submit_raw(
        self, raw: list[dict[str, Any]], rescore: bool, flush_later: bool = False
    ) -> tuple[list[dict[str, Any]], list[bool]] | None:
        """Validate and score contract order dicts; None when any of them is invalid.

        ``flush_later``: the caller calls ``Scorer.flush()`` itself once its response is sent
        (the deferred history append then neither delays nor competes with the response).
        """
        ids = {str(o.get("order_id")) for o in raw}
        return self._submit(_Job(None, raw, rescore, ids, len(raw)), flush_later)

    def _submit(self, job: _Job, flush_later: bool = False) -> Any:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="scorer", daemon=True)
                self._thread.start()
        with self._lock:
            self._inflight += 1
            alone = self._inflight == 1
        try:
            # the only request in flight and nobody scoring: score on this thread (two thread
            # hand-offs less, each a scheduler wake-up on a busy machine); with company, queue
            # so that concurrent requests share one scoring
            if alone and self._queue.empty() and self._busy.acquire(blocking=False):
                try:
                    self._run([job], flush=False)
                finally:
                    self._busy.release()
                if not flush_later:  # the deferred history append, on the scoring thread
                    self._queue.put(_FLUSH)
                return job.future.result()
            self._queue.put(job)
            return job.future.result()
        finally:
            with self._lock:
                self._inflight -= 1

    def stop(self) -> None:
        """Finish what is queued, then stop the scoring thread."""
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        backlog: deque = deque()
        while True:
            if backlog:
                first = backlog.popleft()
            elif self._stopping:
                return
            else:
                first = self._queue.get()
                if first is None:
                    return
            if first is _FLUSH:
                with self._busy:
                    self._flush()
                continue
            batch = [first]
            ids = set(first.ids)
            n = first.n
            while n < self.max_orders:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._stopping = True
                    break
                if item is _FLUSH:  # scoring flushes pending appends first anyway
                    continue
                if item.rescore != first.rescore or ids & item.ids:
                    backlog.append(item)
                    continue
                batch.append(item)
                ids |= item.ids
                n += item.n
            with self._busy:
                self._run(batch)

    def _run(self, batch: list[_Job], flush: bool = True) -> None:
        try:
            frames, jobs = [], []
            raw_jobs = [j for j in batch if j.raw is not None]
            if raw_jobs:
                valid, bad = validate_raw([o for j in raw_jobs for o in j.raw])
                start, keep = 0, np.zeros(len(valid), dtype=bool)
                rows = valid[SOURCE_ROW].to_numpy(dtype=np.int64)
                for j in raw_jobs:
                    mine = (rows >= start) & (rows < start + j.n)
                    if any(start <= b < start + j.n for b in bad) or mine.sum() != j.n:
                        j.future.set_result(None)  # the route validates it alone
                    else:
                        keep |= mine
                        jobs.append(j)
                    start += j.n
                if keep.any():
                    frames.append(valid if keep.all() else valid[keep])
            for j in batch:
                if j.raw is None:
                    frames.append(j.orders)
                    jobs.append(j)
            if not jobs:
                return
            merged = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            records, replayed = self.scorer.score(
                merged, rescore=batch[0].rescore, defer_append=True
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting requests
            for j in batch:
                if not j.future.done():
                    j.future.set_exception(exc)
            return
        k = 0
        for j in jobs:  # raw jobs first, in the order their rows were merged
            j.future.set_result((records[k : k + j.n], replayed[k : k + j.n]))
            k += j.n
        if flush:
            self._flush()

    def _flush(self) -> None:
        try:
            self.scorer.flush()  # history for the next request, after answering this one
        except Exception:  # noqa: BLE001 - the next score() retries the append
            log.exception("deferred history append failed")


#: Inspection flags whose wording quotes the order's own score (the others are worded once).
_SCORED_FLAGS = frozenset({"model_rework_risk", "model_dissatisfaction"})
#: Queue marker: append the deferred order to the history (after an inline scoring).
_FLUSH = object()


@dataclass
class _Job:
    """One request waiting in the coalescer: typed orders, or raw order dicts to validate."""

    orders: pd.DataFrame | None
    raw: list[dict[str, Any]] | None
    rescore: bool
    ids: set
    n: int
    future: Future = field(default_factory=Future)


def validate_raw(raw: list[dict[str, Any]]) -> tuple[pd.DataFrame, set[int]]:
    """Valid, completed orders of contract dicts and the indexes of the others.

    The same checks as the score route's (``models.validation.validate_records`` and
    "only completed orders are scored").
    """
    res = validate_records(raw, ORDERS)
    bad = {int(i) for i in res.quarantine[SOURCE_ROW].tolist()}
    valid = res.valid
    status = valid["status"].to_numpy(dtype=object, na_value=None)
    not_done = status != "completed"
    if not_done.any():
        bad |= {int(i) for i in valid.loc[not_done, SOURCE_ROW].tolist()}
        valid = valid[~not_done]
    return valid, bad


#: From this many orders, a scoring runs with the cyclic GC paused (see :func:`gc_paused`).
GC_PAUSE_ORDERS = 1000
#: From this many orders, a scoring writes its orders and its decisions on the store's writer
#: thread while the request thread appends, computes and builds rows (:meth:`Scorer._score`).
OVERLAP_ORDERS = 1000
#: Longest a background history merge waits for big batches in flight (back-to-back batches
#: must not postpone it forever: the delta indexes keep growing until it runs).
MERGE_DEFER_SECONDS = 30.0
_GC_LOCK = threading.Lock()
_GC_PAUSES = [0, False]  # scorings inside a pause, whether the GC was enabled before the first


def big_batches_in_flight() -> int:
    """Big batches being scored now (inside :func:`gc_paused`): background merges wait."""
    return _GC_PAUSES[0]


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a big batch is scored, back on afterwards.

    Why: a 10,000-order batch allocates ~100,000 short-lived containers (rows, decisions,
    reasons), which triggered several full collections over everything allocated since the
    last ``gc.freeze`` — ~0.18 s of a ~1.8 s request. Reference counting still frees almost
    all of it; any cycle made meanwhile waits for the first collection after the pause. Nested
    and concurrent pauses count: the GC comes back when the last one ends, and only if it was
    on before the first. A pause also marks a big batch in flight, which the history's
    background merge waits for (:meth:`HistoryCache._after_batches`).
    """
    with _GC_LOCK:
        if _GC_PAUSES[0] == 0:
            _GC_PAUSES[1] = gc.isenabled()
            gc.disable()
        _GC_PAUSES[0] += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_PAUSES[0] -= 1
            if _GC_PAUSES[0] == 0 and _GC_PAUSES[1]:
                gc.enable()


@contextmanager
def _writer_thread(wanted: bool) -> Iterator[Callable[..., Future] | None]:
    """A big batch's own writer thread: ``submit(fn, ...)`` runs ``fn`` there (None: none).

    Why: a big batch's inserts (new orders and their rework links, then decisions) run
    mostly inside SQLite, which releases the GIL while it inserts and queries; on a second
    core they overlap the history append, features, reasons and decision rows of the request
    thread. The rework links (~0.1 s of a 10k batch, mostly SQLite reading the homes' orders)
    follow the order insert on this thread: they only read the store, which nothing on the
    request thread needs before the decisions are inserted. The caller waits for every job
    before its transaction ends (commit or rollback), so an answered decision is a recorded
    one. One thread per batch, not one shared: a batch's write waits for another's SQLite
    write lock, and on a shared thread it would block the other batch's remaining inserts
    behind it.
    """
    if not wanted:
        yield None
        return
    ex = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
    try:
        yield ex.submit
    finally:
        ex.shutdown(wait=True)


def _then(first: Callable[[], Any] | None, second: Callable[[], Any]) -> Callable[[], Any]:
    """``first()`` (if any), then ``second()``'s result: two steps as one writer job."""

    def both() -> Any:
        if first is not None:
            first()
        return second()

    return both


class Scorer:
    """Turns validated orders into recorded decisions."""

    def __init__(
        self,
        store: Store,
        cache: HistoryCache,
        served: ServedModel,
        policy: S.Policy,
        secret: bytes,
        reasons_k: int,
    ):
        self.store = store
        self.cache = cache
        self.served = served
        self.policy = policy
        self.secret = secret
        self.reasons_k = reasons_k
        self.base = S.solve_base(policy.sampling)
        self.coalescer = Coalescer(self)
        self._deferred: Columns | None = None

    def score(
        self,
        orders: pd.DataFrame,
        rescore: bool = False,
        defer_append: bool = False,
        prepare: Callable[[list[dict[str, Any]], list[bool]], Any] | None = None,
    ) -> tuple[list[dict[str, Any]], list[bool]]:
        """Store, score and record ``orders`` (typed, valid, unique ids).

        Returns one decision per order and whether it was recorded before this call.

        ``defer_append``: a lone new order is appended to the history by :meth:`flush` (the
        coalescer calls it right after answering) instead of before its features — its own
        as-of features never include it, and the next scoring flushes first — which takes
        the append off the request's latency.

        ``prepare(records, replayed)``: work on the answer (e.g. its JSON) done while a big
        batch's decisions are being inserted, before they are committed. Its arguments are
        the lists this call returns — the same objects — unless a concurrent request recorded
        some of the decisions first (then the returned lists are new ones and the caller
        must redo its work). Nothing prepared may leave the process before this returns: a
        decision is answered only once it is committed.
        """
        if len(orders) < GC_PAUSE_ORDERS:
            return self._score(orders, rescore, defer_append, prepare)
        with gc_paused():
            return self._score(orders, rescore, defer_append, prepare)

    def _score(
        self,
        orders: pd.DataFrame,
        rescore: bool,
        defer_append: bool,
        prepare: Callable[[list[dict[str, Any]], list[bool]], Any] | None = None,
    ) -> tuple[list[dict[str, Any]], list[bool]]:
        served = self.served  # one model for the whole batch, even if a reload happens now
        cols = Columns(orders)
        rows, columns = db_rows_and_columns(cols)  # type: ignore[arg-type]
        hashes = content_hashes(rows, columns)
        ids = [r["order_id"] for r in rows]
        version = served.identity.tag if rescore else None
        # one transaction for the request: its orders, their rework links and its decisions
        # are committed together (one commit instead of three; a decision is never recorded
        # without its order). On SQLite the first SELECT runs before the write lock is taken,
        # and the lock is held from the order upsert to the commit.
        overlap = len(orders) >= OVERLAP_ORDERS
        with _writer_thread(overlap) as background, self.store.transaction() as conn:
            found = self.store.find_decisions(zip(ids, hashes, strict=True), version, conn)
            todo = np.array([i not in found for i in ids], dtype=bool)
            answer: tuple[list[dict[str, Any]], list[bool]] | None = None
            with self.cache.lock:  # store, append to the history and compute features as one
                self.flush()
                if overlap:  # the new orders are inserted on the writer thread meanwhile
                    stored = self.store.order_hashes(ids, conn)
                    changed = sum(stored.get(i) != h for i, h in zip(ids, hashes, strict=True))
                    write, finish = self.store.upsert_orders_steps(
                        rows, hashes, conn, columns, stored
                    )
                    # the rework links read the inserted orders: on the writer too, after them
                    writing = background(_then(write, finish))
                else:
                    writing = None
                    changed = self.store.upsert_orders(rows, hashes, conn, columns)
                try:
                    if changed:
                        known = self.cache.known(ids)
                        fresh = cols if not known.any() else Columns(orders[~known])
                        corrected = orders[known] if changed > len(fresh) else None
                        if defer_append and len(fresh) == 1 and corrected is None:
                            self._deferred = fresh
                        else:
                            self.cache.add(fresh, corrected=corrected)
                    if todo.any():
                        chosen = cols if todo.all() else Columns(orders[todo])
                        new_columns = self._decide(
                            served,
                            chosen,
                            [h for h, t in zip(hashes, todo, strict=True) if t],
                            background,
                        )
                finally:  # the connection is the writer's until it is done (also on errors)
                    if writing is not None:
                        writing.result()
            if todo.any():
                if overlap:  # the decisions inserted on the writer thread, rows built here
                    n_new = len(new_columns["order_id"])
                    writing = background(
                        self.store.prepare_decisions([{}] * n_new, conn, new_columns)
                    )
                    try:
                        new = _decision_rows(new_columns)
                        if prepare is not None:  # the answer if every insert is ours
                            ours = found | {r["order_id"]: r for r in new}
                            answer = [ours[i] for i in ids], [not t for t in todo]
                            prepare(*answer)
                    finally:
                        inserted = writing.result()
                else:
                    new = _decision_rows(new_columns)
                    inserted = self.store.insert_decisions(new, conn, new_columns)
                if inserted == len(new):  # all ours: no read-back round trip
                    found.update({r["order_id"]: r for r in new})
                else:  # a concurrent request recorded some first: return the recorded ones
                    answer = None
                    keys = [(r["order_id"], r["input_hash"]) for r in new]
                    found.update(self.store.find_decisions(keys, served.identity.tag, conn))
        if answer is not None:  # committed: what ``prepare`` saw is the answer
            return answer
        return [found[i] for i in ids], [not t for t in todo]

    def flush(self) -> None:
        """Append a deferred order to the history (see ``score(defer_append=True)``)."""
        if self._deferred is None:
            return
        with self.cache.lock:
            deferred, self._deferred = self._deferred, None
            if deferred is not None:
                try:
                    self.cache.add(deferred)
                except BaseException:
                    self._deferred = deferred  # retried by the next score()
                    raise

    def _decide(
        self,
        served: ServedModel,
        orders: pd.DataFrame,
        hashes: list[str],
        background: Callable[..., Future] | None = None,
    ) -> dict[str, list[Any]]:
        """Features, both heads, policy and sample for orders without a recorded decision.

        ``background``: the batch's writer thread (:func:`_writer_thread`), if it has one.

        Returns the decisions per column (what the insert reads; :func:`_decision_rows` makes
        the rows).
        """
        history = self.cache.history
        assert history is not None, "history not built"
        names = served.model.feature_names
        heads = served.model.heads
        heading: Future | None = None
        if served.numpy_heads:  # one float matrix for both heads and the reasons
            arrays = feature_arrays(history, orders)
            M = feature_matrix(arrays, names)

            def predict(M: np.ndarray = M) -> dict[str, np.ndarray]:
                return {col: heads[h].predict_proba_matrix(M) for h, col in HEADS.items()}

            if background is not None:  # LightGBM predicts without the GIL: on the
                heading = background(predict)  # writer thread, beside the reasons
            else:
                scores = predict()
            feats: Any = FeatureView(arrays, len(orders))
            if served.reasoner.mode != "binned":  # exact reasons read a DataFrame
                feats = feats.frame(orders.index)
        else:
            feats = features_for(history, orders)
            M = None
            scores = {col: heads[h].predict_proba(feats[names]) for h, col in HEADS.items()}
        try:
            reasons = served.reasoner.top(feats, self.reasons_k, M)
        finally:
            if heading is not None:
                scores = heading.result()
        pol = self.policy
        levels = S.risk_level(scores, pol.risk_levels)
        pi = S.inclusion_probabilities(levels, pol.sampling, self.base)
        ids = _strs(orders["order_id"])
        u, sampled = S.draw(self.secret, ids, pi)
        t_done = epoch_seconds(orders["completed_at"])
        facts = S.OrderFacts(
            order_ids=ids,
            category=_strs(orders["category"]),
            priority=_strs(orders["priority"]),
            report_night=feats["report_night"].to_numpy(dtype=float),
            report_holiday=feats["report_holiday"].to_numpy(dtype=float),
            tech_certified=feats["tech_certified"].to_numpy(dtype=float),
            has_parent=orders["parent_order_id"].notna().to_numpy(),
            days_since_unit_cat_done=feats["days_since_unit_cat_done"].to_numpy(dtype=float),
            days_since_unit_complaint=self.cache.days_since_unit_complaint(
                _strs(orders["unit_id"]), t_done
            ),
        )
        rule_codes = S.hard_rule_reasons(facts, pol.hard_rules, self.secret)
        model_codes = self._model_flags(scores, orders)
        now = utcnow()
        decision_ids = _uuid4_hexes(len(orders))
        # column lists once: per-row DataFrame access costs ~30 us per cell
        done_utc = _db_values(orders["completed_at"]) or [None] * len(orders)
        communities = _strs(orders["community_id"]).tolist()
        head_versions = served.identity.head_versions()
        rework = scores["rework_risk"].tolist()
        dissat = scores["dissatisfaction_prob"].tolist()
        level_list, sampled_list = levels.tolist(), sampled.tolist()
        pi_list, u_list = pi.tolist(), u.tolist()
        worded: dict[tuple[str, str], dict[str, Any]] = {}  # flags whose text has no score

        def flag(code: str, kind: str, i: int) -> dict[str, Any]:
            if code in _SCORED_FLAGS:
                return self._flag(code, kind, scores, i)
            f = worded.get((code, kind))
            if f is None:
                f = worded[(code, kind)] = self._flag(code, kind, scores, i)
            return dict(f)  # each decision its own object

        every_flags: list[list[dict[str, Any]]] = []
        for i in range(len(orders)):
            flags = [flag(c, "rule", i) for c in rule_codes[i]]
            flags += [flag(c, "model", i) for c in model_codes[i]]
            every_flags.append(flags)
        n = len(orders)
        return {  # one object where every row holds an equal one (copied per row by the rows)
            "decision_id": decision_ids,
            "order_id": ids.tolist(),
            "input_hash": list(hashes),
            "model_version": [served.identity.tag] * n,
            "model_versions": [dict(head_versions)] * n,
            "policy_version": [pol.version] * n,
            "rework_risk": rework,
            "dissatisfaction_prob": dissat,
            "risk_level": [str(v) for v in level_list],
            "mandatory_inspection": [bool(f) for f in every_flags],
            "inspection_reasons": every_flags,
            "third_party_sample": [bool(v) for v in sampled_list],
            "inclusion_probability": pi_list,
            "draw_u": u_list,
            "reasons": reasons,
            "community_id": communities,
            "completed_at": done_utc,
            "created_at": [now] * n,
        }

    def _model_flags(self, scores: dict[str, np.ndarray], orders: pd.DataFrame) -> list[list[str]]:
        """Model signals: thresholds, or capacity slots per community per local day."""
        mf = self.policy.model_flags
        if mf.mode == "threshold":
            return S.model_threshold_reasons(scores, mf)
        max_risk = np.maximum(scores["rework_risk"], scores["dissatisfaction_prob"])
        local = orders["completed_at"].dt.tz_convert(TIMEZONE).dt.floor("D")
        used: dict[tuple[str, Any], int] = {}
        slots = np.zeros(len(orders), dtype=np.int64)
        for i, (comm, day) in enumerate(
            zip(orders["community_id"].astype(str), local, strict=True)
        ):
            key = (comm, day)
            if key not in used:
                start = day.tz_convert("UTC").to_pydatetime()
                used[key] = self.store.slots_used(comm, start, start + dt.timedelta(days=1))
            slots[i] = used[key]
            if max_risk[i] >= mf.capacity_min_risk and used[key] < mf.capacity_per_community_day:
                used[key] += 1
        hit = S.capacity_flags(max_risk, slots, mf)
        return [["model_capacity"] if h else [] for h in hit]

    def _flag(self, code: str, kind: str, scores: dict[str, np.ndarray], i: int) -> dict:
        """One inspection reason: which rule or model signal raised it, in business words.

        The wording depends on the order only for the codes in ``_SCORED_FLAGS``.
        """
        mf = self.policy.model_flags
        values: dict[str, Any] = {
            "days": self.policy.hard_rules.unit_complaint_days,
            "k": mf.capacity_per_community_day,
        }
        if code == "model_rework_risk":
            values |= {"value": scores["rework_risk"][i], "bound": mf.thresholds["rework_risk"]}
        elif code == "model_dissatisfaction":
            values |= {
                "value": scores["dissatisfaction_prob"][i],
                "bound": mf.thresholds["dissatisfaction_prob"],
            }
        return {"code": code, "source": kind, "text": S.reason_text(code, **values)}
