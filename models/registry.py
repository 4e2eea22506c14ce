"""MLflow: the pyfunc model, run logging, registration, aliases and the promotion gate.

The only module that imports mlflow (lazily, inside functions: importing it costs seconds).

The pyfunc model's input is **contract orders** (a DataFrame with the order columns, typed or
as JSON strings): the rows are both the history and the orders to score. Every completed row
is scored as of its own completion, using only what the other rows tell about the time before
it (the same :mod:`models.features` code as training); an optional boolean column ``_score``
restricts which rows are scored. Why orders and not precomputed features: a caller outside
Python (``mlflow models serve``, another system) has orders, not our feature vector; Python
callers with features use :meth:`models.estimators.RiskModel.predict` directly.
The output has ``order_id``, ``rework_risk``, ``dissatisfaction_prob`` and ``top_reasons``.

Default tracking store: ``sqlite:///mlflow.db`` (the project root when run from there, as DVC
and the Makefile do); ``MLFLOW_TRACKING_URI`` wins.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from models.estimators import RiskModel

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "repairqc-risk"
CHALLENGER = "challenger"
CHAMPION = "champion"
#: Distributions the pyfunc model needs at inference, pinned to the versions installed here.
#: Passed explicitly because inferring them costs ~4 s per ``log_model``.
RUNTIME_PACKAGES = ("mlflow", "lightgbm", "scikit-learn", "pandas", "numpy", "chinesecalendar")
_ARTIFACT = "risk_model"


#: Default store: ``mlflow.db`` in the working directory, which is the project root for DVC
#: stages and the Makefile (and the store's ``mlruns/`` artifacts land beside it).
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def pip_requirements() -> list[str]:
    """Pinned requirements of the pyfunc model (only what inference imports)."""
    out = []
    for dist in RUNTIME_PACKAGES:
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(dist)
    return out


def _pyfunc_class():
    """Define the PythonModel subclass lazily so importing this module stays cheap."""
    import mlflow.pyfunc

    class RiskPyfunc(mlflow.pyfunc.PythonModel):
        """Both heads + feature config; scores contract orders as of their completion."""

        def load_context(self, context) -> None:  # noqa: D102 - mlflow hook
            with open(context.artifacts[_ARTIFACT], "rb") as fh:
                self.model: RiskModel = pickle.load(fh)

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # noqa: D102
            return score_contract_orders(self.model, model_input)

    return RiskPyfunc


def score_contract_orders(
    model: RiskModel,
    orders: pd.DataFrame,
    technicians: pd.DataFrame | None = None,
    units: pd.DataFrame | None = None,
    reasons: int = 3,
) -> pd.DataFrame:
    """Score the completed rows of ``orders`` (or those with ``_score`` true) as of completion."""
    import numpy as np

    from models.features import coerce_orders, completed_mask

    typed = coerce_orders(orders.reset_index(drop=True))
    mask = completed_mask(typed).to_numpy(dtype=bool)
    if "_score" in orders:
        mask &= orders["_score"].fillna(False).astype(bool).to_numpy()
    history = model.history(typed, technicians, units)
    out = model.score_orders(history, typed[mask], reasons=reasons)
    if not np.any(mask):
        out = pd.DataFrame(columns=["order_id", "rework_risk", "dissatisfaction_prob"])
    return out.reset_index(drop=True)


def input_example(orders: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """A JSON-safe slice of contract orders (timestamps as ISO strings) for the model's docs."""
    from models.schemas import ORDERS

    ex = orders[ORDERS.names].tail(n).copy()
    for c in ORDERS.of_type("timestamp"):
        ex[c] = ex[c].dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    return ex.astype(object).where(ex.notna(), None).reset_index(drop=True)


def _signature():
    """Schema: every contract column, optional ones not required, any JSON type accepted."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    from models.schemas import ORDERS

    inputs = Schema([ColSpec(AnyType(), c.name, required=c.required) for c in ORDERS.columns])
    outputs = Schema(
        [
            ColSpec("string", "order_id"),
            ColSpec("double", "rework_risk"),
            ColSpec("double", "dissatisfaction_prob"),
            ColSpec("string", "top_reasons", required=False),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def save_model(model: RiskModel, path: Path, example: pd.DataFrame | None = None) -> Path:
    """Write a self-contained MLflow pyfunc model directory (code and pickled heads inside)."""
    import shutil
    import tempfile

    import mlflow.pyfunc

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    with tempfile.TemporaryDirectory() as tmp:
        pkl = Path(tmp) / "risk_model.pkl"
        with open(pkl, "wb") as fh:
            pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=_pyfunc_class()(),
            artifacts={_ARTIFACT: str(pkl)},
            code_paths=[str(PROJECT_ROOT / "models")],
            pip_requirements=pip_requirements(),
            signature=_signature(),
            input_example=example,
        )
    return path


def load_model(uri: str | Path):
    """Load a pyfunc model from a directory or a ``models:/name@alias`` URI."""
    import mlflow.pyfunc

    if isinstance(uri, Path) or not str(uri).startswith(("models:", "runs:")):
        return mlflow.pyfunc.load_model(str(uri))
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.pyfunc.load_model(str(uri))


def load_risk_model(model_dir: Path) -> RiskModel:
    """The :class:`RiskModel` inside a saved model directory (no mlflow import needed)."""
    pkl = Path(model_dir) / "artifacts" / "risk_model.pkl"
    if not pkl.exists():
        raise FileNotFoundError(f"{model_dir}: not a repairqc model directory (no {pkl.name})")
    return _unpickle(pkl)


def _unpickle(path: Path) -> RiskModel:
    with open(path, "rb") as fh:
        return pickle.load(fh)


#: The evaluated heads, fitted before the test slice, kept beside the shipped ones when those
#: were fitted again up to the end of the data (``train.final_fit``): the scores of orders
#: that the shipped heads learnt from are in-sample, the evaluated heads' are not.
HOLDOUT = Path("evaluation") / "holdout_model.pkl"


def save_holdout(model: RiskModel, model_dir: Path) -> Path:
    """Pickle the evaluated heads into ``model_dir`` (:data:`HOLDOUT`)."""
    path = Path(model_dir) / HOLDOUT
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def labels_cutoff(model: RiskModel) -> pd.Timestamp | None:
    """The moment the model's training labels were taken (None: not recorded).

    An order completed from then on is out of sample: no label the heads learnt from could
    describe it.
    """
    cut = (model.info.get("split") or {}).get("test_start")
    return None if cut is None else pd.Timestamp(cut)


def model_for_period(model_dir: Path, first: pd.Timestamp) -> tuple[RiskModel, str]:
    """The heads whose scores of orders completed from ``first`` on are out of sample.

    The shipped heads when ``first`` is at or after their labels' cut-off, else the evaluated
    heads (:data:`HOLDOUT`) when those are out of sample there: scoring last quarter's orders
    for a review, or an evaluation on the training data's own test slice, gets the scores a
    model of that time would have given, not hindsight. Returns the model and which it is
    (``shipped``, ``holdout`` or ``in-sample``: neither is out of sample; the shipped heads).
    """
    shipped = load_risk_model(model_dir)
    cut = labels_cutoff(shipped)
    if cut is None or first >= cut:
        return shipped, "shipped"
    path = Path(model_dir) / HOLDOUT
    if path.exists():
        holdout = _unpickle(path)
        hcut = labels_cutoff(holdout)
        if hcut is not None and first >= hcut:
            return holdout, "holdout"
    return shipped, "in-sample"


def frame_digest(frame: pd.DataFrame) -> str:
    """Content hash of a data frame (the dataset digest logged with each run)."""
    h = hashlib.sha256(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return h.hexdigest()[:16]


def log_run(
    model_dir: Path,
    params: dict[str, Any],
    metrics: dict[str, float],
    digest: str,
    plots_dir: Path | None = None,
    experiment: str = "repairqc",
) -> str:
    """Log one training run (params, metrics, plots, digest, the model directory); its id."""
    import math

    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if not math.isnan(float(v))})
        mlflow.set_tag("dataset_digest", digest)
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
        if plots_dir is not None and Path(plots_dir).exists():
            mlflow.log_artifacts(str(plots_dir), artifact_path="plots")
        return run.info.run_id


@dataclass
class GateConfig:
    """Promotion gate (``params.yaml: register``).

    Attributes
    ----------
    auc_tolerance
        The challenger's test AUC (each head) may be at most this much below the champion's.
    max_ece
        The challenger's expected calibration error (each head) must be at or below this.
    """

    auc_tolerance: float = 0.005
    max_ece: float = 0.02


def gate(
    challenger: dict[str, float], champion: dict[str, float] | None, config: GateConfig
) -> tuple[bool, list[str]]:
    """Whether the challenger may replace the champion, and why (or why not)."""
    reasons: list[str] = []
    ok = True
    for head in ("rework", "dissatisfied"):
        e = challenger.get(f"{head}_ece", float("nan"))
        if not e <= config.max_ece:
            ok = False
            reasons.append(f"{head}: ECE {e:.4f} above the bound {config.max_ece}")
        if champion is None:
            continue
        a_new = challenger.get(f"{head}_auc", float("nan"))
        a_old = champion.get(f"{head}_auc", float("nan"))
        if not a_new >= a_old - config.auc_tolerance:
            ok = False
            reasons.append(
                f"{head}: AUC {a_new:.4f} worse than the champion's {a_old:.4f} "
                f"beyond the tolerance {config.auc_tolerance}"
            )
    if ok:
        reasons.append("no champion yet" if champion is None else "passes the gate")
    return ok, reasons


def register(run_id: str, config: GateConfig, name: str = MODEL_NAME) -> dict[str, Any]:
    """Register the run's model, alias it ``challenger``, promote to ``champion`` if it passes.

    Returns the new version, whether it was promoted, the gate's reasons and the champion.
    """
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    mv = mlflow.register_model(f"runs:/{run_id}/model", name)
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    new_metrics = client.get_run(run_id).data.metrics
    try:
        champ = client.get_model_version_by_alias(name, CHAMPION)
        champ_metrics = client.get_run(champ.run_id).data.metrics if champ.run_id else {}
    except mlflow.exceptions.MlflowException:
        champ, champ_metrics = None, None
    ok, reasons = gate(new_metrics, champ_metrics, config)
    if ok:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
    return {
        "name": name,
        "version": int(mv.version),
        "promoted": ok,
        "reasons": reasons,
        "champion": int(mv.version) if ok else (int(champ.version) if champ else None),
    }
