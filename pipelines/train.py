"""DVC stage / CLI: fit both heads, save a self-contained MLflow model directory, log the run.

``model_dir`` receives the MLflow pyfunc model (``MLmodel``, code, pickled heads) plus
``metrics.json`` (test-slice evaluation) and ``training.json`` (split boundaries, rows,
best iterations, MLflow run id).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from models.estimators import final_training_frame, fit_risk_model
from pipelines.evaluate import (
    baseline_options,
    evaluate_scored,
    read_truth,
    scored_test_frame,
    write_evaluation,
)
from pipelines.features import (
    feature_config,
    load_orders,
    load_text_scorer,
    make_training_frame,
    train_config,
)

log = logging.getLogger(__name__)


def train_files(
    orders: Path,
    model_dir: Path,
    technicians: Path | None = None,
    units: Path | None = None,
    until: pd.Timestamp | None = None,
    features: Path | None = None,
    truth: Path | None = None,
    params_path: str | Path = "params.yaml",
    log_mlflow: bool = True,
    sentiment_model: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train on what was known before ``until`` and write the model directory.

    ``features`` reuses the ``features`` stage's frame (same params and sentiment model)
    instead of rebuilding it. ``sentiment_model`` is a ``repairqc sentiment`` model directory
    used for the text features and stored inside the risk model.
    """
    from models.registry import (
        frame_digest,
        input_example,
        labels_cutoff,
        log_run,
        save_holdout,
        save_model,
    )

    fcfg, tcfg = feature_config(params_path), train_config(params_path)
    steps = ["read", "features", "fit", "evaluate"]
    steps += (["final fit"] if tcfg.final_fit else []) + ["save"] + (["log"] if log_mlflow else [])
    bar = tqdm(total=len(steps), desc="train", unit="step", disable=not progress)
    t0 = time.perf_counter()
    bar.set_postfix_str("reading and validating")
    typed, techs, unit_tab = load_orders(orders, technicians, units)
    scorer = load_text_scorer(sentiment_model)
    bar.update()
    bar.set_postfix_str("as-of features")
    if features is not None and until is None:
        frame = pd.read_parquet(features)
        bounds: dict[str, Any] = dict(frame.attrs.get("split") or {})
    else:
        frame, bounds = make_training_frame(typed, techs, unit_tab, params_path, until, scorer)
    t1 = time.perf_counter()
    bar.update()
    bar.set_postfix_str("fitting both heads")
    model = fit_risk_model(frame, fcfg, tcfg, text_scorer=scorer)
    t2 = time.perf_counter()
    bar.update()
    bar.set_postfix_str("evaluating on the test slice")
    test = scored_test_frame(model, frame, read_truth(truth), **baseline_options(params_path))
    metrics, plots, slices = evaluate_scored(test)
    del test  # the scored test slice is not needed any more (memory of the final fit)
    bar.update()
    shipped = model
    tf = time.perf_counter()
    if tcfg.final_fit:
        # the evaluated heads stop learning at the test start; the shipped ones learn up to
        # the end of the data (same procedure, so the evaluation's metrics describe them)
        bar.set_postfix_str("fitting the shipped heads up to the end of the data")
        final, _ = final_training_frame(frame, tcfg, fcfg.rework_window_days)
        shipped = fit_risk_model(final, fcfg, tcfg, text_scorer=scorer)
        del final
        bar.update()
    t3 = time.perf_counter()
    bar.set_postfix_str("saving the model")
    save_model(shipped, model_dir, input_example(typed))
    bar.update()
    write_evaluation(metrics, plots, slices, model_dir / "evaluation")
    if shipped is not model:
        save_holdout(model, model_dir)
    (model_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    cutoff = labels_cutoff(shipped)
    info = {
        **shipped.info,
        **{k: str(v) for k, v in bounds.items()},
        "trained_until": None if cutoff is None else str(cutoff),
        "orders": len(typed),
        "features_seconds": round(t1 - t0, 2),
        "fit_seconds": round(t2 - t1, 2),
    }
    if shipped is not model:
        info["evaluated_heads"] = model.info
        info["final_fit_seconds"] = round(t3 - tf, 2)
    if log_mlflow:
        bar.set_postfix_str("logging to MLflow")
        params = {
            **{f"features.{k}": v for k, v in asdict(fcfg).items() if k != "cues"},
            **{f"train.{k}": v for k, v in asdict(tcfg).items() if k != "heads"},
            **{
                f"train.{h}.{k}": v
                for h, hc in tcfg.heads.items()
                for k, v in {
                    **hc.lgbm,
                    "calibration": hc.calibration,
                    "refit": hc.refit,
                }.items()
            },
            "until": str(until),
            "sentiment_model": str(sentiment_model),
        }
        info["run_id"] = log_run(
            model_dir,
            params,
            {k: v for k, v in metrics.items() if isinstance(v, int | float)},
            frame_digest(frame),
            plots_dir=model_dir / "evaluation" / "plots",
        )
    bar.update(bar.total - bar.n)
    bar.close()
    (model_dir / "training.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log.info("trained in %.1fs: %s", time.perf_counter() - t0, info)
    return {"metrics": metrics, "info": info}
