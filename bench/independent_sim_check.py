#!/usr/bin/env python
# ruff: noqa: E501  (report lines)
"""Recompute the contract labels from DIR/orders.csv and compare with ground truth."""

import os
import sys

import numpy as np
import pandas as pd


def parse_ts(s):
    s = s.fillna("").astype(str)
    has = s.str.endswith("Z") | s.str.contains(r"[+-]\d\d:\d\d$", regex=True)
    s2 = np.where((s != "") & ~has, s + "+08:00", s)
    s2 = pd.Series(s2).replace("", None)
    return pd.to_datetime(s2, utc=True, format="ISO8601")


def auc(y, p):
    y = np.asarray(y, bool)
    p = np.asarray(p, float)
    r = pd.Series(p).rank().values
    n1 = y.sum()
    n0 = len(y) - n1
    return (r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def labels(df, window_days=30):
    rep = parse_ts(df["reported_at"])
    comp = parse_ts(df["completed_at"])
    rep_s = rep.dt.tz_localize(None).values.astype("datetime64[s]").astype("int64")
    comp_s = np.where(
        comp.notna(), comp.dt.tz_localize(None).values.astype("datetime64[s]").astype("int64"), 0
    )
    key = pd.factorize(df["unit_id"].astype(str) + "|" + df["category"].astype(str))[0].astype(
        np.int64
    )
    live = (df["status"] != "cancelled").values
    comb = np.sort(key[live] * 10**10 + rep_s[live])
    done = (df["status"] == "completed").values & comp.notna().values
    q = key * 10**10 + comp_s
    pos = np.searchsorted(comb, q, side="right")
    nxt = comb[np.minimum(pos, len(comb) - 1)]
    hit = (
        (pos < len(comb))
        & (nxt // 10**10 == key)
        & (nxt - key * 10**10 <= comp_s + window_days * 86400)
    )
    parents = set(
        df.loc[
            live & df["parent_order_id"].notna() & (df["parent_order_id"].astype(str) != ""),
            "parent_order_id",
        ].astype(str)
    )
    linked = df["order_id"].astype(str).isin(parents).values
    y = hit | linked
    end = rep_s.max()
    uncensored = done & (comp_s <= end - window_days * 86400)
    rework = pd.Series(np.where(uncensored, y, np.nan), index=df.index)
    cmpl = df["complaint"].astype(str).str.lower().eq("true").values
    rating = pd.to_numeric(df["rating"], errors="coerce").values
    com = df["feedback_comment"].fillna("").astype(str).str.len().values > 0
    lab = done & (np.isfinite(rating) | cmpl | com)
    dis = pd.Series(
        np.where(lab, cmpl | (np.nan_to_num(rating, nan=9) <= 2), np.nan), index=df.index
    )
    return rework, dis, linked


def report(d):
    df = pd.read_csv(
        os.path.join(d, "orders.csv"), dtype=str, keep_default_na=False, na_values=[""]
    )
    gt = pd.read_parquet(os.path.join(d, "ground_truth.parquet"))
    df = df.merge(gt, on="order_id", how="left")
    rw, dis, linked = labels(df)
    print(f"== {d}")
    print(
        f"orders={len(df)}  units_with_orders={df.unit_id.nunique()}  status={df.status.value_counts().to_dict()}"
    )
    print(
        f"public share={(df.area_type == 'public').mean():.3f}  parent links={(df.parent_order_id.notna()).sum()}"
    )
    m = rw.notna()
    y = rw[m].astype(bool).values
    p = df.loc[m, "p_rework"].values
    print(
        f"rework: labelled={m.sum()}  base rate={y.mean():.4f}  mean p_rework={p.mean():.4f}  oracle AUC={auc(y, p):.4f}"
        f"  (AUC of p_fail={auc(y, df.loc[m, 'p_fail'].values):.4f})"
    )
    # calibration by decile
    qs = pd.qcut(p, 10, labels=False, duplicates="drop")
    cal = pd.DataFrame({"q": qs, "p": p, "y": y}).groupby("q").mean()
    print(
        "  decile mean p vs y:",
        " ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(cal.p, cal.y, strict=False)),
    )
    # drift view: by half year
    ts = parse_ts(df.loc[m, "completed_at"])
    per = (
        ts.dt.tz_convert("Asia/Shanghai").dt.tz_localize(None).dt.to_period("Q").astype(str).values
    )
    g = pd.DataFrame({"per": per, "y": y, "p": p}).groupby("per").mean()
    print("  by quarter y:", " ".join(f"{k}:{v:.3f}" for k, v in g.y.items()))
    md = dis.notna()
    yd = dis[md].astype(bool).values
    pdl = df.loc[md, "p_dissatisfied_if_labelled"].values
    done = (df.status == "completed").values
    print(
        f"dissatisfied: labelled={md.sum()} ({md.sum() / done.sum():.3f} of completed)  base rate={yd.mean():.4f}  "
        f"mean p_if_lab={pdl.mean():.4f}  oracle AUC={auc(yd, pdl):.4f}  (AUC p_dissatisfied={auc(yd, df.loc[md, 'p_dissatisfied'].values):.4f})"
    )
    print(
        f"  mean p_dissatisfied over completed={df.loc[done, 'p_dissatisfied'].mean():.4f}  latent D rate={df.loc[done, 'dissatisfied_latent'].mean():.4f}"
    )
    return dict(
        n=len(df),
        rework_rate=y.mean(),
        rework_auc=auc(y, p),
        dis_rate=yd.mean(),
        dis_auc=auc(yd, pdl),
    )


if __name__ == "__main__":
    for d in sys.argv[1:]:
        report(d)
