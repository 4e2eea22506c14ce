"""The service's state: settings, store, served model, history, policy; loading and reload.

Reload is atomic: the new model is loaded, checked (compatible heads, finite probabilities on a
smoke batch through the full feature path) and only then swapped in with one assignment under
a lock; any failure leaves the old model serving.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from models import sampling as S
from models.estimators import HEADS, RiskModel
from models.features import CATEGORICAL_LEVELS, completed_mask, feature_arrays, features_for
from models.reasons import Reasoner, numeric_matrix
from models.schemas import ORDERS
from models.validation import validate_orders
from serving.config import Settings
from serving.engine import HistoryCache, Scorer, ServedModel, feature_matrix
from serving.model_source import ModelIdentity, ModelLoadError, load_from_dir, load_from_registry
from serving.observability import Metrics
from serving.schemas import ORDER_EXAMPLE
from serving.store.db import Store, WalCheckpointer, make_engine, upgrade

log = logging.getLogger(__name__)


def load_policy(path: Path) -> S.Policy:
    """Read and validate the policy YAML."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise S.PolicyError(f"{path}: {exc}") from exc
    return S.Policy.from_dict(data or {})


class ServiceState:
    """Everything a request needs; built once by the app's lifespan."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.metrics = Metrics()
        self.policy = load_policy(settings.policy_path)
        # the WAL is checkpointed in the background, not by the request whose commit fills it
        self.engine = make_engine(settings.database_url, autocheckpoint=False)
        upgrade(self.engine)
        self.checkpointer = WalCheckpointer(self.engine)
        self.checkpointer.start()
        self.store = Store(self.engine, key_cache_seconds=settings.key_cache_seconds)
        self.cache = HistoryCache(
            self.store, settings.history_refresh_seconds, settings.history_merge_orders
        )
        self.metrics.history_orders.set_function(self._history_orders)
        self._reload_lock = threading.Lock()
        model, identity = self._load()
        served, built = self._prepare(model, identity)
        self.cache.install(built)
        # rework links on ingest use the served model's label windows
        self.store.label_config = model.feature_config.label_config()
        self.scorer = Scorer(
            self.store,
            self.cache,
            served,
            self.policy,
            settings.secret_bytes,
            settings.reasons_k,
        )
        self.cache.start(lambda: self.scorer.served, self._upgrade_reasons)

    def _load(self) -> tuple[RiskModel, ModelIdentity]:
        s = self.settings
        if s.model_dir is not None:
            return load_from_dir(s.model_dir, s.model_name)
        return load_from_registry(s.model_name, s.model_alias)

    def _prepare(self, model: RiskModel, identity: ModelIdentity) -> tuple[ServedModel, Any]:
        """History under the model's feature config, smoke test, reasons table (not swapped)."""
        built = self.cache.build(model)
        history = built.history
        smoke = self._reference_orders(limit=self.settings.reference_orders)
        if not len(smoke):
            smoke = validate_orders(
                pd.DataFrame([ORDER_EXAMPLE], columns=ORDERS.names, dtype=object)
            ).valid.drop(columns="source_row")
        feats = features_for(history, smoke)
        M = numeric_matrix(feats, model.feature_names)
        # the request path builds the matrix from the feature arrays: it must be this matrix
        fast = feature_matrix(feature_arrays(history, smoke), model.feature_names)
        numpy_heads = bool(np.array_equal(fast, M, equal_nan=True))
        for h in HEADS:
            p = model.heads[h].predict_proba(feats[model.feature_names])
            if not (np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))):
                raise ModelLoadError(f"head {h} gives probabilities outside [0, 1]")
            try:  # the numpy fast path must agree with the DataFrame path, or is not used
                cats = [
                    list(CATEGORICAL_LEVELS[c])
                    for c in model.feature_names
                    if c in CATEGORICAL_LEVELS
                ]
                numpy_heads &= (model.heads[h].booster_.pandas_categorical or []) == cats
                numpy_heads &= bool(
                    np.allclose(model.heads[h].predict_proba_matrix(M), p, atol=1e-9)
                )
            except Exception:  # noqa: BLE001 - e.g. a head of another class: DataFrame path
                numpy_heads = False
        if not numpy_heads:
            log.warning("numpy scoring path disagrees with the DataFrame path: not used")
        reference = feats if len(feats) >= self.settings.reference_orders // 2 else None
        reasoner = Reasoner(model, reference, min_reference=self.settings.reference_orders // 2)
        log.info("model ready", extra={"model": identity.tag, "reasons_mode": reasoner.mode})
        return ServedModel(model, identity, reasoner, numpy_heads), built

    def _history_orders(self) -> float:
        """Orders in the served history (``/metrics``; read without the lock: a dict's size)."""
        current = self.cache.current
        return 0.0 if current is None else float(len(current.ids))

    def _upgrade_reasons(self) -> None:
        """Switch exact reasons to binned ones once enough orders are stored (fresh store)."""
        served = self.scorer.served
        if served.reasoner.mode == "binned" or self.cache.history is None:
            return
        need = self.settings.reference_orders // 2
        ref = self._reference_orders(limit=self.settings.reference_orders)
        if len(ref) < need:
            return
        with self.cache.lock:  # appends mutate the history
            feats = features_for(self.cache.history, ref)
        with self._reload_lock:
            if self.scorer.served is served:
                self.scorer.served = ServedModel(
                    served.model,
                    served.identity,
                    Reasoner(served.model, feats, need),
                    served.numpy_heads,
                )

    def _reference_orders(self, limit: int) -> pd.DataFrame:
        """The most recent completed stored orders (reasons reference, smoke test)."""
        orders = self.cache.orders
        done = orders[completed_mask(orders).to_numpy(dtype=bool)]
        return done.sort_values("completed_at").tail(limit)

    def reload(self) -> ModelIdentity:
        """Load the configured model again (the current champion); atomic, refuses broken."""
        with self._reload_lock:
            old = self.scorer.served
            try:
                model, identity = self._load()
                served, built = self._prepare(model, identity)
            except Exception as exc:  # anything wrong: refuse, the old model keeps serving
                log.warning("reload refused", extra={"error": str(exc)})
                raise ModelLoadError(str(exc)) from exc
            self.cache.install(built)
            self.scorer.served = served
            self.store.label_config = model.feature_config.label_config()
            log.info("reloaded", extra={"old": old.identity.tag, "new": identity.tag})
            return identity

    def close(self) -> None:
        """Stop background work and close connections."""
        self.cache.stop()
        self.scorer.coalescer.stop()
        self.checkpointer.stop()
        self.engine.dispose()
