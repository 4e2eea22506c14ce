"""Big-batch fast paths of the store and scorer give exactly what the per-row paths give."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.labels import LabelConfig, rework_labels
from models.schemas import ORDERS
from serving.store import quality as Q
from serving.store.db import Store, content_hash, frame_rows, make_engine, upgrade
from tests.synth_orders import make_orders


def _store(tmp_path, name: str) -> Store:
    engine = make_engine(f"sqlite:///{tmp_path / name}")
    upgrade(engine)
    return Store(engine)


def _tricky_orders() -> pd.DataFrame:
    """Simulated orders plus copies under new ids: same home, category and report times
    (ties between candidate reworks), some cancelled, some naming a parent, some with the
    parent of another copy (children stored before their parents)."""
    orders, *_ = make_orders(1500, seed=5, days=200, n_tech=8, n_units=60)
    rng = np.random.default_rng(3)
    dup = orders.sample(600, replace=True, random_state=2).reset_index(drop=True)
    dup["order_id"] = [f"DUP{i:05d}" for i in range(len(dup))]
    shift = pd.to_timedelta(rng.choice([0, 0, 0, 3600, -7200], size=len(dup)), unit="s")
    for c in ("reported_at", "dispatched_at", "arrived_at", "completed_at"):
        dup[c] = dup[c] + shift
    kids = rng.random(len(dup)) < 0.15
    dup.loc[kids, "parent_order_id"] = rng.choice(orders["order_id"].to_numpy(), kids.sum())
    out = pd.concat([orders, dup], ignore_index=True)
    assert (out["status"] == "cancelled").any() and out["parent_order_id"].notna().any()
    return out.sample(frac=1.0, random_state=4).reset_index(drop=True)  # out of order


def _links(store: Store) -> list[tuple]:
    f = store.outcomes_frame()
    f = f[f["kind"] == "rework"]
    return sorted(
        zip(f["order_id"], f["rework_order_id"], f["rework_via"], f["observed_at"], strict=True)
    )


@pytest.mark.parametrize("sizes", [(2100,), (700, 5, 300, 1, 900, 194)])
def test_vectorised_rework_links_equal_the_row_path(tmp_path, monkeypatch, sizes):
    """Same links (order, rework, via, time) from the column-wise and the per-home code, over
    batches that arrive out of order, with ties, cancellations, parents and corrections."""
    orders = _tricky_orders()
    rows = frame_rows(orders, ORDERS)
    corrected = [dict(r) for r in rows[:150]]
    for r in corrected:  # a correction moves the report a day later (links may change)
        if r["reported_at"] is not None:
            r["reported_at"] = r["reported_at"] + pd.Timedelta(days=1).to_pytimedelta()
    batches, i = [], 0
    for k in sizes:
        batches.append(rows[i : i + k])
        i += k
    batches += [rows[i:], corrected]
    got = {}
    for path, threshold in (("rows", 10**9), ("vector", 1)):
        monkeypatch.setattr(Q, "VECTOR_LINK_ORDERS", threshold)
        store = _store(tmp_path, f"{path}.db")
        for b in batches:
            store.upsert_orders(b, [content_hash(r) for r in b])
        got[path] = _links(store)
    assert len(got["rows"]) > 200
    assert got["vector"] == got["rows"]


def test_vectorised_rework_links_equal_the_labels(tmp_path, monkeypatch):
    """One big batch through the column-wise path: exactly ``rework_labels``' links (the
    labels break ties by frame order, the store by arrival order: stored in frame order)."""
    monkeypatch.setattr(Q, "VECTOR_LINK_ORDERS", 1)
    orders = _tricky_orders()
    store = _store(tmp_path, "one.db")
    rows = frame_rows(orders, ORDERS)
    store.upsert_orders(rows, [content_hash(r) for r in rows])
    lab = rework_labels(orders, LabelConfig())
    expected = {
        (o, r)
        for o, r in zip(orders["order_id"], lab["rework_order_id"], strict=True)
        if isinstance(r, str)
    }
    assert {(o, r) for o, r, *_ in _links(store)} == expected
