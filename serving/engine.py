"""The whole decision for a batch of validated orders: store, features, heads, policy, sample.

Why an in-memory history: as-of features need the past orders of the same home, technician,
resident and community. Rebuilding the feature index from the database per request would cost
seconds, so the service keeps a :class:`models.features.History` of every stored order in memory
and rebuilds it in a background thread when new orders arrived (at most every
``history_refresh_seconds``). Scores therefore see the history with a bounded lag; orders of the
same batch do not see each other. Features are computed by ``models.features.features_for``,
the training code path.

Idempotency: a decision is keyed by (order id, content hash, model version). Sending the same
order again returns the recorded decision; ``rescore`` asks for a decision under the model being
served now, and both rows are kept. The sample draw is keyed on the order id alone, so neither
re-sending nor re-scoring can re-roll it.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models import sampling as S
from models.estimators import HEADS, RiskModel
from models.features import History, features_for
from models.schemas import ORDERS, TIMEZONE
from serving.model_source import ModelIdentity
from serving.reasons import Reasoner, numeric_matrix
from serving.store.db import Store, content_hash, frame_rows, utcnow

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


class HistoryCache:
    """Every stored order, indexed for as-of features; rebuilt when new orders arrived."""

    def __init__(self, store: Store, refresh_seconds: float):
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._orders = store.orders_frame()
        self._technicians = store.side_frame("technicians")
        self._units = store.side_frame("units")
        self._pending: list[pd.DataFrame] = []
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.history: History | None = None
        self.complaints: dict[str, np.ndarray] = {}
        self.built_at = 0.0

    @property
    def orders(self) -> pd.DataFrame:
        """The orders the current history was built from."""
        return self._orders

    def add(self, orders: pd.DataFrame, side_changed: bool = False) -> None:
        """Note new or corrected orders (typed); the next refresh folds them in."""
        with self._lock:
            if len(orders):
                self._pending.append(orders)
        if len(orders) or side_changed:
            if side_changed:
                self._technicians = self.store.side_frame("technicians")
                self._units = self.store.side_frame("units")
            self._dirty.set()

    def rebuild(self, model: RiskModel) -> None:
        """Build the history now (start-up, reload, tests); swaps in one assignment."""
        with self._lock:
            pending, self._pending = self._pending, []
        if pending:
            merged = pd.concat([self._orders, *pending], ignore_index=True)
            self._orders = merged.drop_duplicates("order_id", keep="last").reset_index(drop=True)
        self._dirty.clear()
        self.install(*self.build(model))

    def build(self, model: RiskModel) -> tuple[History, dict[str, np.ndarray]]:
        """A history of the current orders under ``model``'s feature config (not installed)."""
        history = model.history(self._orders, self._technicians, self._units)
        return history, _complaint_index(self._orders, model.feature_config.followup_delay_hours)

    def install(self, history: History, complaints: dict[str, np.ndarray]) -> None:
        """Make a built history the one requests use (single assignments: atomic for readers)."""
        self.complaints = complaints
        self.history = history
        self.built_at = time.monotonic()

    def start(self, current: Any, on_rebuild: Any = None) -> None:
        """Background refresher; ``current()`` returns the served model at each rebuild.

        ``on_rebuild()`` runs after each rebuild (the state upgrades exact reasons to binned
        ones once the store holds a reference sample).
        """

        def loop() -> None:
            while not self._stop.is_set():
                if self._dirty.wait(timeout=0.5) and not self._stop.is_set():
                    wait = self.refresh_seconds - (time.monotonic() - self.built_at)
                    if wait > 0 and self._stop.wait(wait):
                        return
                    try:
                        self.rebuild(current().model)
                        if on_rebuild is not None:
                            on_rebuild()
                    except Exception:  # keep serving the old history
                        log.exception("history refresh failed")

        self._thread = threading.Thread(target=loop, name="history-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the refresher (shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def days_since_unit_complaint(self, units: np.ndarray, t_done: np.ndarray) -> np.ndarray:
        """Days since the latest complaint on each home known before each completion."""
        out = np.full(len(units), np.nan)
        for i, (u, t) in enumerate(zip(units, t_done, strict=True)):
            times = self.complaints.get(u)
            if times is None or np.isnan(t):
                continue
            k = np.searchsorted(times, t, side="left")
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


class Coalescer:
    """Scores small concurrent requests together, on one thread, without waiting for company.

    Why: the whole decision of one order costs ~15 ms, nearly all of it fixed per call (pandas
    feature frames, DB transactions); the same work for 50 orders costs ~25 ms. Requests queue
    here; the scoring thread takes everything queued when it becomes free (up to
    ``max_orders``) and scores it as one batch, so a lone request is scored at once (no
    batching window, no added latency) while under concurrency the fixed cost is shared.
    Requests whose order ids overlap, or that differ in ``rescore``, go in separate batches;
    each request still gets exactly its own decisions, in its own order, and an error fails
    only the requests of that batch.
    """

    def __init__(self, scorer: Scorer, max_orders: int = 256):
        self.scorer = scorer
        self.max_orders = max_orders
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(
        self, orders: pd.DataFrame, rescore: bool
    ) -> tuple[list[dict[str, Any]], list[bool]]:
        """What ``Scorer.score(orders, rescore)`` returns, scored in the next free batch."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="scorer", daemon=True)
                self._thread.start()
        fut: Future = Future()
        self._queue.put((orders, rescore, fut))
        return fut.result()

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
            batch = [first]
            ids = set(first[0]["order_id"])
            n = len(first[0])
            while n < self.max_orders:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._stopping = True
                    break
                new = set(item[0]["order_id"])
                if item[1] != first[1] or ids & new:
                    backlog.append(item)
                    continue
                batch.append(item)
                ids |= new
                n += len(item[0])
            self._run(batch)

    def _run(self, batch: list[tuple[pd.DataFrame, bool, Future]]) -> None:
        try:
            frames = [b[0] for b in batch]
            merged = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            records, replayed = self.scorer.score(merged, rescore=batch[0][1])
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting requests
            for _, _, fut in batch:
                fut.set_exception(exc)
            return
        k = 0
        for orders, _, fut in batch:
            fut.set_result((records[k : k + len(orders)], replayed[k : k + len(orders)]))
            k += len(orders)


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

    def score(
        self, orders: pd.DataFrame, rescore: bool = False
    ) -> tuple[list[dict[str, Any]], list[bool]]:
        """Store, score and record ``orders`` (typed, valid, unique ids).

        Returns one decision per order and whether it was recorded before this call.
        """
        served = self.served  # one model for the whole batch, even if a reload happens now
        rows = frame_rows(orders, ORDERS)
        hashes = [content_hash(r) for r in rows]
        ids = [r["order_id"] for r in rows]
        version = served.identity.tag if rescore else None
        found = self.store.find_decisions(zip(ids, hashes, strict=True), version)
        changed = self.store.upsert_orders(rows, hashes)
        if changed:
            self.cache.add(orders)
        todo = np.array([i not in found for i in ids], dtype=bool)
        if todo.any():
            new = self._decide(
                served, orders[todo], [h for h, t in zip(hashes, todo, strict=True) if t]
            )
            inserted = self.store.insert_decisions(new)
            if inserted == len(new):  # all ours: no read-back round trip
                found.update({r["order_id"]: r for r in new})
            else:  # a concurrent request recorded some first: return the recorded ones
                keys = [(r["order_id"], r["input_hash"]) for r in new]
                found.update(self.store.find_decisions(keys, served.identity.tag))
        return [found[i] for i in ids], [not t for t in todo]

    def _decide(
        self, served: ServedModel, orders: pd.DataFrame, hashes: list[str]
    ) -> list[dict[str, Any]]:
        """Features, both heads, policy and sample for orders without a recorded decision."""
        history = self.cache.history
        assert history is not None, "history not built"
        feats = features_for(history, orders)
        names = served.model.feature_names
        heads = served.model.heads
        if served.numpy_heads:  # one float matrix for both heads and the reasons
            M = numeric_matrix(feats, names)
            scores = {col: heads[h].predict_proba_matrix(M) for h, col in HEADS.items()}
        else:
            M = None
            scores = {col: heads[h].predict_proba(feats[names]) for h, col in HEADS.items()}
        reasons = served.reasoner.top(feats, self.reasons_k, M)
        pol = self.policy
        levels = S.risk_level(scores, pol.risk_levels)
        pi = S.inclusion_probabilities(levels, pol.sampling, self.base)
        ids = orders["order_id"].astype(str).to_numpy()
        u, sampled = S.draw(self.secret, ids, pi)
        t_done = _secs(orders["completed_at"])
        facts = S.OrderFacts(
            order_ids=ids,
            category=orders["category"].astype(str).to_numpy(),
            priority=orders["priority"].astype(str).to_numpy(),
            report_night=feats["report_night"].to_numpy(dtype=float),
            report_holiday=feats["report_holiday"].to_numpy(dtype=float),
            tech_certified=feats["tech_certified"].to_numpy(dtype=float),
            has_parent=orders["parent_order_id"].notna().to_numpy(),
            days_since_unit_cat_done=feats["days_since_unit_cat_done"].to_numpy(dtype=float),
            days_since_unit_complaint=self.cache.days_since_unit_complaint(
                orders["unit_id"].astype(str).to_numpy(), t_done
            ),
        )
        rule_codes = S.hard_rule_reasons(facts, pol.hard_rules, self.secret)
        model_codes = self._model_flags(scores, orders)
        now = utcnow()
        out = []
        # column lists once: per-row DataFrame access costs ~30 us per cell
        done_utc = list(orders["completed_at"].dt.tz_convert("UTC"))
        communities = orders["community_id"].astype(str).tolist()
        head_versions = served.identity.head_versions()
        rework = scores["rework_risk"].tolist()
        dissat = scores["dissatisfaction_prob"].tolist()
        level_list, sampled_list = levels.tolist(), sampled.tolist()
        pi_list, u_list = pi.tolist(), u.tolist()
        for i in range(len(orders)):
            flags = [self._flag(c, "rule", scores, i) for c in rule_codes[i]]
            flags += [self._flag(c, "model", scores, i) for c in model_codes[i]]
            done = done_utc[i]
            out.append(
                {
                    "decision_id": uuid.uuid4().hex,
                    "order_id": ids[i],
                    "input_hash": hashes[i],
                    "model_version": served.identity.tag,
                    "model_versions": dict(head_versions),
                    "policy_version": pol.version,
                    "rework_risk": float(rework[i]),
                    "dissatisfaction_prob": float(dissat[i]),
                    "risk_level": str(level_list[i]),
                    "mandatory_inspection": bool(flags),
                    "inspection_reasons": flags,
                    "third_party_sample": bool(sampled_list[i]),
                    "inclusion_probability": float(pi_list[i]),
                    "draw_u": float(u_list[i]),
                    "reasons": reasons[i],
                    "community_id": communities[i],
                    "completed_at": None if pd.isna(done) else done,
                    "created_at": now,
                }
            )
        return out

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
        """One inspection reason: which rule or model signal raised it, in business words."""
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
