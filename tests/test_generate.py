"""Tests of the embedded data generator: contract, determinism, realism and ground truth."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.schemas import LIFECYCLE, ORDERS, TECHNICIANS, UNITS
from pipelines.generate import generate
from pipelines.simulator import SimulationConfig, simulate
from pipelines.simulator.timeline import HOLIDAY, WEEKEND, WORKDAY, _day_type, build_timeline

TS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
REPEAT_CUES = (
    "又坏了", "第二次报修", "上次修完没几天", "还是没修好", "又出现了",
    "第三次", "刚修过", "老毛病", "跟没修一样", "又来了",
)  # fmt: skip


def read_raw(path: Path) -> pd.DataFrame:
    """A contract CSV as text cells, exactly as written."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)


def typed_orders(raw: pd.DataFrame) -> pd.DataFrame:
    """Minimal typing for label checks (the real reader lives in pipelines.io)."""
    df = raw.replace("", np.nan)
    for c in LIFECYCLE:
        df[c] = pd.to_datetime(df[c])
    df["rating"] = pd.to_numeric(df["rating"])
    df["complaint"] = df["complaint"].map({"true": True, "false": False})
    return df


def contract_labels(o: pd.DataFrame, window_days: float = 30.0) -> tuple[pd.Series, pd.Series]:
    """The contract's rework and dissatisfied labels (NaN = unlabelled / censored)."""
    end = o["reported_at"].max()
    window = pd.Timedelta(days=window_days)
    done = o["status"] == "completed"
    live = o.loc[o["status"] != "cancelled", ["unit_id", "category", "reported_at"]]
    src = o.loc[done, ["unit_id", "category", "completed_at"]].reset_index()
    m = pd.merge_asof(
        src.sort_values("completed_at"),
        live.rename(columns={"reported_at": "next_at"}).sort_values("next_at"),
        left_on="completed_at",
        right_on="next_at",
        by=["unit_id", "category"],
        direction="forward",
        allow_exact_matches=False,
    )
    rework = pd.Series(np.nan, index=o.index)
    rework.loc[m["index"]] = ((m["next_at"] - m["completed_at"]) <= window).astype(float).values
    named = o["order_id"].isin(set(o.loc[o["status"] != "cancelled", "parent_order_id"].dropna()))
    rework[named & done] = 1.0
    rework[done & (o["completed_at"] > end - window)] = np.nan

    complaint = o["complaint"].fillna(False).astype(bool)
    labelled = done & (o["rating"].notna() | complaint | o["feedback_comment"].notna())
    bad = complaint | (o["rating"] <= 2)
    dissatisfied = pd.Series(np.nan, index=o.index)
    dissatisfied[labelled] = bad[labelled].astype(float)
    return rework, dissatisfied


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gen_small")
    summary = generate(out, seed=7, units=300, months=3)
    return out, summary


@pytest.fixture(scope="module")
def medium() -> pd.DataFrame:
    """~6k orders over a year, rendered and read back like a customer export."""
    return simulate(seed=3, units=2000, months=12)


@pytest.fixture(scope="module")
def medium_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen_medium")
    generate(out, seed=3, units=2000, months=12)
    return out


def test_files_and_exact_contract_columns(small: tuple[Path, dict]) -> None:
    out, summary = small
    assert read_raw(out / "orders.csv").columns.tolist() == ORDERS.names
    assert read_raw(out / "technicians.csv").columns.tolist() == TECHNICIANS.names
    assert read_raw(out / "units.csv").columns.tolist() == UNITS.names
    assert (out / "ground_truth.parquet").exists()
    assert summary["orders"] == len(read_raw(out / "orders.csv")) > 100


def test_deterministic_given_seed(small: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = small
    generate(tmp_path / "again", seed=7, units=300, months=3)
    generate(tmp_path / "other", seed=8, units=300, months=3)
    for name in ("orders.csv", "technicians.csv", "units.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()
    assert (tmp_path / "other" / "orders.csv").read_bytes() != (out / "orders.csv").read_bytes()
    a = pd.read_parquet(out / "ground_truth.parquet")
    b = pd.read_parquet(tmp_path / "again" / "ground_truth.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_enums_bounds_and_formats(small: tuple[Path, dict]) -> None:
    out, _ = small
    raw = read_raw(out / "orders.csv")
    for col in ORDERS.columns:
        cells = raw[col.name]
        present = cells[cells != ""]
        if col.required:
            assert (cells != "").all(), col.name
        if col.enum:
            assert set(present) <= set(col.enum), col.name
        if col.dtype == "timestamp":
            assert present.str.match(TS).all(), col.name
        if col.dtype == "bool":
            assert set(present) <= {"true", "false"}, col.name
        if col.dtype in ("int", "float") and len(present):
            v = pd.to_numeric(present)
            assert col.min is None or v.min() >= col.min, col.name
            assert col.max is None or v.max() <= col.max, col.name
    assert raw["order_id"].is_unique
    tech = read_raw(out / "technicians.csv")
    certs = {c for cell in tech["certifications"] for c in cell.split(";") if c}
    assert certs <= set(ORDERS.by_name["category"].enum)
    assert set(tech["employment"]) == {"in_house", "subcontractor"}
    assert tech["hire_date"].str.match(r"^\d{4}-\d{2}-\d{2}$").all()
    units = read_raw(out / "units.csv")
    assert units["unit_id"].is_unique
    assert set(raw["unit_id"]) <= set(units["unit_id"])
    assert set(raw["technician_id"]) - {""} <= set(tech["technician_id"])
    # patrol and public-area orders have no reporting resident
    public = raw["area_type"] == "public"
    assert (raw.loc[public, "resident_id"] == "").all()
    assert (raw.loc[~public, "resident_id"] != "").all()


def test_lifecycle_order_and_statuses(medium_files: Path) -> None:
    o = typed_orders(read_raw(medium_files / "orders.csv"))
    for i, later in enumerate(LIFECYCLE):
        for earlier in LIFECYCLE[:i]:
            both = o[later].notna() & o[earlier].notna()
            assert (o.loc[both, later] >= o.loc[both, earlier]).all(), (later, earlier)
    done = o["status"] == "completed"
    assert (
        o.loc[done, ["dispatched_at", "arrived_at", "completed_at", "technician_id"]]
        .notna()
        .all()
        .all()
    )
    assert o.loc[~done, "completed_at"].isna().all()
    cancelled = o["status"] == "cancelled"
    assert 0.005 < cancelled.mean() < 0.06
    unfinished = o["status"].isin(["open", "dispatched", "in_progress"])
    assert unfinished.any()
    assert (o.loc[unfinished, "reported_at"] > o["reported_at"].max() - pd.Timedelta(days=10)).all()
    assert o.loc[o["status"] == "open", ["dispatched_at", "technician_id"]].isna().all().all()
    assert o.loc[~done, ["rating", "complaint", "feedback_comment"]].isna().all().all()


def test_rework_linkage(medium_files: Path) -> None:
    o = typed_orders(read_raw(medium_files / "orders.csv")).set_index("order_id", drop=False)
    kids = o[o["parent_order_id"].notna()]
    assert len(kids) > 20
    parents = o.loc[kids["parent_order_id"]]
    assert (parents["unit_id"].to_numpy() == kids["unit_id"].to_numpy()).all()
    assert (parents["category"].to_numpy() == kids["category"].to_numpy()).all()
    assert (parents["status"] == "completed").all()
    lag = kids["reported_at"].to_numpy() - parents["completed_at"].to_numpy()
    assert (lag > pd.Timedelta(0)).all()
    assert (lag <= pd.Timedelta(days=30)).mean() > 0.75
    gt = pd.read_parquet(medium_files / "ground_truth.parquet")
    reworks = gt["is_rework"].sum()
    assert 0.25 < len(kids) / reworks < 0.6  # about a third to half are linked


def test_label_rates_in_target_range(medium: object) -> None:
    o = medium.orders
    rework, dissatisfied = contract_labels(o)
    assert 0.05 <= rework.mean() <= 0.15
    assert 0.08 <= dissatisfied.mean() <= 0.20
    assert rework.notna().sum() > 4000


def test_ground_truth_aligns_and_is_calibrated(medium_files: Path) -> None:
    o = typed_orders(read_raw(medium_files / "orders.csv"))
    gt = pd.read_parquet(medium_files / "ground_truth.parquet")
    assert gt["order_id"].tolist() == o["order_id"].tolist()
    done = (o["status"] == "completed").to_numpy()
    for c in ("p_rework", "p_dissatisfied", "p_dissatisfied_if_labelled"):
        assert gt.loc[done, c].between(0, 1).all(), c
        assert gt.loc[~done, c].isna().all(), c
    for c in ("tech_skill", "unit_proneness", "resident_temperament", "delay_factor"):
        assert c in gt.columns
    rework, dissatisfied = contract_labels(o)
    m = rework.notna()
    assert abs(gt.loc[m, "p_rework"].mean() - rework[m].mean()) < 0.015
    rated = (o["rating"].notna() | o["complaint"].fillna(False).astype(bool)) & dissatisfied.notna()
    assert (
        abs(gt.loc[rated, "p_dissatisfied_if_labelled"].mean() - dissatisfied[rated].mean()) < 0.02
    )
    any_bad = (o["complaint"].fillna(False).astype(bool) | (o["rating"] <= 2))[done]
    assert abs(gt.loc[done, "p_dissatisfied"].mean() - any_bad.mean()) < 0.015
    # the oracle ranks: top decile of p_rework is reworked far more often than the bottom one
    dec = pd.qcut(gt.loc[m, "p_rework"], 10, labels=False)
    by = rework[m].groupby(dec.to_numpy()).mean()
    assert by.iloc[-1] > 3 * by.iloc[0]


def test_drivers_point_the_right_way(medium: object) -> None:
    gt, o = medium.ground_truth, medium.orders
    done = o["status"] == "completed"
    assert np.corrcoef(gt.loc[done, "tech_skill"], gt.loc[done, "p_fail"])[0, 1] < -0.1
    assert np.corrcoef(np.log(gt.loc[done, "unit_proneness"]), gt.loc[done, "p_fail"])[0, 1] > 0.1
    angry = gt["resident_temperament"] == "angry"
    calm = gt["resident_temperament"] == "calm"
    assert (
        gt.loc[done & angry, "p_dissatisfied_latent"].mean()
        > 1.5 * gt.loc[done & calm, "p_dissatisfied_latent"].mean()
    )
    # summer air conditioning
    month = o["reported_at"].dt.month
    hvac = o["category"] == "hvac"
    assert hvac[month.isin([7, 8])].mean() > 1.5 * hvac[month.isin([4, 10])].mean()
    # holidays are thinly staffed: slower first response
    wait = (o["dispatched_at"] - o["reported_at"]).dt.total_seconds()
    assert wait[gt["holiday"]].median() > wait[~gt["holiday"]].median()
    # urges rise with delay
    late = gt["delay_factor"] > 2
    assert o.loc[late, "urge_count"].mean() > 2 * o.loc[~late, "urge_count"].mean()


def test_text_variety_and_signal(medium: object) -> None:
    o, gt = medium.orders, medium.ground_truth
    desc = o["description"]
    assert desc.str.len().min() > 4
    assert desc.nunique() / len(desc) > 0.9
    assert desc.str.contains(r"[\u4e00-\u9fff]").all()
    for cat, group in desc.groupby(o["category"]):
        if len(group) > 200:
            assert group.nunique() > 150, cat
    cue = desc.str.contains("|".join(REPEAT_CUES))
    assert cue[gt["is_rework"].to_numpy()].mean() > 0.5
    assert 0.0 < cue[~gt["is_rework"].to_numpy()].mean() < 0.15  # false / independent cues
    unlinked = gt["is_rework"].to_numpy() & o["parent_order_id"].isna().to_numpy()
    assert cue[unlinked].mean() > 0.5  # text carries the repeat even without a link
    angry_words = desc.str.contains("！！|投诉|有没有人管|白交|😡|😤|怎么回事")
    temper = gt["resident_temperament"]
    assert angry_words[temper == "angry"].mean() > 3 * angry_words[temper == "calm"].mean()
    assert angry_words[temper == "calm"].mean() > 0  # tone is noisy, not a label
    comments = o["feedback_comment"].dropna()
    done = o["status"] == "completed"
    rated = o["rating"].notna()
    assert 0.3 < o.loc[rated, "feedback_comment"].notna().mean() < 0.9
    assert o.loc[done & ~rated, "feedback_comment"].notna().any()
    assert comments.nunique() > 0.3 * len(comments)
    assert comments.str.contains("就是|不过|但是").any()  # mixed comments


def test_timeline_holidays_and_fallback() -> None:
    assert _day_type(dt.date(2024, 10, 3)) == HOLIDAY
    assert _day_type(dt.date(2024, 9, 29)) == WORKDAY  # 调休 make-up Sunday
    assert _day_type(dt.date(2024, 3, 2)) == WEEKEND
    assert _day_type(dt.date(2031, 10, 2)) == HOLIDAY  # beyond chinese_calendar's data
    tl = build_timeline("2024-01-01", 2, SimulationConfig())
    d = np.array([5, 40])
    region, cat = np.array([0, 1]), np.array([2, 0])
    full = tl.integrated_intensity(region, cat, d.astype(float), d + 1.0)
    np.testing.assert_allclose(full, tl.intensity[region, cat, d])
    half = tl.integrated_intensity(region, cat, d.astype(float), d + 0.5)
    assert (half > 0.3 * full).all() and (half < full).all()


def test_passes_contract_validation(medium_files: Path) -> None:
    validation = pytest.importorskip("models.validation")
    raw = read_raw(medium_files / "orders.csv").astype(object)
    techs = read_raw(medium_files / "technicians.csv")
    result = validation.validate_orders(raw, techs)
    assert len(result.quarantine) == 0, result.quarantine.head().to_dict()
    assert len(result.valid) == len(raw)


def test_rework_drift_raises_the_failure_rate_over_time() -> None:
    flat = simulate(seed=5, units=1500, months=6)
    drift = simulate(seed=5, units=1500, months=6, config=SimulationConfig(rework_drift=1.5))

    def halves(res: object) -> tuple[float, float]:
        o = res.orders.set_index("order_id")
        g = res.ground_truth.set_index("order_id")
        t = pd.to_datetime(o["reported_at"]).reindex(g.index)
        late = (t > t.median()).to_numpy()
        return float(g["p_fail"][~late].mean()), float(g["p_fail"][late].mean())

    f_early, f_late = halves(flat)
    d_early, d_late = halves(drift)
    assert SimulationConfig().rework_drift == 0.0
    assert d_late / f_late > 1.6  # about e^1.5 x at the end, ~e^1.1 x on the later half
    assert 1.0 < d_early / f_early < d_late / f_late
