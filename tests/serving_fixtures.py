"""Shared fixtures of the serving tests: a tiny trained model directory and JSON payloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from models.estimators import TrainConfig, fit_risk_model, training_frame
from models.features import FeatureConfig
from models.schemas import ORDERS, TECHNICIANS, UNITS
from tests.synth_orders import make_orders

SECRET = "unit-test-sampling-secret-0123456789abcdef"
#: The shipped policy's version: stored with every decision (read, so a bump needs no test edit).
POLICY_VERSION = str(
    yaml.safe_load((Path(__file__).parents[1] / "serving" / "policy.yaml").read_text("utf-8"))[
        "version"
    ]
)
#: As shipped (``params.yaml``): the dissatisfaction head reads the description with a model of
#: its own, which the service must rebuild into every history it keeps.
FAST = TrainConfig.from_dict(
    {
        "heads": {
            "rework": {"num_boost_round": 40},
            "dissatisfied": {"num_boost_round": 40, "text_model": {"min_df": 2, "folds": 3}},
        },
        "num_threads": 1,
    }
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


def auth(key: str) -> dict[str, str]:
    """The request header of an API key."""
    return {"Authorization": f"Bearer {key}"}


def serve_copy(root: Path, model_dir: Path, **overrides: Any) -> tuple[Any, str]:
    """Settings of a service on a fresh SQLite store in ``root`` serving a copy of ``model_dir``.

    A copy, so a test may break the served model (reload tests) without touching the shared
    trained one. ``overrides`` replace the defaults (no periodic refresh, 200 reference orders);
    a ``database_url`` override (a fresh PostgreSQL database, see ``tests/conftest.py``) replaces
    the SQLite file. Returns the settings and the store URL.
    """
    import shutil

    from serving.config import Settings

    served = root / "served"
    shutil.copytree(model_dir, served)
    url = overrides.pop("database_url", None) or f"sqlite:///{root / 'audit.db'}"
    options: dict[str, Any] = {"history_refresh_seconds": 0, "reference_orders": 200}
    settings = Settings(
        sampling_secret=SECRET, database_url=url, model_dir=served, **(options | overrides)
    )
    return settings, url


def served_settings(
    root: Path, seed: int = 11, database_url: str | None = None
) -> tuple[Any, str, pd.DataFrame]:
    """A service on a fresh SQLite store in ``root`` (or ``database_url``) serving a tiny
    trained model.

    Returns its settings, the store URL and the model's completed orders by completion time
    (what the tests score through the API).
    """
    model_dir, orders = train_model_dir(root / "model", seed=seed)
    done = orders[orders["status"] == "completed"].sort_values("completed_at")
    settings, url = serve_copy(root, model_dir, database_url=database_url)
    return settings, url, done


def operation_store(path: Path, database_url: str | None = None) -> tuple[str, Any, pd.DataFrame]:
    """A migrated SQLite store in ``path`` (or ``database_url``) holding a synthetic operation:
    completed orders (rework links recorded on arrival), technicians and units. Returns URL,
    store, orders."""
    from serving.store import tables as T
    from serving.store.db import Store, content_hash, frame_rows, make_engine, upgrade

    url = database_url or f"sqlite:///{path / 'store.db'}"
    engine = make_engine(url)
    upgrade(engine)
    store = Store(engine)
    orders, techs, units, _ = make_orders(600, seed=3, days=120, n_tech=8, n_units=80)
    done = orders[orders["status"] == "completed"].reset_index(drop=True)
    rows = frame_rows(done, ORDERS)
    store.upsert_orders(rows, [content_hash(r) for r in rows])
    store.upsert_side(T.technicians, TECHNICIANS, frame_rows(techs, TECHNICIANS))
    store.upsert_side(T.units, UNITS, frame_rows(units, UNITS))
    return url, store, done
