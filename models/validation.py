"""Validation of contract tables: raw rows in, typed valid rows and a quarantine out.

Why it is shaped like this
--------------------------
* Nothing is lost: every input row ends either in ``valid`` or in ``quarantine`` (with its
  original values, ``source_row`` and a machine-readable ``reason``), except exact duplicates
  of an order, which are collapsed and counted. ``valid + quarantined + collapsed == input``.
* Nothing is silently coerced: a value that does not parse is a defect of *that field*
  (``rating:not_integer``), never a NaN that a model later treats as "unknown".
* Everything is derived from :mod:`models.schemas`, so a new column or enum value is declared
  once and validated everywhere (files, API, the generator's tests).

Reasons are ``field:problem`` items joined with ``;``; the problems are listed in
:data:`PROBLEMS` (and rendered into the contract docs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from models.schemas import LIFECYCLE, ORDERS, TIMEZONE, Column, Table

NULL_TOKENS = frozenset({"", "nan", "none", "null", "na", "n/a", "nat", "<na>", "-", "--"})
TRUE_TOKENS = frozenset({"true", "t", "yes", "y", "1", "1.0", "是", "真", "对"})
FALSE_TOKENS = frozenset({"false", "f", "no", "n", "0", "0.0", "否", "假"})
MIN_TIMESTAMP = pd.Timestamp("2000-01-01", tz=TIMEZONE)
MAX_TIMESTAMP = pd.Timestamp("2100-01-01", tz=TIMEZONE)

#: Every problem a quarantine reason can name, with its meaning (one declaration, documented).
PROBLEMS: dict[str, str] = {
    "missing": "a required value is empty",
    "bad_enum": "not one of the contract's values",
    "unparseable": "not a timestamp / number / boolean / date",
    "not_integer": "a fractional value in an integer column",
    "out_of_range": "outside the contract's bounds (timestamps: outside [2000, 2100))",
    "before_<field>": "a lifecycle timestamp precedes an earlier stage's timestamp",
    "missing_for_completed": "`status` is completed but `completed_at` is empty",
    "duplicate_conflict": (
        "the same key appears with different content: the first copy without other defects is"
        " kept, every other copy is held here"
    ),
    "in_future": "a timestamp more than a day after the moment of validation",
    "present_while_open": "`completed_at` is set but the order is open/dispatched/in progress",
    "unknown": "`technician_id` is not in the technicians table that was given",
    "field_count": "the CSV line had a different number of fields than the header (`row:`)",
    "self_reference": "`parent_order_id` names the order itself",
}

#: Statuses of an order that is not finished: it may not carry a completion time yet.
_OPEN_STATUSES = ("open", "dispatched", "in_progress")

SOURCE_ROW = "source_row"
REASON = "reason"

_OFFSET_RE = r"(?:Z|[+-]\d{2}(?::?\d{2})?)$"
_LOOSE_DATE_RE = re.compile(
    r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?:[ T]\d{1,2}:\d{1,2}(?::\d{1,2}(?:\.\d+)?)?)?$"
)
_CN_DATE_RE = re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日?\s*(.*)$")


class ContractError(ValueError):
    """The file as a whole cannot be validated (e.g. a required column is absent)."""


@dataclass
class ValidationResult:
    """Outcome of validating one table."""

    valid: pd.DataFrame
    quarantine: pd.DataFrame
    stats: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- cell parsing


def _as_text(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Stringify a raw column; return the stripped text and the missing mask.

    Numbers that arrive typed (Parquet) are rendered without a spurious ``.0`` so that an id
    written as an integer matches the same id written as text.
    """
    if pd.api.types.is_object_dtype(raw.dtype) or pd.api.types.is_string_dtype(raw.dtype):
        # Arrow-backed strings make the vectorised string ops several times faster.
        if pd.api.types.infer_dtype(raw, skipna=True) in ("string", "empty"):
            text = raw.astype("string[pyarrow]").str.strip().fillna("")
            short = text.str.len() <= 5
            missing = (short & text.str.lower().isin(NULL_TOKENS)).to_numpy(dtype=bool)
            return text, missing
    values = raw.to_numpy(dtype=object, na_value=None)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = _cell_text(v)
    text = pd.Series(out, index=raw.index, dtype=object)
    missing = text.str.lower().isin(NULL_TOKENS).to_numpy()
    return text, missing


def _cell_text(v: object) -> str:
    """One raw cell as stripped text ("" when absent): the rule of :func:`_as_text`."""
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace").strip()
    return str(v).strip()


def parse_timestamps(raw: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Parse timestamps the way real exports write them.

    Accepts ISO 8601 with or without offset (``2024-05-01T10:00:00+08:00``), the common
    ``2024-05-01 10:00:00``, slashes/dots (``2024/5/1 10:00``), ``2024年5月1日 10:00`` and
    already-typed datetimes. Naive values are Asia/Shanghai local time (the contract).

    Returns
    -------
    parsed, bad, out_of_range
        ``parsed`` is tz-aware Asia/Shanghai in nanoseconds (NaT where missing, bad or out of
        range); ``bad`` marks values that were present but did not parse; ``out_of_range``
        those that parsed to a moment outside [2000, 2100) — epoch-zero exports and typos.
    """
    n = len(raw)
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        ts = raw if getattr(raw.dt, "tz", None) is not None else raw.dt.tz_localize(TIMEZONE)
        parts = [(np.ones(n, dtype=bool), ts.dt.tz_convert(TIMEZONE))]
        return _finish_timestamps(raw.index, parts, np.zeros(n, dtype=bool))
    else:
        text, missing = _as_text(raw)
        text = text.where(~missing, "")
        # The common export format first, through pandas' fast exact-format path.
        common = pd.to_datetime(text.where(~missing), format="%Y-%m-%d %H:%M:%S", errors="coerce")
        done = common.notna().to_numpy()
        if done.all() or (done | missing).all():
            parsed = common.dt.tz_localize(TIMEZONE)
            return _finish_timestamps(
                raw.index, [(np.ones(n, dtype=bool), parsed)], np.zeros(n, dtype=bool)
            )
        cn = text.str.match(_CN_DATE_RE)
        if cn.any():
            text = text.copy()
            text[cn] = text[cn].str.replace(_CN_DATE_RE, r"\1-\2-\3 \4", regex=True).str.strip()
        has_offset = (text.str.contains(_OFFSET_RE, regex=True) & ~missing).to_numpy()
        naive = ~has_offset & ~missing
        parts = []
        if naive.any():
            t = text[naive]
            p = pd.to_datetime(t, format="ISO8601", errors="coerce")
            retry = p.isna() & t.str.match(_LOOSE_DATE_RE)
            if retry.any():
                norm = t[retry].str.replace(r"[/.](?=\d)", "-", n=2, regex=True)
                p = p.astype(object)
                p[retry] = pd.to_datetime(norm, format="mixed", errors="coerce")
                p = pd.to_datetime(p, errors="coerce")
            parts.append((naive, p.dt.tz_localize(TIMEZONE)))
        if has_offset.any():
            p = pd.to_datetime(text[has_offset], format="ISO8601", errors="coerce", utc=True)
            parts.append((has_offset, p.dt.tz_convert(TIMEZONE)))
        parsed_any = np.zeros(n, dtype=bool)
        for mask, p in parts:
            parsed_any[mask] = p.notna().to_numpy()
        bad = ~missing & ~parsed_any
    return _finish_timestamps(raw.index, parts, bad)


def _finish_timestamps(
    index: pd.Index, parts: list[tuple[np.ndarray, pd.Series]], bad: np.ndarray
) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Merge parsed parts into one nanosecond Series, flagging moments outside [2000, 2100)."""
    n = len(index)
    result = pd.Series(pd.NaT, index=index, dtype=f"datetime64[ns, {TIMEZONE}]")
    oor = np.zeros(n, dtype=bool)
    for mask, p in parts:
        outside = (p.notna() & ((p < MIN_TIMESTAMP) | (p >= MAX_TIMESTAMP))).to_numpy()
        oor[mask] = outside
        keep = p.where(~outside).astype(result.dtype)
        if mask.all():
            result = keep.set_axis(index)
        else:
            result.iloc[np.flatnonzero(mask)] = keep.array
    return result, bad, oor


def parse_bools(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Parse ``true/false/1/0/yes/no/是/否`` (any case); return values and the bad mask."""
    if pd.api.types.is_bool_dtype(raw.dtype):
        return raw.astype("boolean"), np.zeros(len(raw), dtype=bool)
    typed = _json_bools(raw) if raw.dtype == object else None
    if typed is not None:  # JSON booleans (the API): what the text rule gives, without text
        return typed, np.zeros(len(raw), dtype=bool)
    text, missing = _as_text(raw)
    low = text.str.lower()
    is_true = low.isin(TRUE_TOKENS).to_numpy()
    is_false = low.isin(FALSE_TOKENS).to_numpy()
    out = pd.Series(pd.NA, index=raw.index, dtype="boolean")
    out[is_true] = True
    out[is_false] = False
    bad = ~missing & ~is_true & ~is_false
    return out, bad


def parse_numbers(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Parse numbers (typed or text); non-finite values count as unparseable."""
    typed = _json_numbers(raw) if raw.dtype == object else None
    if typed is not None:  # JSON numbers (the API): what the text rule gives, without text
        num = typed
        missing = num.isna().to_numpy()
    elif pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        num = raw.astype("float64")
        missing = num.isna().to_numpy()
    else:
        text, missing = _as_text(raw)
        num = pd.to_numeric(text.where(~missing, None), errors="coerce").astype("float64")
    finite = np.isfinite(num.to_numpy())
    bad = ~missing & ~finite
    return num.where(finite), bad


def _json_bools(raw: pd.Series) -> pd.Series | None:
    """An object column of Python bools / None as ``boolean`` (None: other values)."""
    values = raw.tolist()
    if all(v is None or type(v) is bool for v in values):
        return pd.Series(pd.array(values, dtype="boolean"), index=raw.index)
    return None


def _json_numbers(raw: pd.Series) -> pd.Series | None:
    """An object column of Python ints / floats / None as float64, as the text rule reads it.

    None when other values are present (they take the text rule). The rule writes a whole
    float as its integer (so ``-0.0`` reads ``0.0``) and parses the text; ints beyond int64
    are left to it (its parse of them differs from ``float``).
    """
    values = raw.tolist()
    out = np.empty(len(values), dtype=float)
    for i, v in enumerate(values):
        t = type(v)
        if v is None:
            out[i] = np.nan
        elif t is float:
            out[i] = float(int(v)) if v.is_integer() else v
        elif t is int and -(2**63) <= v < 2**63:
            out[i] = v
        else:
            return None
    return pd.Series(out, index=raw.index)


# --------------------------------------------------------------------------- table checks


def _check_column(
    col: Column, raw: pd.Series
) -> tuple[pd.Series, list[tuple[str, np.ndarray]], np.ndarray]:
    """Type one column; return (typed values, [(problem, mask)], missing mask)."""
    problems: list[tuple[str, np.ndarray]] = []
    if col.dtype == "timestamp":
        typed, bad, oor = parse_timestamps(raw)
        problems.append(("unparseable", bad))
        problems.append(("out_of_range", oor))
        missing = ~bad & ~oor & typed.isna().to_numpy()
    elif col.dtype == "date":
        ts, bad, oor = parse_timestamps(raw)
        typed = ts.dt.tz_localize(None).dt.normalize().astype("datetime64[ns]")
        problems.append(("unparseable", bad))
        problems.append(("out_of_range", oor))
        missing = ~bad & ~oor & ts.isna().to_numpy()
    elif col.dtype == "bool":
        typed, bad = parse_bools(raw)
        problems.append(("unparseable", bad))
        missing = ~bad & typed.isna().to_numpy()
    elif col.dtype in ("int", "float"):
        num, bad = parse_numbers(raw)
        problems.append(("unparseable", bad))
        v = num.to_numpy()
        present = ~np.isnan(v)
        if col.dtype == "int":
            frac = present & (np.floor(np.where(present, v, 0)) != np.where(present, v, 0))
            problems.append(("not_integer", frac))
        # integers beyond 2**53 cannot be represented exactly: out of range for any count
        lo = -(2.0**53) if col.min is None else col.min
        hi = 2.0**53 if col.max is None else col.max
        with np.errstate(invalid="ignore"):
            problems.append(("out_of_range", present & ((v < lo) | (v > hi))))
        missing = ~bad & ~present
        typed = num
        if col.dtype == "int":
            flawed = problems[1][1] | problems[2][1]
            typed = num.where(~flawed).astype("Int64")
    elif col.dtype == "enum":
        text, missing = _as_text(raw)
        low = text.str.lower()
        allowed = {v.lower(): v for v in col.enum or ()}
        known = low.isin(allowed.keys()).to_numpy()
        problems.append(("bad_enum", ~missing & ~known))
        typed = low.map(allowed)
    elif col.dtype == "list":
        text, missing = _as_text(raw)
        allowed = {v.lower(): v for v in col.enum or ()}

        def norm(cell: str) -> str | None:
            items = [p.strip().lower() for p in re.split(r"[;；,，|]", cell) if p.strip()]
            if any(p not in allowed for p in items):
                return None
            return ";".join(allowed[p] for p in items)

        normed = text.map(lambda s: norm(s) if s else "")
        bad = ~missing & normed.isna().to_numpy()
        problems.append(("bad_enum", bad))
        typed = normed.where(~missing & ~bad, None)
    else:  # string / text
        text, missing = _as_text(raw)
        typed = text.where(~missing, None)
    if col.required:
        problems.append(("missing", missing))
    return typed, problems, missing


def _lifecycle_problems(typed: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """Timestamps out of lifecycle order, and a completed order without ``completed_at``."""
    out: list[tuple[str, str, np.ndarray]] = []
    stages = [c for c in LIFECYCLE if c in typed]
    for i, later in enumerate(stages):
        for earlier in stages[:i]:
            a, b = typed[later], typed[earlier]
            out.append((later, f"before_{earlier}", (a.notna() & b.notna() & (a < b)).to_numpy()))
    if "status" in typed and "completed_at" in typed:
        m = (typed["status"] == "completed").fillna(False) & typed["completed_at"].isna()
        out.append(("completed_at", "missing_for_completed", m.to_numpy(dtype=bool)))
        still_open = typed["status"].isin(_OPEN_STATUSES).fillna(False)
        m = still_open & typed["completed_at"].notna()
        out.append(("completed_at", "present_while_open", m.to_numpy(dtype=bool)))
    return out


def _duplicate_masks(
    raw: pd.DataFrame, key: str, key_text: pd.Series, flawed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return (conflicting copies to hold, identical copies to collapse).

    Identical copies (same text in every column) are one order exported twice: the first is
    kept. Copies that differ conflict: the first copy without any other defect is kept (an
    export's later, corrupted or edited copy must not cost the original), every other copy is
    held with ``duplicate_conflict``; when every copy is flawed, all are held.
    """
    n = len(raw)
    present = (key_text != "").to_numpy(dtype=bool)
    dup = key_text.duplicated(keep=False).to_numpy(dtype=bool) & present
    hold = np.zeros(n, dtype=bool)
    collapse = np.zeros(n, dtype=bool)
    if not dup.any():
        return hold, collapse
    rows = np.flatnonzero(dup)
    sub = raw.iloc[rows].astype(str).apply(lambda s: s.str.strip())
    keys = key_text.iloc[rows].to_numpy()
    sub[key] = keys
    frame = pd.DataFrame(
        {
            "row": rows,
            "key": keys,
            "sig": pd.util.hash_pandas_object(sub, index=False).to_numpy(),
            "flawed": flawed[rows],
        }
    )
    variants = frame.groupby("key")["sig"].transform("nunique").to_numpy()
    ident = frame[variants == 1]
    collapse[ident["row"].to_numpy()[ident.duplicated("key").to_numpy()]] = True
    conf = frame[variants > 1]
    keeper = conf[~conf["flawed"]].groupby("key")["row"].min()
    keeper_sig = frame.set_index("row").loc[keeper.to_numpy(), "sig"].set_axis(keeper.index)
    ksig = conf["key"].map(keeper_sig)
    same_as_keeper = (conf["sig"] == ksig).to_numpy()
    is_keeper = conf["row"].isin(keeper.to_numpy()).to_numpy()
    crow = conf["row"].to_numpy()
    collapse[crow[same_as_keeper & ~is_keeper]] = True
    hold[crow[~same_as_keeper]] = True
    return hold, collapse


def validate_table(
    raw: pd.DataFrame,
    table: Table = ORDERS,
    *,
    known_technicians: set[str] | None = None,
    bad_rows: dict[int, str] | None = None,
    now: pd.Timestamp | None = None,
) -> ValidationResult:
    """Validate a raw table against the contract.

    Parameters
    ----------
    raw
        The table as read: text cells (CSV) or typed columns (Parquet/JSON); extra columns are
        kept and passed through. Its index is ignored; rows are numbered 0..n-1 as
        ``source_row``.
    table
        Which contract table.
    known_technicians
        Ids of the technicians table, when one was given: unknown ids are quarantined.
    bad_rows
        Rows that the reader could not split into the header's fields, with their reason.
    now
        The moment of validation (default: the clock); timestamps more than a day later are
        ``in_future``.

    Raises
    ------
    ContractError
        When a required column is absent from the header.
    """
    raw = raw.reset_index(drop=True)
    raw.columns = [str(c).strip().lstrip("\ufeff") for c in raw.columns]
    absent = [c for c in table.required_names if c not in raw.columns]
    if absent:
        raise ContractError(
            f"{table.name}: missing required column(s): {', '.join(absent)} "
            f"(columns found: {', '.join(map(str, raw.columns)) or 'none'})"
        )
    n = len(raw)
    typed = pd.DataFrame(index=raw.index)
    flags: list[tuple[str, str, np.ndarray]] = []
    for col in table.columns:
        if col.name in raw.columns:
            values, problems, _ = _check_column(col, raw[col.name])
            typed[col.name] = values
            flags.extend((col.name, p, m) for p, m in problems)
        else:
            values, _, _ = _check_column(col, pd.Series([None] * n, index=raw.index, dtype=object))
            typed[col.name] = values
    horizon = (now or pd.Timestamp.now(tz=TIMEZONE)) + pd.Timedelta(days=1)
    for c in table.of_type("timestamp"):
        flags.append((c, "in_future", (typed[c] > horizon).fillna(False).to_numpy(dtype=bool)))
    if table is ORDERS:
        flags.extend(_lifecycle_problems(typed))
        pid = typed["parent_order_id"]
        flags.append(
            (
                "parent_order_id",
                "self_reference",
                (pid == typed["order_id"]).fillna(False).to_numpy(dtype=bool),
            )
        )
        if known_technicians is not None:
            tid = typed["technician_id"]
            flags.append(
                (
                    "technician_id",
                    "unknown",
                    (tid.notna() & ~tid.isin(known_technicians)).to_numpy(),
                )
            )
    if bad_rows:
        m = np.zeros(n, dtype=bool)
        m[list(bad_rows)] = True
        flags.append(("row", "field_count", m))
    flawed = np.column_stack([f[2] for f in flags]).any(axis=1) if flags else np.zeros(n, bool)
    key_text, _ = _as_text(raw[table.key])
    conflict, collapse = _duplicate_masks(raw, table.key, key_text, flawed)
    flags.append((table.key, "duplicate_conflict", conflict))

    matrix = np.column_stack([f[2] for f in flags]) if flags else np.zeros((n, 0), dtype=bool)
    rejected = matrix.any(axis=1) & ~collapse
    labels = np.array([f"{f}:{p}" for f, p, _ in flags], dtype=object)
    reasons = [";".join(labels[matrix[i]]) for i in np.flatnonzero(rejected)]

    extras = [c for c in raw.columns if c not in table.by_name]
    valid = typed.loc[~rejected & ~collapse].copy()
    for c in extras:
        valid[c] = raw.loc[valid.index, c]
    valid.insert(0, SOURCE_ROW, valid.index.astype("int64"))
    valid = valid.reset_index(drop=True)

    quarantine = raw.loc[rejected].copy()
    quarantine[SOURCE_ROW] = np.flatnonzero(rejected)
    quarantine[REASON] = reasons
    quarantine = quarantine.reset_index(drop=True)

    per_problem = {f"{f}:{p}": int(m[rejected].sum()) for f, p, m in flags if m[rejected].any()}
    stats = {
        "input_rows": n,
        "valid_rows": len(valid),
        "quarantined_rows": len(quarantine),
        "duplicates_collapsed": int(collapse.sum()),
        **{f"problem.{k}": v for k, v in sorted(per_problem.items())},
    }
    assert stats["valid_rows"] + stats["quarantined_rows"] + stats["duplicates_collapsed"] == n
    return ValidationResult(valid=valid, quarantine=quarantine, stats=stats)


def validate_orders(
    raw: pd.DataFrame,
    technicians: pd.DataFrame | None = None,
    *,
    bad_rows: dict[int, str] | None = None,
    now: pd.Timestamp | None = None,
) -> ValidationResult:
    """Validate raw orders; ``technicians`` (typed, validated) enables the unknown-id check."""
    known = None if technicians is None else set(technicians["technician_id"].dropna().astype(str))
    return validate_table(raw, ORDERS, known_technicians=known, bad_rows=bad_rows, now=now)


def cross_table_warnings(orders: pd.DataFrame, units: pd.DataFrame | None) -> dict[str, int]:
    """Count inconsistencies that are worth a look but are not defects of a row.

    A public-area order's ``unit_id`` is often a location that no units table lists, and a
    history export may begin after the order a rework points to; rejecting those rows would lose
    valid data, so they are counted (``validation_metrics.json``) instead of quarantined.
    """
    out: dict[str, int] = {}
    ids = set(orders["order_id"].dropna())
    pid = orders["parent_order_id"].dropna()
    out["parent_order_id_not_in_file"] = int((~pid.isin(ids)).sum())
    if units is not None:
        indoor = orders["area_type"] == "indoor"
        out["indoor_unit_not_in_units"] = int(
            (indoor & ~orders["unit_id"].isin(units["unit_id"])).sum()
        )
        known = units.dropna(subset=["community_id"]).drop_duplicates("unit_id")
        comm = orders["unit_id"].map(known.set_index("unit_id")["community_id"])
        out["community_differs_from_units"] = int(
            (comm.notna() & (comm != orders["community_id"])).sum()
        )
    return out


# --------------------------------------------------------------------------- record-wise path
#
# Why a second path: the vectorised checks above cost ~20 ms per call whatever the row count
# (a few dozen pandas operations per column), which is the whole latency budget of a
# single-order API request. For a handful of rows the same checks run cell by cell, driven by
# the same ``Column`` declarations (dtype, enum, bounds, required) and the same token sets and
# problem names; cells in any shape the record-wise path does not handle exactly like the
# vectorised one (other timestamp formats, exponents, odd whitespace, duplicate keys, ...) make
# it *decline* and the vectorised path validates the batch. A hypothesis test checks, on
# arbitrary rows, that whenever it does not decline it returns the same valid rows and the same
# reasons as :func:`validate_table`.

#: Largest batch validated record-wise (above it the vectorised path is cheaper per row).
FAST_MAX_ROWS = 32
_FAST_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_FAST_NUM_RE = re.compile(r"^[+-]?\d+(?:\.\d*)?$")
_FAST_DTYPES = {
    "string": "string[pyarrow]",
    "text": "string[pyarrow]",
    "enum": pd.StringDtype("pyarrow", na_value=np.nan),
    "timestamp": f"datetime64[ns, {TIMEZONE}]",
    "bool": "boolean",
    "int": "Int64",
    "float": "float64",
}
# resolved once: ``pd.array(..., dtype="Int64")`` looks a dtype string up in every registered
# extension dtype per call (~30 us a column, a third of validating one order)
_FAST_DTYPES = {k: pd.api.types.pandas_dtype(v) for k, v in _FAST_DTYPES.items()}
#: An empty quarantine frame per table, copied (building one costs ~0.3 ms).
_EMPTY_QUARANTINE: dict[str, pd.DataFrame] = {}


def _typed_frame_public(
    table: Table, typed_rows: list[dict[str, object]], source_rows: list[int]
) -> pd.DataFrame:
    """The valid rows of the record-wise path as a typed frame (public pandas API)."""
    cols: dict[str, object] = {SOURCE_ROW: np.array(source_rows, dtype="int64")}
    for col in table.columns:
        cols[col.name] = pd.array([r[col.name] for r in typed_rows], dtype=_FAST_DTYPES[col.dtype])
    return pd.DataFrame(cols)


_NAT_I8 = np.iinfo(np.int64).min


def _typed_frame_direct(
    table: Table, typed_rows: list[dict[str, object]], source_rows: list[int]
) -> pd.DataFrame:
    """:func:`_typed_frame_public` from the arrays' own constructors (~4x faster for one row).

    Why: ``pd.array`` infers and converts per column (~20-40 us each) and ``DataFrame(dict)``
    re-checks every array; for a single API order that was ~1 ms of ~1.3. The cells are
    already typed, so each column is built as what ``pd.array`` returns. Used only when it
    gives the same frame as the public path (checked at import, :data:`_DIRECT`).
    """
    arrays: list[object] = [np.array(source_rows, dtype="int64")]
    for col in table.columns:
        vals = [r[col.name] for r in typed_rows]
        kind, dtype = col.dtype, _FAST_DTYPES[col.dtype]
        if kind in ("string", "text", "enum"):
            arr = pa.chunked_array([pa.array(vals, type=pa.large_string())])
            arrays.append(pd.arrays.ArrowStringArray(arr, dtype=dtype))
        elif kind == "timestamp":
            i8 = np.array([_NAT_I8 if v is pd.NaT else v.value for v in vals], dtype=np.int64)
            arrays.append(pd.arrays.DatetimeArray._simple_new(i8.view("M8[ns]"), dtype=dtype))
        elif kind in ("bool", "int"):
            mask = np.array([v is None for v in vals], dtype=bool)
            if kind == "bool":
                data = np.array([v is True for v in vals], dtype=bool)
                arrays.append(pd.arrays.BooleanArray(data, mask))
            else:
                data = np.array([0 if v is None else v for v in vals], dtype=np.int64)
                arrays.append(pd.arrays.IntegerArray(data, mask))
        elif kind == "float":
            arrays.append(np.array([np.nan if v is None else v for v in vals], dtype=float))
        else:
            arrays.append(pd.array(vals, dtype=dtype))
    return pd.DataFrame._from_arrays(  # type: ignore[attr-defined]
        arrays,
        columns=pd.Index([SOURCE_ROW, *table.names]),
        index=pd.RangeIndex(len(source_rows)),
        verify_integrity=False,
    )


def _direct_ok() -> bool:
    """Whether the direct builder gives the public builder's frame (this pandas version)."""
    orders = ORDERS
    samples: list[dict[str, object]] = []
    for variant in range(3):  # typed cells as ``_fast_cell`` returns them, with missing ones
        row: dict[str, object] = {}
        for col in orders.columns:
            missing = variant == 1 or (variant == 2 and not col.required)
            if col.dtype == "timestamp":
                row[col.name] = (
                    pd.NaT if missing else pd.Timestamp("2024-05-01 21:40").tz_localize(TIMEZONE)
                )
            elif missing:
                row[col.name] = None
            elif col.dtype == "bool":
                row[col.name] = variant == 0
            elif col.dtype == "int":
                row[col.name] = 2
            elif col.dtype == "float":
                row[col.name] = 1.5
            elif col.dtype in ("string", "text", "enum"):
                row[col.name] = (col.enum or ("报修x",))[0]
            else:
                return False  # a dtype the direct builder does not know
        samples.append(row)
    try:
        for rows in ([samples[0]], [samples[1]], samples, []):
            idx = list(range(len(rows)))
            pd.testing.assert_frame_equal(
                _typed_frame_direct(orders, rows, idx), _typed_frame_public(orders, rows, idx)
            )
    except Exception:  # noqa: BLE001 - any difference: the public path is used
        return False
    return True


def _typed_frame(
    table: Table, typed_rows: list[dict[str, object]], source_rows: list[int]
) -> pd.DataFrame:
    if _DIRECT and table is ORDERS:
        return _typed_frame_direct(table, typed_rows, source_rows)
    return _typed_frame_public(table, typed_rows, source_rows)


class _Decline(Exception):
    """A cell the record-wise path does not handle exactly like the vectorised one."""


def _fast_text(v: object) -> tuple[str, bool]:
    """Cell text and whether it is missing, or decline where pyarrow and Python could differ."""
    t = _cell_text(v)
    if t and (t[0].isspace() or t[-1].isspace()):
        raise _Decline
    low = t.lower()
    if not t.isascii() and low != t:
        raise _Decline
    return t, low in NULL_TOKENS


def _fast_cell(col: Column, v: object) -> tuple[object, list[tuple[str, bool]]]:
    """Typed value and ``[(problem, hit)]`` of one cell, in :func:`_check_column`'s order."""
    if v is not None and not isinstance(v, str) and col.dtype not in ("int", "float", "bool"):
        raise _Decline  # e.g. a number in a text column: typed as it came by the frame path
    t, missing = _fast_text(v)
    problems: list[tuple[str, bool]] = []
    typed: object = None
    if col.dtype == "timestamp":
        if not missing:
            if not _FAST_TS_RE.match(t) or not "2000" <= t[:4] <= "2099":
                raise _Decline
            try:
                typed = pd.Timestamp(t).tz_localize(TIMEZONE)
            except ValueError as exc:
                raise _Decline from exc
        else:
            typed = pd.NaT
        problems += [("unparseable", False), ("out_of_range", False)]
    elif col.dtype == "bool":
        low = t.lower()
        typed = True if low in TRUE_TOKENS else False if low in FALSE_TOKENS else None
        problems.append(("unparseable", not missing and typed is None))
        missing = missing and typed is None
    elif col.dtype in ("int", "float"):
        if missing:
            x = np.nan
        elif isinstance(v, float) and (v == 0 or 1e-4 <= abs(v) < 1e15):
            x = v  # a JSON float: its repr parses back to itself (checked, also by pandas)
        elif not _FAST_NUM_RE.match(t) or sum(ch.isdigit() for ch in t) > 15:
            raise _Decline
        else:
            x = float(t)
        present = not np.isnan(x)
        problems.append(("unparseable", False))
        frac = col.dtype == "int" and present and not x.is_integer()
        if col.dtype == "int":
            problems.append(("not_integer", frac))
        lo = -(2.0**53) if col.min is None else col.min
        hi = 2.0**53 if col.max is None else col.max
        oor = present and (x < lo or x > hi)
        problems.append(("out_of_range", oor))
        if col.dtype == "int":
            typed = None if (not present or frac or oor) else int(x)
        else:
            typed = x if present else None
    elif col.dtype == "enum":
        allowed = {e.lower(): e for e in col.enum or ()}
        typed = allowed.get(t.lower())
        problems.append(("bad_enum", not missing and typed is None))
    elif col.dtype in ("string", "text"):
        typed = None if missing else t
    else:  # dates and lists: the vectorised path
        if not missing:
            raise _Decline
    if col.required:
        problems.append(("missing", missing))
    return typed, problems


def _validate_fast(
    rows: list[dict[str, object]],
    table: Table,
    known_technicians: set[str] | None,
    now: pd.Timestamp | None,
) -> ValidationResult:
    """Record-wise :func:`validate_table` of a few rows (raises ``_Decline`` when unsure)."""
    n = len(rows)
    keys = [_cell_text(r.get(table.key)) for r in rows]
    present_keys = [k for k in keys if k != ""]
    if len(set(present_keys)) != len(present_keys):
        raise _Decline  # duplicates: the vectorised path settles them
    horizon = (now or pd.Timestamp.now(tz=TIMEZONE)) + pd.Timedelta(days=1)
    stamps = list(table.of_type("timestamp"))
    typed_rows: list[dict[str, object]] = []
    labels: list[list[str]] = []
    for r in rows:
        typed: dict[str, object] = {}
        hits: list[str] = []
        for col in table.columns:
            value, problems = _fast_cell(col, r.get(col.name))
            typed[col.name] = value
            hits += [f"{col.name}:{p}" for p, hit in problems if hit]
        hits += [f"{c}:in_future" for c in stamps if typed[c] is not pd.NaT and typed[c] > horizon]
        if table is ORDERS:
            stages = [c for c in LIFECYCLE if c in typed]
            for i, later in enumerate(stages):
                for earlier in stages[:i]:
                    a, b = typed[later], typed[earlier]
                    if a is not pd.NaT and b is not pd.NaT and a < b:
                        hits.append(f"{later}:before_{earlier}")
            done_at = typed["completed_at"]
            if typed["status"] == "completed" and done_at is pd.NaT:
                hits.append("completed_at:missing_for_completed")
            if typed["status"] in _OPEN_STATUSES and done_at is not pd.NaT:
                hits.append("completed_at:present_while_open")
            pid = typed["parent_order_id"]
            if pid is not None and pid == typed["order_id"]:
                hits.append("parent_order_id:self_reference")
            tid = typed["technician_id"]
            if known_technicians is not None and tid is not None and tid not in known_technicians:
                hits.append("technician_id:unknown")
        typed_rows.append(typed)
        labels.append(hits)
    ok = [i for i in range(n) if not labels[i]]
    bad = [i for i in range(n) if labels[i]]
    valid = _typed_frame(table, [typed_rows[i] for i in ok], ok)
    if bad or table.name not in _EMPTY_QUARANTINE:
        quarantine = pd.DataFrame(
            [[rows[i].get(c) for c in table.names] for i in bad], columns=table.names, dtype=object
        )
        quarantine[SOURCE_ROW] = np.array(bad, dtype="int64")
        quarantine[REASON] = [";".join(labels[i]) for i in bad]
        if not bad:
            _EMPTY_QUARANTINE[table.name] = quarantine
    quarantine = _EMPTY_QUARANTINE[table.name].copy() if not bad else quarantine
    per_problem: dict[str, int] = {}
    for i in bad:
        for label in labels[i]:
            per_problem[label] = per_problem.get(label, 0) + 1
    stats = {
        "input_rows": n,
        "valid_rows": len(valid),
        "quarantined_rows": len(quarantine),
        "duplicates_collapsed": 0,
        **{f"problem.{k}": v for k, v in sorted(per_problem.items())},
    }
    return ValidationResult(valid=valid, quarantine=quarantine, stats=stats)


#: The direct typed-frame builder agrees with the public one (checked once, at import).
_DIRECT = _direct_ok()


def validate_records(
    rows: list[dict[str, object]],
    table: Table = ORDERS,
    *,
    known_technicians: set[str] | None = None,
    now: pd.Timestamp | None = None,
    fast: bool = True,
) -> ValidationResult:
    """Validate rows given as mappings (the API's JSON objects), contract columns only.

    Same result as ``validate_table(pd.DataFrame(rows, columns=table.names, dtype=object))``;
    a few orders are checked record-wise (no pandas overhead), falling back to the vectorised
    checks whenever a cell is in a shape the record-wise path does not handle.
    """
    if fast and table is ORDERS and 0 < len(rows) <= FAST_MAX_ROWS:
        try:
            return _validate_fast(rows, table, known_technicians, now)
        except _Decline:
            pass
    frame = pd.DataFrame(rows, columns=table.names, dtype=object)
    return validate_table(frame, table, known_technicians=known_technicians, now=now)
