"""Shared fixtures of the serving tests: a tiny trained model directory and JSON payloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from models.estimators import HEADS, TrainConfig, fit_risk_model, training_frame
from models.features import FeatureConfig
from models.schemas import ORDERS
from tests.synth_orders import make_orders

SECRET = "unit-test-sampling-secret-0123456789abcdef"
#: The shipped policy's version: stored with every decision (read, so a bump needs no test edit).
POLICY_VERSION = str(
    yaml.safe_load((Path(__file__).parents[1] / "serving" / "policy.yaml").read_text("utf-8"))[
        "version"
    ]
)
FAST = TrainConfig.from_dict(
    {"heads": {h: {"num_boost_round": 40} for h in HEADS}, "num_threads": 1}
)


def train_model_dir(path: Path, seed: int = 11) -> tuple[Path, pd.DataFrame]:
    """Train both heads on tiny synthetic orders and save them as a model directory."""
    from models.registry import save_model

    orders, techs, units, _ = make_orders(4000, seed=seed, days=400, n_tech=20, n_units=300)
    frame, _ = training_frame(orders, technicians=techs, units=units, config=FAST)
    model = fit_risk_model(frame, FeatureConfig(), FAST)
    save_model(model, path)
    return path, orders


def payload(orders: pd.DataFrame) -> list[dict[str, Any]]:
    """Typed contract orders as API JSON (timestamps as local strings, NA as null)."""
    out = orders[ORDERS.names].copy()
    for c in ORDERS.of_type("timestamp"):
        out[c] = out[c].dt.strftime("%Y-%m-%d %H:%M:%S")
    out = out.astype(object).where(out.notna(), None)
    return out.to_dict("records")
