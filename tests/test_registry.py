"""The registered model round-trips; the gate promotes only what is not worse; CLI end to end."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from models.estimators import HEADS, RiskModel, TrainConfig, fit_risk_model, training_frame
from models.features import FeatureConfig
from models.registry import GateConfig, gate, input_example, save_model, score_contract_orders
from tests.synth_orders import make_orders

FAST = TrainConfig.from_dict(
    {"num_threads": 1, "heads": {h: {"num_boost_round": 60} for h in HEADS}}
)


@pytest.fixture(scope="module")
def data():
    return make_orders(3000, seed=21, days=400, n_tech=20, n_units=300)


@pytest.fixture(scope="module")
def model(data):
    orders, techs, units, _ = data
    frame, _ = training_frame(orders, technicians=techs, units=units, config=FAST)
    return fit_risk_model(frame, FeatureConfig(), FAST)


def test_gate_keeps_the_champion_when_worse_or_miscalibrated():
    cfg = GateConfig(auc_tolerance=0.01, max_ece=0.02)
    champ = {"rework_auc": 0.70, "dissatisfied_auc": 0.80}
    good = {
        "rework_auc": 0.695,
        "dissatisfied_auc": 0.81,
        "rework_ece": 0.01,
        "dissatisfied_ece": 0.01,
    }
    ok, why = gate(good, champ, cfg)
    assert ok, why
    worse = {**good, "rework_auc": 0.68}
    ok, why = gate(worse, champ, cfg)
    assert not ok and "rework: AUC" in why[0]
    uncalibrated = {**good, "dissatisfied_ece": 0.05}
    ok, why = gate(uncalibrated, None, cfg)
    assert not ok and "ECE" in why[0]
    assert gate(good, None, cfg) == (True, ["no champion yet"])


def test_pyfunc_round_trip_scores_json_orders_like_the_model(model, data, tmp_path):
    import mlflow.pyfunc

    orders, _, _, _ = data
    path = save_model(model, tmp_path / "m", input_example(orders))
    loaded = mlflow.pyfunc.load_model(str(path))
    window = orders[orders["reported_at"] >= orders["reported_at"].quantile(0.8)]
    js = input_example(window, n=len(window))  # strings, as JSON would deliver them
    got = loaded.predict(js)
    want = score_contract_orders(model, window)
    assert list(got.columns[:3]) == ["order_id", "rework_risk", "dissatisfaction_prob"]
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert got["rework_risk"].between(0, 1).all()
    mlmodel = (path / "MLmodel").read_text()
    assert "signature" in mlmodel and (path / "input_example.json").exists()
    assert "lightgbm==" in (path / "requirements.txt").read_text()


def test_register_sets_challenger_then_champion(model, data, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from models.registry import log_run, register

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # artifacts of a SQLite store land under ./mlruns
    path = save_model(model, tmp_path / "m", input_example(data[0]))
    good = {
        "rework_auc": 0.7,
        "dissatisfied_auc": 0.7,
        "rework_ece": 0.01,
        "dissatisfied_ece": 0.01,
    }
    run1 = log_run(path, {"p": 1}, good, "abc")
    d1 = register(run1, GateConfig(), name="t")
    assert d1["promoted"] and d1["version"] == 1
    run2 = log_run(path, {"p": 2}, {**good, "rework_auc": 0.5}, "abc")
    d2 = register(run2, GateConfig(), name="t")
    assert not d2["promoted"] and d2["champion"] == 1
    client = MlflowClient()
    assert int(client.get_model_version_by_alias("t", "champion").version) == 1
    assert int(client.get_model_version_by_alias("t", "challenger").version) == 2


@pytest.mark.slow
def test_cli_train_score_register(data, tmp_path, monkeypatch):
    from pipelines.cli import app

    orders, techs, units, truth = data
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    orders.to_parquet("orders.parquet")
    techs.to_parquet("technicians.parquet")
    units.to_parquet("units.parquet")
    truth.to_parquet("truth.parquet")
    (tmp_path / "params.yaml").write_text(
        "train:\n  heads:\n    rework: {num_boost_round: 60}\n"
        "    dissatisfied: {num_boost_round: 60}\n"
        "register:\n  max_ece: 1.0\n"
    )
    r = CliRunner().invoke(
        app,
        [
            "train",
            "--orders",
            "orders.parquet",
            "--technicians",
            "technicians.parquet",
            "--units",
            "units.parquet",
            "--truth",
            "truth.parquet",
            "--model-dir",
            "model",
        ],
    )
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["rework_auc"] <= metrics["rework_oracle_auc"] + 0.02
    # shipped heads learnt up to the end of the data; the evaluated ones are kept beside them
    info = json.loads((tmp_path / "model" / "training.json").read_text())
    assert info["trained_until"] == info["end"] and info["test_start"] < info["end"]
    assert info["rework_fit_rows"] > info["evaluated_heads"]["rework_fit_rows"]
    assert (tmp_path / "model" / "evaluation" / "holdout_model.pkl").exists()
    r = CliRunner().invoke(
        app,
        [
            "score",
            "--model-dir",
            "model",
            "--orders",
            "orders.parquet",
            "--from",
            "2024-12-01",
            "--to",
            "2025-01-01",
            "--out",
            "scores.csv",
            "--technicians",
            "technicians.parquet",
        ],
    )
    assert r.exit_code == 0, r.output
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert {"order_id", "rework_risk", "dissatisfaction_prob", "top_reasons"} <= set(scores)
    assert len(scores) > 10
    # the API's business language, "text (code)" joined by "; ", not raw feature names
    reasons = scores["top_reasons"].dropna()
    assert (
        len(reasons)
        and reasons.str.fullmatch(r"[^;]+ \([a-z0-9_]+\)(; [^;]+ \([a-z0-9_]+\))*").all()
    )
    assert not reasons.str.contains("=").any()
    # a short history (four months) trains on the labels known by its cut-off
    start = orders["reported_at"].min().tz_convert("Asia/Shanghai")
    until = (start + pd.Timedelta(days=120)).strftime("%Y-%m-%d")
    r = CliRunner().invoke(
        app,
        [
            "train",
            "--orders",
            "orders.parquet",
            "--technicians",
            "technicians.parquet",
            "--until",
            until,
            "--model-dir",
            "short",
            "--no-mlflow",
        ],
    )
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "short" / "training.json").read_text())
    assert info["rework_calib_rows"] > 0 and info["end"].startswith(until)
    r = CliRunner().invoke(app, ["register", "--model-dir", "model"])
    assert r.exit_code == 0 and "champion" in r.output, r.output
    r = CliRunner().invoke(
        app,
        [
            "score",
            "--model-dir",
            "nowhere",
            "--orders",
            "orders.parquet",
            "--from",
            "2024-12-01",
            "--out",
            "x.csv",
        ],
    )
    assert r.exit_code == 2 and "not a repairqc model directory" in r.output
    r = CliRunner().invoke(
        app,
        [
            "score",
            "--model-dir",
            "model",
            "--orders",
            "orders.parquet",
            "--from",
            "yesterday-ish",
            "--out",
            "x.csv",
        ],
    )
    assert r.exit_code == 2 and "not a timestamp" in r.output


@pytest.mark.slow
def test_dvc_repro_whole_pipeline_from_a_fresh_copy(tmp_path):
    """generate -> ... -> register on a small operation; metrics and plots are DVC's."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from tests.test_pipeline_e2e import _fresh_copy

    bin_dir = Path(sys.executable).parent
    repo = tmp_path / "repo"
    repo.mkdir()
    _fresh_copy(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["generate"].update({"units": 4000, "months": 18})
    params["train"]["num_threads"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the default: mlflow.db in the project

    def dvc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(bin_dir / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True
        )

    r = dvc("repro")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    metrics = json.loads((repo / "data/evaluation/metrics.json").read_text())
    for head in HEADS:
        assert 0.5 < metrics[f"{head}_auc"] <= metrics[f"{head}_oracle_auc"] + 0.02
    decision = json.loads((repo / "data/registry/registration.json").read_text())
    assert decision["version"] == 1 and (repo / "mlflow.db").exists()
    m = dvc("metrics", "show", "--json")
    assert m.returncode == 0 and "rework_auc" in m.stdout
    p = dvc("plots", "show", "-o", str(tmp_path / "plots"))
    assert p.returncode == 0 and (tmp_path / "plots" / "index.html").exists()
    assert "Calibration" in (tmp_path / "plots" / "index.html").read_text()


def test_model_for_period_never_scores_orders_the_heads_learnt_from(tmp_path):
    """Shipped heads from their cut-off on; before it the evaluated heads; else in-sample."""
    import pickle

    from models.registry import model_for_period, save_holdout

    def model(test_start: str) -> RiskModel:
        return RiskModel(FeatureConfig(), {}, [], {"split": {"test_start": test_start}})

    d = tmp_path / "m"
    (d / "artifacts").mkdir(parents=True)
    with open(d / "artifacts" / "risk_model.pkl", "wb") as fh:
        pickle.dump(model("2025-06-01 00:00:00+00:00"), fh)
    ts = pd.Timestamp
    assert model_for_period(d, ts("2025-06-01", tz="UTC"))[1] == "shipped"
    assert model_for_period(d, ts("2025-03-01", tz="UTC"))[1] == "in-sample"
    save_holdout(model("2025-02-01 00:00:00+00:00"), d)
    m, which = model_for_period(d, ts("2025-03-01", tz="UTC"))
    assert which == "holdout" and m.info["split"]["test_start"].startswith("2025-02-01")
    assert model_for_period(d, ts("2025-01-01", tz="UTC"))[1] == "in-sample"
    assert model_for_period(d, ts("2025-07-01", tz="UTC"))[1] == "shipped"
