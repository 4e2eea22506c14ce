"""DVC stage: evaluate the risk model on the test slice against baselines (and the oracle).

Writes into the output directory:

* ``metrics.json`` — per head: AUC, PR-AUC, Brier, ECE, lift/recall at 5/10/20 % for the model,
  the quality team's rule and the logistic regression; on generated data the oracle's AUC and
  the ratio to it, the oracle's lift at 5/10/20 % and the model's lift as a share of it
  (DVC metrics)
* ``plots/<head>_roc.csv`` (+ ``_roc_rule``, ``_roc_logreg``), ``<head>_calibration.csv``,
  ``<head>_lift.csv`` (DVC plots)
* ``slices.csv`` — per community and category: AUC, base rate, mean score, ECE
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from models import metrics as M
from models.baselines import RuleConfig, fit_logistic_baselines, rule_score
from models.estimators import HEADS, RiskModel
from models.features import feature_columns
from pipelines.params import section

log = logging.getLogger(__name__)

#: Oracle columns of the generator's ``ground_truth.parquet`` per head, first present wins.
#: Dissatisfaction is only observed on answered follow-ups, so the fair oracle among labelled
#: orders is P(dissatisfied | labelled) when the generator provides it.
ORACLE = {
    "rework": ("p_rework",),
    "dissatisfied": ("p_dissatisfied_if_labelled", "p_dissatisfied"),
}


def scored_test_frame(
    model: RiskModel,
    frame: pd.DataFrame,
    truth: pd.DataFrame | None = None,
    lr_C: float = 1.0,
    rule: RuleConfig | None = None,
    lr_max_rows: int | None = None,
) -> pd.DataFrame:
    """The test slice with labels, model scores, baseline scores and (if given) oracle scores.

    ``lr_C``, ``rule``, ``lr_max_rows``: the baselines' settings (:func:`baseline_options`).
    """
    feats = feature_columns(frame)
    test = frame[frame["split"] == "test"].copy()
    scores = model.predict(test)
    for head, col in HEADS.items():
        test[f"{head}__model"] = scores[col].to_numpy()
    test["rule"] = rule_score(test, rule)
    for head, lr in fit_logistic_baselines(
        frame, feats, list(HEADS), C=lr_C, max_rows=lr_max_rows
    ).items():
        test[f"{head}__logreg"] = lr.predict_proba(test[feats])
    if truth is not None:
        t = truth.drop_duplicates("order_id")
        t.index = pd.Index(t["order_id"].astype(str).to_numpy(dtype=object))
        for head, cols in ORACLE.items():
            col = next((c for c in cols if c in t), None)
            if col is not None:
                ids = pd.Index(test["order_id"].astype(str).to_numpy(dtype=object))
                test[f"{head}__oracle"] = t[col].reindex(ids).to_numpy()
    return test


def evaluate_scored(
    test: pd.DataFrame,
) -> tuple[dict[str, Any], dict[str, pd.DataFrame], pd.DataFrame]:
    """Metrics (flat ``<head>_<metric>`` keys), plot tables and slice table of a scored test set."""
    metrics: dict[str, Any] = {}
    plots: dict[str, pd.DataFrame] = {}
    slices = []
    for head in HEADS:
        y = test[head]
        model = test[f"{head}__model"]
        if y.dropna().nunique() < 2:
            log.warning(
                "%s: the test slice has %d known labels of one class or none (censored at the "
                "cut-off?): its metrics are NaN",
                head,
                int(y.notna().sum()),
            )
        for k, v in M.summary(y, model).items():
            metrics[f"{head}_{k}"] = v
        metrics[f"{head}_rule_auc"] = M.auc(y, test["rule"])
        metrics[f"{head}_rule_lift_top10"] = M.lift_at(y, test["rule"] + 1e-9 * model, 0.10)
        metrics[f"{head}_logreg_auc"] = M.auc(y, test[f"{head}__logreg"])
        metrics[f"{head}_logreg_ece"] = M.ece(y, test[f"{head}__logreg"])
        if f"{head}__oracle" in test and test[f"{head}__oracle"].notna().any():
            o = test[f"{head}__oracle"]
            metrics[f"{head}_oracle_auc"] = M.auc(y, o)
            metrics[f"{head}_oracle_ece"] = M.ece(y, o)
            metrics[f"{head}_auc_ratio_oracle"] = (
                metrics[f"{head}_auc"] / metrics[f"{head}_oracle_auc"]
            )
            # the ground truth ranked the same way: what lift is attainable on this data at
            # all (a low-signal data set caps every model's lift, whatever its AUC ratio)
            for f in M.TOP_FRACTIONS:
                pct = int(round(f * 100))
                ol = M.lift_at(y, o, f)
                metrics[f"{head}_oracle_lift_top{pct}"] = ol
                metrics[f"{head}_lift_top{pct}_share_oracle"] = (
                    metrics[f"{head}_lift_top{pct}"] / ol if ol > 0 else float("nan")
                )
        plots[f"{head}_roc"] = M.roc_points(y, model)
        plots[f"{head}_roc_rule"] = M.roc_points(y, test["rule"])
        plots[f"{head}_roc_logreg"] = M.roc_points(y, test[f"{head}__logreg"])
        plots[f"{head}_calibration"] = M.calibration_points(y, model)
        plots[f"{head}_lift"] = M.lift_points(y, model)
        for by in ("community_id", "category"):
            s = M.slice_metrics(test, by, head, f"{head}__model")
            if len(s):
                slices.append(s.rename(columns={by: "value"}).assign(head=head, slice=by))
    table = pd.concat(slices, ignore_index=True) if slices else pd.DataFrame()
    return metrics, plots, table


def write_evaluation(
    metrics: dict[str, Any], plots: dict[str, pd.DataFrame], slices: pd.DataFrame, out_dir: Path
) -> None:
    """Write metrics.json, plots/*.csv and slices.csv."""
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    (out_dir / "metrics.json").write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
    (out_dir / "plots").mkdir(exist_ok=True)
    for name, df in plots.items():
        df.to_csv(out_dir / "plots" / f"{name}.csv", index=False)
    slices.to_csv(out_dir / "slices.csv", index=False)


def baseline_options(params_path: str | Path = "params.yaml") -> dict[str, Any]:
    """The baselines' settings of ``params.yaml: evaluate`` as :func:`scored_test_frame` takes them.

    One reading for the ``train`` and ``evaluate`` stages and the benchmarks, so each compares
    with the same baselines.
    """
    block = section(params_path, "evaluate")
    n = block.get("logreg_max_rows")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"evaluate.logreg_max_rows must be a positive integer or null, got {n!r}")
    return {
        "lr_C": float(block.get("logreg_C", 1.0)),
        "rule": RuleConfig(**(block.get("rule") or {})),
        "lr_max_rows": n,
    }


def read_truth(path: Path | None) -> pd.DataFrame | None:
    """The generator's oracle probabilities, if the file is there (real data has none)."""
    if path is None or not Path(path).exists():
        return None
    return pd.read_parquet(path)


def evaluate_files(
    features: Path,
    model_dir: Path,
    out_dir: Path,
    truth: Path | None = None,
    params_path: str | Path = "params.yaml",
) -> dict[str, Any]:
    """DVC ``evaluate`` stage."""
    from models.registry import model_for_period

    frame = pd.read_parquet(features)
    first = frame.loc[frame["split"] == "test", "completed_at"].min()
    model, which = model_for_period(model_dir, first)
    if which == "in-sample":
        raise ValueError(
            f"{model_dir}: its heads learnt labels up to {model.info['split']['test_start']}, "
            f"after the test slice's start {first}, and it keeps no evaluated heads from before "
            "it: the metrics would be in-sample. Evaluate on a later test slice, or train with "
            "train.final_fit: false"
        )
    log.info("evaluating the %s heads of %s", which, model_dir)
    test = scored_test_frame(model, frame, read_truth(truth), **baseline_options(params_path))
    metrics, plots, slices = evaluate_scored(test)
    write_evaluation(metrics, plots, slices, out_dir)
    for head in HEADS:
        log.info(
            "%s: AUC %.4f (rule %.4f, logreg %.4f, oracle %s), ECE %.4f, lift@10%% %.2f",
            head,
            metrics[f"{head}_auc"],
            metrics[f"{head}_rule_auc"],
            metrics[f"{head}_logreg_auc"],
            f"{metrics.get(f'{head}_oracle_auc', float('nan')):.4f}",
            metrics[f"{head}_ece"],
            metrics[f"{head}_lift_top10"],
        )
    return metrics
