"""Benchmark of the shipped model going forward: train up to ``--until``, score what comes next.

What a property system does with ``repairqc train --until T`` and then ``repairqc score --from
T``: the model knows the history before T and scores each order completed in the following
``--days`` as of its completion. The test slice of ``repairqc train`` measures the *evaluated*
heads right after their own cut-off; this measures both kinds of heads months later, where a
drifting rework rate shows up as a calibration bias:

* ``evaluated``: the heads fitted before the training data's test slice (the baseline, what
  ``repairqc train`` shipped with ``train.final_fit: false``);
* ``shipped``: the heads fitted again up to T (``train.final_fit: true``), what
  ``repairqc train`` ships.

Per head: AUC ratio to the oracle, lift at the top 10 % (and the oracle's), ECE and the mean
bias (mean score − observed rate), over the scored orders whose labels are known by the end of
the data. The ratio ``shipped / evaluated`` of each ECE is printed too.

Usage::

    nice python bench/bench_forward.py --rework-drift 2.0 --until 2025-06-01
    nice python bench/bench_forward.py        # seed 7, no drift, the last scorable 91 days
    nice python bench/bench_forward.py --data data/raw --until 2025-09-01 --days 91
    # data the project was not built on: bench/independent_sim.py (its own latent process)
    python bench/independent_sim.py --out /tmp/ind_d2 --seed 1 --rework-drift 2.0
    nice python bench/bench_forward.py --data /tmp/ind_d2 --until 2025-06-01

Prints one JSON document (also written to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_pipeline import _data, add_data_arguments, emit  # noqa: E402


def _measure(scores: pd.DataFrame, labels: pd.DataFrame, truth: pd.DataFrame | None) -> dict:
    from models import metrics as M
    from models.estimators import HEADS
    from pipelines.evaluate import ORACLE

    out = {}
    ids = scores["order_id"].astype(str).to_numpy(dtype=object)
    for head, col in HEADS.items():
        y = labels[head].to_numpy(dtype=float)
        p = scores[col].to_numpy(dtype=float)
        known = ~np.isnan(y)
        r = {
            "n": int(known.sum()),
            "base_rate": round(float(y[known].mean()), 4),
            "auc": round(M.auc(y, p), 4),
            "lift_top10": round(M.lift_at(y, p, 0.10), 3),
            "ece": round(M.ece(y, p), 4),
            "bias": round(float(p[known].mean() - y[known].mean()), 4),
        }
        src = next((c for c in ORACLE[head] if truth is not None and c in truth), None)
        if src is not None:
            o = truth[src].reindex(ids).to_numpy(dtype=float)
            r["oracle_auc"] = round(M.auc(y, o), 4)
            r["auc_ratio_oracle"] = round(r["auc"] / r["oracle_auc"], 4)
            r["oracle_lift_top10"] = round(M.lift_at(y, o, 0.10), 3)
        out[head] = r
    return out


def main() -> None:
    """Run the benchmark and print the JSON report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(p)
    p.add_argument(
        "--until",
        help="training cut-off T (date, Asia/Shanghai); default: --days plus the rework window "
        "before the last report, so the scored orders' labels are all known",
    )
    p.add_argument("--days", type=float, default=91.0, help="score orders completed in T + days")
    p.add_argument("--params", default="params.yaml", help="features/label/train configuration")
    p.add_argument("--out", help="also write the JSON report here")
    args = p.parse_args()

    from models.estimators import final_training_frame, fit_risk_model, training_frame
    from models.features import completed_mask
    from models.labels import label_orders
    from models.schemas import ORDERS
    from pipelines.features import feature_config, parse_time, train_config

    fcfg, tcfg = feature_config(args.params), train_config(args.params)
    with tempfile.TemporaryDirectory() as tmp_s:
        (orders, techs, units), truth, t = _data(args, Path(tmp_s))
    if args.until:
        until = parse_time(args.until)
    else:
        lag = pd.Timedelta(days=args.days + fcfg.rework_window_days)
        until = (orders["reported_at"].max() - lag).tz_convert("Asia/Shanghai").floor("D")
    if truth is not None:
        truth = truth.drop_duplicates("order_id")
        truth.index = pd.Index(truth["order_id"].astype(str).to_numpy(dtype=object))
    t0 = time.perf_counter()
    frame, bounds = training_frame(
        orders, technicians=techs, units=units, feature_config=fcfg, config=tcfg, until=until
    )
    t["features"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluated = fit_risk_model(frame, fcfg, tcfg)
    t["fit_evaluated"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    final, _ = final_training_frame(frame, tcfg, fcfg.rework_window_days)
    shipped = fit_risk_model(final, fcfg, tcfg)
    t["fit_shipped"] = time.perf_counter() - t0

    # labels as the whole file knows them (a rework window still open at its end: unknown)
    labels = label_orders(orders[ORDERS.names], fcfg.label_config())
    done = orders["completed_at"]
    end = until + pd.Timedelta(days=args.days)
    mask = (completed_mask(orders) & (done >= until) & (done < end)).fillna(False)
    rows = np.flatnonzero(mask.to_numpy(dtype=bool))
    y = pd.DataFrame(
        {
            "rework": labels["rework"].to_numpy(dtype=float)[rows],
            "dissatisfied": labels["dissatisfied"].to_numpy(dtype=float)[rows],
        }
    )
    report: dict = {
        "orders": len(orders),
        "until": str(until),
        "scored_to": str(end),
        "scored": len(rows),
        "test_start_of_evaluated_heads": str(bounds["test_start"]),
    }
    for name, model in (("evaluated", evaluated), ("shipped", shipped)):
        t0 = time.perf_counter()
        history = model.history(orders, techs, units)
        scores = model.score_orders(history, orders.iloc[rows])
        t[f"score_{name}"] = time.perf_counter() - t0
        report[name] = _measure(scores.reset_index(drop=True), y, truth)
    report["ece_ratio_shipped_vs_evaluated"] = {
        h: round(report["shipped"][h]["ece"] / max(report["evaluated"][h]["ece"], 1e-9), 3)
        for h in ("rework", "dissatisfied")
    }
    report["seconds"] = {k: round(v, 2) for k, v in t.items()}
    emit(report, args.out)


if __name__ == "__main__":
    main()
