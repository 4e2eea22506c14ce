"""The API's incremental history gives the features of a full rebuild (serving/history.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.features import FeatureConfig, build_history, features_for
from models.labels import dissatisfied_labels
from models.schemas import ORDERS
from serving.history import DeltaIndex, IncrementalHistory, dissatisfied
from tests.synth_orders import make_orders


@pytest.fixture(scope="module")
def data():
    orders, techs, units, _ = make_orders(1200, seed=3)
    done = orders[orders["status"] == "completed"].sort_values("completed_at")
    return done.reset_index(drop=True), techs, units


def _same_features(inc: IncrementalHistory, full, orders: pd.DataFrame) -> None:
    a, b = features_for(inc.history, orders), features_for(full, orders)
    # counts are exact; float sums (hours, sentiment, case mix) differ only by rounding
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("shuffle", "recent_rows"), [(False, 256), (True, 256), (True, 8)])
def test_appended_orders_give_the_features_of_a_full_rebuild(
    data, shuffle, recent_rows, monkeypatch
):
    """Orders arrive one by one and in batches (in completion order, or late and out of
    order): after each append, the features of the batch itself and of the next orders equal
    those computed from a history rebuilt from scratch — including reworks of earlier orders
    that the new ones reveal, first reports of homes and the technicians' case mix."""
    # recent_rows=8: the delta indexes spill and merge their levels many times per append
    monkeypatch.setattr(DeltaIndex, "RECENT_ROWS", recent_rows)
    done, techs, units = data
    cfg = FeatureConfig()
    stream = done.iloc[450:]
    if shuffle:  # late arrivals: orders reach the service out of completion order
        rng = np.random.default_rng(0)
        order = np.argsort(np.arange(len(stream)) + rng.normal(0, 40, len(stream)))
        stream = stream.iloc[order]
    inc = IncrementalHistory(done.iloc[:450], techs, units, cfg)
    seen = [done.iloc[:450]]
    pos = 0
    for size in [1, 1, 2, 1, 30, 1, 3, 80, 1, 1, 5, 120, 1]:
        chunk = stream.iloc[pos : pos + size]
        pos += size
        inc.append(chunk)
        seen.append(chunk)
        full = build_history(
            pd.concat(seen, ignore_index=True), technicians=techs, units=units, config=cfg
        )
        _same_features(inc, full, chunk)
        _same_features(inc, full, stream.iloc[pos : pos + 5])
    assert inc.appended == pos
    if recent_rows == 8:  # several indexed levels, each at most 1/GROWTH of the one before
        sizes = [[len(lv) for lv in d.levels[:-1]] for d in inc.deltas.values()]
        assert max(len(z) for z in sizes) >= 2
        for z in sizes:
            assert all(b * DeltaIndex.GROWTH <= a for a, b in zip(z, z[1:], strict=False))


def test_parent_links_and_new_homes_are_history_at_once(data):
    done, techs, units = data
    cfg = FeatureConfig()
    inc = IncrementalHistory(done.iloc[:300], techs, units, cfg)
    parent = done.iloc[300:301].copy()
    parent["unit_id"] = "NEW-HOME-0001"
    child = parent.copy()
    child["order_id"] = "CHILD-1"
    child["parent_order_id"] = parent["order_id"].iloc[0]
    child["category"] = "electrical" if parent["category"].iloc[0] != "electrical" else "plumbing"
    shift = pd.Timedelta(days=40)  # outside the same-category window: only the link counts
    for c in ("reported_at", "dispatched_at", "arrived_at", "completed_at"):
        child[c] = child[c] + shift
    inc.append(parent)
    inc.append(child)
    full = build_history(
        pd.concat([done.iloc[:300], parent, child], ignore_index=True),
        technicians=techs,
        units=units,
        config=cfg,
    )
    later = child.copy()
    later["order_id"] = "LATER-1"
    for c in ("reported_at", "dispatched_at", "arrived_at", "completed_at"):
        later[c] = later[c] + pd.Timedelta(days=2)
    _same_features(inc, full, later)
    f = features_for(inc.history, later)
    assert f["unit_reworks_all"].iloc[0] == 1  # the child revealed the parent's rework
    assert f["unit_orders_all"].iloc[0] == 2


def test_case_mix_of_late_arrivals_is_recomputed_when_it_becomes_visible(data):
    """An order arriving out of completion order moves the case mix (tech_oe) of later
    orders; the recomputation waits until a query could see their rows (the rework window
    closed), and then gives exactly the features of a full rebuild."""
    done, techs, units = data
    cfg = FeatureConfig()
    inc = IncrementalHistory(done.iloc[:450], techs, units, cfg)
    late = done.iloc[450:520].iloc[::-1]  # newest first: each one is earlier than the last
    for i in range(len(late)):
        inc.append(late.iloc[i : i + 1])
    pending = int(inc.rows["oe_due"].sum())
    assert pending >= len(late)  # marked, not recomputed, while no query can see them
    full = build_history(
        pd.concat([done.iloc[:450], late], ignore_index=True),
        technicians=techs,
        units=units,
        config=cfg,
    )
    _same_features(inc, full, done.iloc[450:455])  # early queries: windows still open
    probe = done.iloc[-40:]  # months later: every tech_oe row of ``late`` is visible
    _same_features(inc, full, probe)
    assert inc.rows["oe_due"].sum() < pending


def test_appends_keep_every_rework_label_of_the_label_definition(data):
    """An append recomputes the rework labels of the earlier orders completed within one
    window before a new report of their home and category (and of the new orders' parents)
    only: after appends in and out of order — every report landing between stored orders —
    every order's label still equals :func:`models.labels.label_orders` on all the orders."""
    from models.labels import label_orders

    done, techs, units = data
    cfg = FeatureConfig()
    rng = np.random.default_rng(5)
    order = rng.permutation(len(done) - 300) + 300  # stream in random completion order
    inc = IncrementalHistory(done.iloc[:300], techs, units, cfg)
    seen = [done.iloc[:300]]
    for chunk in np.array_split(order, [1, 3, 40, 41, 200, 260]):
        inc.append(done.iloc[chunk])
        seen.append(done.iloc[chunk])
    every = pd.concat(seen, ignore_index=True)
    lab = label_orders(every[ORDERS.names], cfg.label_config())
    known = (lab["rework_known_at"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    rows = [inc.ids[i] for i in every["order_id"]]
    assert lab["rework_order_id"].notna().sum() > 20  # reworks to get right
    np.testing.assert_array_equal(
        inc.rows["rw_pos"][rows], lab["rework_order_id"].notna().to_numpy(dtype=float)
    )
    np.testing.assert_allclose(inc.rows["rw_known"][rows], known.to_numpy(dtype=float))
    # the column-wise recomputation an append uses equals the per-row definition, every row
    every_row = np.arange(inc.rows.n)
    k, p = inc._first_repeats(every_row)
    one = np.array([inc._first_repeat(r) for r in every_row.tolist()])
    np.testing.assert_array_equal(k, one[:, 0])
    np.testing.assert_array_equal(p, one[:, 1])
    # ties: a report at the very moment of an earlier completion of its group is not after it
    cols = inc.rows.cols
    for members in [g for g in inc.group.values() if len(g) >= 2][:40]:
        cols["rep_ns"][members[1]] = cols["done_ns"][members[0]]
    k, p = inc._first_repeats(every_row)
    one = np.array([inc._first_repeat(r) for r in every_row.tolist()])
    np.testing.assert_array_equal(k, one[:, 0])
    np.testing.assert_array_equal(p, one[:, 1])


def test_appending_a_stored_order_again_is_refused(data):
    done, techs, units = data
    inc = IncrementalHistory(done.iloc[:100], techs, units, FeatureConfig())
    with pytest.raises(ValueError, match="new orders only"):
        inc.append(done.iloc[99:100])


def test_dissatisfied_matches_the_label_definition(data):
    done, *_ = data
    orders = done.copy()
    rng = np.random.default_rng(1)
    orders["rating"] = pd.array(
        np.where(rng.random(len(orders)) < 0.3, pd.NA, rng.integers(1, 6, len(orders))),
        dtype="Int64",
    )
    orders["complaint"] = pd.array(
        np.where(rng.random(len(orders)) < 0.3, pd.NA, rng.random(len(orders)) < 0.2),
        dtype="boolean",
    )
    orders.loc[orders.index[:20], "status"] = "cancelled"
    expected = dissatisfied_labels(orders, FeatureConfig().label_config())["dissatisfied"]
    np.testing.assert_array_equal(dissatisfied(orders, FeatureConfig()), expected.to_numpy())


@pytest.mark.parametrize("fanout", [2, 3])
def test_appended_frames_are_merged_without_changing_rows_or_features(data, fanout, monkeypatch):
    """The kept frames are merged in levels (fewer objects for the cyclic GC): their rows stay
    exactly the appended ones in order, their number stays bounded, features equal a rebuild."""
    import serving.history as H

    monkeypatch.setattr(H, "FRAME_FANOUT", fanout)
    done, techs, units = data
    cfg = FeatureConfig()
    inc = IncrementalHistory(done.iloc[:450], techs, units, cfg)
    seen = [done.iloc[:450]]
    pos, most = 450, 0
    sizes = [1] * 40 + [3, 1, 7, 1, 1, 20, 2] * 4
    for size in sizes:
        chunk = done.iloc[pos : pos + size]
        pos += size
        inc.append(chunk)
        seen.append(chunk)
        most = max(most, len(inc.frames))
        assert len(inc.frames) - 1 <= 4 * fanout + fanout  # bounded, never one per request
    kept = pd.concat(inc.frames, ignore_index=True)
    pd.testing.assert_frame_equal(kept, pd.concat(seen, ignore_index=True))
    assert most < len(sizes) // 2
    full = build_history(kept, technicians=techs, units=units, config=cfg)
    _same_features(inc, full, done.iloc[pos : pos + 20])


def test_single_orders_are_buffered_as_values_and_read_back_exactly(data):
    """One-order appends (the sequential API) are kept as plain column values, not a frame
    each (no merges on the request path); reading the frames gives exactly the appended rows
    and dtypes, in order, also with batches in between, and the features of a rebuild."""
    import gc

    from serving.engine import validate_raw
    from serving.history import Columns
    from tests.serving_fixtures import payload

    done, techs, units = data
    cfg = FeatureConfig()
    inc = IncrementalHistory(done.iloc[:450], techs, units, cfg)
    seen = [done.iloc[:450]]
    pos = 450
    for size in [1] * 30 + [5] + [1] * 12:
        chunk = done.iloc[pos : pos + size]
        pos += size
        inc.append(Columns(chunk) if size == 1 else chunk)
        seen.append(chunk)
    assert len(inc._frames) <= 3  # the base, the first 30 as one frame, the batch
    assert inc._buffer is not None and inc._buffer.n == 12
    assert not any(gc.is_tracked(v) for col in inc._buffer.values for v in col)
    kept = pd.concat(inc.frames, ignore_index=True)
    pd.testing.assert_frame_equal(kept, pd.concat(seen, ignore_index=True))
    full = build_history(kept, technicians=techs, units=units, config=cfg)
    _same_features(inc, full, done.iloc[pos : pos + 20])
    # the API's validated one-order frames (with their source_row column) read back the same
    api = [validate_raw(payload(done.iloc[i : i + 1]))[0] for i in range(pos, pos + 10)]
    inc2 = IncrementalHistory(done.iloc[:pos], techs, units, cfg)
    for frame in api:
        inc2.append(Columns(frame))
    assert inc2._buffer is not None and inc2._buffer.n == 10
    pd.testing.assert_frame_equal(
        pd.concat(inc2.frames[1:], ignore_index=True), pd.concat(api, ignore_index=True)
    )


@pytest.fixture
def no_cyclic_gc():
    """The cyclic GC off for the test (what reference counting alone frees), then back."""
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def test_a_replaced_history_is_freed_by_reference_counting(data, no_cyclic_gc):
    """The service freezes each new history (``gc.freeze``: out of the cyclic GC's scans), and
    the cyclic GC never frees a frozen object: a history in a reference cycle stayed in memory
    for good once replaced (~80 MB per 10,000 orders merged). After appends (one by one, late,
    in batches), queries and a rebuild, dropping the histories frees them
    without the cyclic GC."""
    import weakref

    done, techs, units = data
    inc = IncrementalHistory(done.iloc[:450], techs, units, FeatureConfig())
    late = done.iloc[450:480].iloc[::-1]
    for i in range(len(late)):
        inc.append(late.iloc[i : i + 1])
    features_for(inc.history, done.iloc[480:481])
    inc.append(done.iloc[480:700])
    features_for(inc.history, done.iloc[700:900])
    assert len(inc.frames) > 1  # the appended frames, kept beside the first
    again = inc.rebuilt()
    refs = [weakref.ref(inc), weakref.ref(again), weakref.ref(inc.history)]
    del inc, again
    assert [r() for r in refs] == [None, None, None]


def test_the_cache_frees_the_history_it_replaces(tmp_path, data, no_cyclic_gc):
    """``HistoryCache.rebuild`` (the background merge) replaces the served history: the old
    one is gone as soon as it is replaced, without the cyclic GC."""
    import types
    import weakref

    from serving.engine import HistoryCache
    from serving.store.db import Store, content_hash, frame_rows, make_engine, upgrade

    done, _, _ = data
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    upgrade(engine)
    store = Store(engine)
    rows = frame_rows(done.iloc[:600], ORDERS)
    store.upsert_orders(rows, [content_hash(r) for r in rows])
    model = types.SimpleNamespace(feature_config=FeatureConfig(), text_scorer=None)
    cache = HistoryCache(store, refresh_seconds=3600.0)
    cache.rebuild(model)
    first = weakref.ref(cache.current)
    cache.add(done.iloc[600:700])
    cache.rebuild(model)
    assert cache.current is not None and first() is None
