"""Data-contract tests: validation catches each defect under its field and never loses a row."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from models.schemas import ORDERS
from models.validation import ContractError, validate_orders, validate_table
from pipelines.cli import app
from pipelines.io import read_raw_table
from tests.contract_rows import good_order, orders_frame


def reasons_of(result) -> dict[str, set[str]]:
    q = result.quarantine
    return {int(r.source_row): set(r.reason.split(";")) for r in q.itertuples()}


def test_clean_rows_are_all_valid_and_typed():
    res = validate_orders(orders_frame([good_order(i) for i in range(5)]))
    assert len(res.valid) == 5 and res.quarantine.empty
    v = res.valid
    assert str(v["reported_at"].dtype) == "datetime64[ns, Asia/Shanghai]"
    assert v["rating"].dtype == "Int64"
    assert v["paid"].dtype == "boolean"
    assert v["source_row"].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"rating": "6"}, "rating:out_of_range"),
        ({"rating": "0"}, "rating:out_of_range"),
        ({"rating": "3.5"}, "rating:not_integer"),
        ({"rating": "good"}, "rating:unparseable"),
        ({"cost_yuan": "-5"}, "cost_yuan:out_of_range"),
        ({"urge_count": "-1"}, "urge_count:out_of_range"),
        ({"urge_count": "inf"}, "urge_count:unparseable"),
        ({"category": "roof"}, "category:bad_enum"),
        ({"priority": "asap"}, "priority:bad_enum"),
        ({"status": "done"}, "status:bad_enum"),
        ({"channel": ""}, "channel:missing"),
        ({"description": "   "}, "description:missing"),
        ({"order_id": ""}, "order_id:missing"),
        ({"reported_at": "yesterday"}, "reported_at:unparseable"),
        ({"reported_at": ""}, "reported_at:missing"),
        ({"reported_at": "1970-01-01 08:00:00"}, "reported_at:out_of_range"),
        ({"completed_at": "2024-05-01 09:00:00"}, "completed_at:before_reported_at"),
        ({"arrived_at": "2024-05-01 10:05:00"}, "arrived_at:before_dispatched_at"),
        ({"completed_at": ""}, "completed_at:missing_for_completed"),
        ({"paid": "maybe"}, "paid:unparseable"),
        ({"complaint": "2"}, "complaint:unparseable"),
    ],
)
def test_each_defect_is_named_by_field(override, expected):
    rows = [good_order(0), good_order(1, **override), good_order(2)]
    res = validate_orders(orders_frame(rows))
    assert len(res.valid) == 2, "clean rows must survive"
    assert expected in reasons_of(res)[1]
    q = res.quarantine.iloc[0]
    assert q["source_row"] == 1
    # the original text is kept, not the parsed value
    for k, v in override.items():
        assert str(q[k]) == v


def test_several_defects_in_one_row_are_all_reported():
    row = good_order(1, rating="9", category="x", paid="perhaps")
    res = validate_orders(orders_frame([row]))
    assert {"rating:out_of_range", "category:bad_enum", "paid:unparseable"} <= reasons_of(res)[0]


def test_accepts_what_real_exports_contain():
    rows = [
        good_order(0, reported_at="2024-05-01T10:00:00+08:00", paid="是", complaint="否"),
        good_order(1, reported_at="2024-05-01T02:00:00Z", paid="TRUE", complaint="0"),
        good_order(2, reported_at="2024/5/1 10:00", parts_replaced="1"),
        good_order(3, reported_at="2024年5月1日 10:00", category=" Plumbing ", extra="kept"),
    ]
    res = validate_orders(orders_frame(rows))
    assert res.quarantine.empty, res.quarantine["reason"].tolist()
    want = pd.Timestamp("2024-05-01 10:00", tz="Asia/Shanghai")
    assert (res.valid["reported_at"] == want).all()
    assert res.valid["category"].tolist() == ["plumbing"] * 4
    assert res.valid["paid"].tolist()[:2] == [True, True]
    assert "extra" in res.valid.columns


def test_identical_duplicates_collapse_conflicting_ones_quarantine():
    a = good_order(1)
    rows = [good_order(0), a, dict(a), good_order(2), good_order(2, rating="1")]
    res = validate_orders(orders_frame(rows))
    assert res.stats["duplicates_collapsed"] == 1
    # the first clean copy of a conflicting pair is kept, the other copy is held
    assert res.valid["order_id"].tolist() == ["WO000000", "WO000001", "WO000002"]
    assert res.quarantine["source_row"].tolist() == [4]
    assert res.quarantine["reason"].tolist() == ["order_id:duplicate_conflict"]
    s = res.stats
    assert s["valid_rows"] + s["quarantined_rows"] + s["duplicates_collapsed"] == s["input_rows"]


def test_a_flawed_first_copy_does_not_cost_the_clean_one():
    rows = [
        good_order(5, rating="9"),
        good_order(5),
        good_order(6, rating="8"),
        good_order(6, cost_yuan="-1"),
    ]
    res = validate_orders(orders_frame(rows))
    assert res.valid["source_row"].tolist() == [1]
    reasons = dict(zip(res.quarantine["source_row"], res.quarantine["reason"], strict=True))
    assert reasons[0] == "rating:out_of_range;order_id:duplicate_conflict"
    assert (
        "order_id:duplicate_conflict" in reasons[2] and "order_id:duplicate_conflict" in reasons[3]
    )


def test_future_and_open_with_completion_are_defects():
    now = pd.Timestamp("2024-06-01", tz="Asia/Shanghai")
    rows = [
        good_order(0),
        good_order(
            1,
            reported_at="2024-07-01 10:00:00",
            dispatched_at="",
            arrived_at="",
            completed_at="",
            status="open",
        ),
        good_order(2, status="in_progress"),
    ]
    res = validate_orders(orders_frame(rows), now=now)
    assert reasons_of(res) == {
        1: {"reported_at:in_future"},
        2: {"completed_at:present_while_open"},
    }


def test_unknown_technician_only_when_table_given():
    rows = [good_order(0), good_order(1, technician_id="T99")]
    techs = pd.DataFrame({"technician_id": ["T01"]})
    assert validate_orders(orders_frame(rows)).quarantine.empty
    res = validate_orders(orders_frame(rows), techs)
    assert reasons_of(res) == {1: {"technician_id:unknown"}}


def test_missing_required_column_is_a_file_error():
    df = orders_frame([good_order(0)]).drop(columns=["category"])
    with pytest.raises(ContractError, match="category"):
        validate_orders(df)


def test_optional_columns_may_be_absent():
    df = orders_frame([good_order(0)]).drop(columns=["rating", "paid", "parent_order_id"])
    res = validate_orders(df)
    assert len(res.valid) == 1 and res.valid["rating"].isna().all()


def test_typed_parquet_input(tmp_path):
    res = validate_orders(orders_frame([good_order(i) for i in range(3)]))
    path = tmp_path / "orders.parquet"
    res.valid.drop(columns=["source_row"]).to_parquet(path)
    raw, bad = read_raw_table(path)
    again = validate_orders(raw)
    assert again.quarantine.empty and not bad
    pd.testing.assert_series_equal(again.valid["reported_at"], res.valid["reported_at"])
    assert again.valid["rating"].tolist() == [5, 5, 5]


def test_technicians_certifications():
    raw = pd.DataFrame(
        {
            "technician_id": ["T1", "T2", "T3"],
            "certifications": ["plumbing;electrical", "plumbing;wizardry", ""],
            "employment": ["in_house", "subcontractor", "freelance"],
            "hire_date": ["2020-01-01", "2021/3/4", "soon"],
        }
    )
    res = validate_table(raw, __import__("models.schemas").schemas.TECHNICIANS)
    assert res.valid["technician_id"].tolist() == ["T1"]
    r = dict(zip(res.quarantine["technician_id"], res.quarantine["reason"], strict=True))
    assert "certifications:bad_enum" in r["T2"]
    assert "employment:bad_enum" in r["T3"] and "hire_date:unparseable" in r["T3"]


# --------------------------------------------------------------------- files and encodings


def _write_csv(path, rows, encoding):
    orders_frame(rows).to_csv(path, index=False, encoding=encoding)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030", "utf-16"])
def test_encodings_are_detected(tmp_path, encoding):
    path = tmp_path / "o.csv"
    _write_csv(path, [good_order(i) for i in range(3)], encoding)
    raw, _ = read_raw_table(path)
    assert raw.columns[0] == "order_id"
    res = validate_orders(raw)
    assert res.quarantine.empty
    assert res.valid["description"].iloc[0] == "厨房水管漏水，麻烦尽快来修"


def test_ragged_csv_lines_are_quarantined_not_lost(tmp_path):
    path = tmp_path / "o.csv"
    _write_csv(path, [good_order(i) for i in range(3)], "utf-8")
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2] + ",surplus,fields"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw, bad = read_raw_table(path)
    res = validate_orders(raw, bad_rows=bad)
    assert len(res.valid) == 2
    assert res.quarantine["source_row"].tolist() == [1]
    assert "row:field_count" in res.quarantine["reason"].iloc[0]


def test_cli_validate_writes_outputs_and_metrics(tmp_path):
    path = tmp_path / "o.csv"
    _write_csv(path, [good_order(0), good_order(1, rating="7")], "utf-8")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["validate", "--orders", str(path), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "orders.parquet").exists()
    q = pd.read_csv(out / "quarantine.csv", dtype=str)
    assert q["reason"].tolist() == ["rating:out_of_range"] and q["source_row"].tolist() == ["1"]
    m = json.loads((out / "validation_metrics.json").read_text())
    assert m["orders"]["valid_rows"] == 1 and m["orders"]["quarantined_rows"] == 1


def test_cli_validate_unusable_file_exits_nonzero(tmp_path):
    path = tmp_path / "o.csv"
    orders_frame([good_order(0)]).drop(columns=["priority"]).to_csv(path, index=False)
    r = CliRunner().invoke(app, ["validate", "--orders", str(path), "--out", str(tmp_path / "x")])
    assert r.exit_code != 0
    assert "priority" in r.output
    r = CliRunner().invoke(
        app, ["validate", "--orders", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x")]
    )
    assert r.exit_code != 0 and "no such file" in r.output


# --------------------------------------------------------------------- property-based

_cell = st.one_of(
    st.just(""),
    st.text(max_size=12),
    st.sampled_from(["NaN", "null", "是", "否", "-1", "1e309", "2024-13-40", "０", "\ufeff"]),
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.datetimes().map(lambda d: d.isoformat()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.fixed_dictionaries({}, optional={c: _cell for c in ORDERS.names}),
        min_size=1,
        max_size=8,
    ),
)
def test_malformed_rows_never_crash_never_vanish(mutations):
    rows = [good_order(i) for i in range(8)]
    for i, m in enumerate(mutations):
        rows[i % 8] = {**rows[i % 8], **m}
    res = validate_orders(orders_frame(rows))
    s = res.stats
    assert s["valid_rows"] + s["quarantined_rows"] + s["duplicates_collapsed"] == 8
    seen = set(res.valid["source_row"]) | set(res.quarantine["source_row"])
    assert len(seen) == 8 - s["duplicates_collapsed"]
    assert all(isinstance(r, str) and r for r in res.quarantine["reason"])
    # every quarantined row keeps its original cells
    for r in res.quarantine.itertuples():
        orig = rows[r.source_row]
        assert all(getattr(r, c) == orig[c] for c in ("order_id", "rating", "reported_at"))
    # rows the mutations did not touch stay valid, unless a mutated row took their order_id
    touched = {i % 8 for i in range(len(mutations))}
    ids = [r["order_id"] for r in rows]
    for i in set(range(8)) - touched:
        if ids.count(ids[i]) == 1:
            assert i in set(res.valid["source_row"])


def test_self_referencing_parent_is_a_defect():
    res = validate_orders(orders_frame([good_order(0, parent_order_id="WO000000")]))
    assert res.quarantine["reason"].tolist() == ["parent_order_id:self_reference"]


def test_cross_table_inconsistencies_are_counted_not_quarantined(tmp_path):
    from pipelines.validate import validate_files

    _write_csv(
        tmp_path / "o.csv",
        [good_order(0, unit_id="X1", parent_order_id="OLD1"), good_order(1, unit_id="U1")],
        "utf-8",
    )
    pd.DataFrame({"unit_id": ["U1"], "community_id": ["C99"]}).to_csv(
        tmp_path / "u.csv", index=False
    )
    m = validate_files(tmp_path / "o.csv", tmp_path / "out", units=tmp_path / "u.csv")
    assert m["orders"]["valid_rows"] == 2
    assert m["warnings"] == {
        "parent_order_id_not_in_file": 1,
        "indoor_unit_not_in_units": 1,
        "community_differs_from_units": 1,
    }


# ---------------------------------------------------------------- record-wise (API) fast path

_NOW = pd.Timestamp("2024-06-01 12:00:00", tz="Asia/Shanghai")
_TRICKY = [
    None,
    "",
    " ",
    "nan",
    "None",
    "NULL",
    "n/a",
    "-",
    "<NA>",
    " x ",
    "\u3000x",
    "x\x1c",
    "\u212a",
    "İ",
    "是",
    "否",
    "TRUE",
    "Yes",
    "0",
    "1",
    "1.0",
    "2",
    "-3",
    "3.5",
    "1e3",
    ".5",
    "5.",
    "+4",
    "12345678901234567",
    "inf",
    "NaN",
    "WO000001",
    "WO000002",
    "C01",
    "2024-05-01 10:00:00",
    "2024-05-01T10:00:00",
    "2024/5/1 10:00",
    "2024-05-01 10:00:00+08:00",
    "2024-02-30 10:00:00",
    "1999-12-31 23:59:59",
    "2099-12-31 23:59:59",
    "2030-01-01 00:00:00",
    "2024-06-02 13:00:00",
    "2024-04-30 09:00:00",
    "2024年5月1日 10:00",
    True,
    False,
    0,
    1,
    7,
    -1,
    2.5,
    3.0,
    1e300,
    float("nan"),
]


def _cell(col):
    from models.schemas import ORDERS

    c = ORDERS.by_name[col]
    good = list(c.enum or ()) + [v.upper() for v in c.enum or ()]
    return st.one_of(
        st.sampled_from(_TRICKY + good),
        st.text(max_size=6),
        st.integers(-5, 10),
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(0, 1e4),
    )


@st.composite
def _rows(draw):
    n = draw(st.integers(1, 4))
    rows = []
    for i in range(n):
        row = good_order(i)
        for col in draw(st.sets(st.sampled_from(ORDERS.names), max_size=3)):
            row[col] = draw(_cell(col))
        rows.append(row)
    if n > 1 and draw(st.booleans()):
        rows[-1]["order_id"] = rows[0]["order_id"]
    return rows


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_rows(), techs=st.none() | st.just({"T01", "T02"}))
def test_record_wise_path_matches_the_vectorised_one(rows, techs):
    """Whenever the fast path answers, it answers exactly like the vectorised checks."""
    from models.validation import _Decline, _validate_fast

    ref = validate_table(
        pd.DataFrame(rows, columns=ORDERS.names, dtype=object), ORDERS,
        known_technicians=techs, now=_NOW,
    )  # fmt: skip
    try:
        fast = _validate_fast(rows, ORDERS, techs, _NOW)
    except _Decline:
        return
    pd.testing.assert_frame_equal(fast.valid, ref.valid, check_dtype=False)
    assert reasons_of(fast) == reasons_of(ref)
    assert fast.quarantine["reason"].tolist() == ref.quarantine["reason"].tolist()
    assert fast.stats == ref.stats


def test_record_wise_path_takes_api_shaped_orders_with_the_same_types():
    """Clean API orders do not decline, and come out typed exactly as the vectorised path."""
    from models.validation import _validate_fast, validate_records
    from serving.schemas import ORDER_EXAMPLE

    rows = [ORDER_EXAMPLE, good_order(1), good_order(2, rating="9")]
    fast = _validate_fast(rows, ORDERS, None, _NOW)
    ref = validate_records(rows, now=_NOW, fast=False)
    pd.testing.assert_frame_equal(fast.valid, ref.valid)
    assert fast.quarantine["reason"].tolist() == ["rating:out_of_range"]
    assert fast.stats == ref.stats


def test_record_wise_typed_frame_is_built_exactly_as_pandas_builds_it():
    """The direct column constructors (the single-order fast path) give the frame that
    ``pd.array`` per column and ``DataFrame(dict)`` give, missing cells included."""
    from models.validation import (
        _DIRECT,
        _fast_cell,
        _typed_frame_direct,
        _typed_frame_public,
    )
    from serving.schemas import ORDER_EXAMPLE

    assert _DIRECT  # the pinned pandas: the fast builder is in use
    empty = {c: None for c in ORDERS.names if not ORDERS.by_name[c].required}
    rows = [ORDER_EXAMPLE, good_order(1), good_order(2, **empty), good_order(3, paid="否")]
    typed = [{c.name: _fast_cell(c, r.get(c.name))[0] for c in ORDERS.columns} for r in rows]
    for sub in ([typed[0]], [typed[2]], typed, []):
        idx = list(range(len(sub)))
        pd.testing.assert_frame_equal(
            _typed_frame_direct(ORDERS, sub, idx), _typed_frame_public(ORDERS, sub, idx)
        )


_json_cell = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.fixed_dictionaries({}, optional={c: _json_cell for c in ORDERS.names}),
        min_size=1,
        max_size=6,
    )
)
def test_json_typed_cells_never_crash_never_vanish(mutations):
    """API payloads carry JSON types (numbers, booleans, null), not only text."""
    rows: list[dict] = [dict(good_order(i)) for i in range(6)]
    for i, m in enumerate(mutations):
        rows[i % 6].update(m)
    res = validate_orders(pd.DataFrame(rows))
    s = res.stats
    assert s["valid_rows"] + s["quarantined_rows"] + s["duplicates_collapsed"] == 6
    assert all(isinstance(r, str) and r for r in res.quarantine["reason"])
