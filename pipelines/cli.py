"""The ``repairqc`` command line: thin wrappers around the pipeline stages.

Imports of heavy libraries (lightgbm, mlflow, snownlp) happen inside the commands, so that
``repairqc --help`` answers instantly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from pipelines.sentiment import app as sentiment_app

app = typer.Typer(
    name="repairqc",
    help="repairqc — quality prediction and scoring for repair work orders (物业维修服务质量监控).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Configure logging once for every command."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


#: The optional contract tables, spelled once for every command that reads them.
TechniciansFile = Annotated[
    Path | None, typer.Option("--technicians", help="Technicians file (optional).")
]
UnitsFile = Annotated[Path | None, typer.Option("--units", help="Units file (optional).")]
CsvEncoding = Annotated[
    str | None,
    typer.Option("--encoding", help="Force a CSV encoding (default: UTF-8/BOM, then GBK)."),
]


def _fail(message: str) -> None:
    """Print a clear error and exit non-zero (no traceback for a user mistake)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=2)


@app.command("generate")
def generate_cmd(
    out: Annotated[Path, typer.Option("--out", help="Output directory for the generated files.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 42,
    units: Annotated[
        int, typer.Option("--units", min=1, help="Number of homes; ~32000 gives ~100k orders/2y.")
    ] = 32_000,
    months: Annotated[int, typer.Option("--months", min=1, help="Months of history.")] = 24,
    start: Annotated[
        str, typer.Option("--start", help="First day of the history (YYYY-MM-DD).")
    ] = "2024-01-01",
) -> None:
    """Generate the embedded default data set: contract CSVs plus ground_truth.parquet."""
    from pipelines.generate import generate

    summary = generate(out, seed=seed, units=units, months=months, start=start)
    typer.echo(
        f"{summary['orders']} orders, {summary['technicians']} technicians, "
        f"{summary['locations']} units in {summary['seconds']:.1f}s -> {out}/"
    )


@app.command("validate")
def validate_cmd(
    orders: Annotated[Path, typer.Option("--orders", help="Orders file (CSV or Parquet).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    technicians: TechniciansFile = None,
    units: UnitsFile = None,
    encoding: CsvEncoding = None,
) -> None:
    """Validate contract files: typed orders.parquet plus quarantine.csv with reasons."""
    from models.validation import ContractError
    from pipelines.io import UnreadableFileError
    from pipelines.validate import validate_files

    try:
        metrics = validate_files(orders, out, technicians, units, encoding)
    except (ContractError, UnreadableFileError) as e:
        _fail(str(e))
    for table, st in metrics.items():
        if table == "warnings":
            continue
        typer.echo(
            f"{table}: {st['input_rows']} rows -> {st['valid_rows']} valid, "
            f"{st['quarantined_rows']} quarantined, "
            f"{st['duplicates_collapsed']} duplicates collapsed"
        )
    typer.echo(f"outputs in {out}/ (orders.parquet, quarantine.csv, validation_metrics.json)")


@app.command("label")
def label_cmd(
    orders: Annotated[Path, typer.Option("--orders", help="Validated orders.parquet.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    sentiment_model: Annotated[
        Path | None,
        typer.Option(
            "--sentiment-model",
            help="Sentiment model dir: label comment-only orders from their comment's sentiment.",
        ),
    ] = None,
    params: Annotated[
        Path, typer.Option("--params", help="params.yaml with a label: block.")
    ] = Path("params.yaml"),
    overrides: Annotated[
        Path | None,
        typer.Option(
            "--overrides",
            help="label_overrides.csv (upheld appeals, from `repairqc export`): applied after "
            "the labels when the file exists; a missing file applies none (said in the metrics).",
        ),
    ] = None,
) -> None:
    """Attach rework and dissatisfaction labels (censored orders stay unlabelled)."""
    from pipelines.label import label_file

    try:
        stats = label_file(
            orders, out, params, sentiment_model=sentiment_model, overrides=overrides
        )
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    typer.echo(
        f"rework: {stats['rework_labelled']} labelled ({stats['rework_rate']:.1%} positive), "
        f"{stats['rework_censored']} censored; dissatisfied: {stats['dissatisfied_labelled']} "
        f"labelled ({stats['dissatisfied_rate']:.1%}), "
        f"{stats['dissatisfied_from_comment']} from comments; overridden: "
        f"{stats['rework_overridden']} rework, {stats['dissatisfied_overridden']} dissatisfied"
        f" ({stats['overrides_unmatched']} overrides matched no completed order)"
    )


_PARAMS = typer.Option("--params", help="params.yaml with the features/train/... blocks.")
_SENTIMENT = typer.Option(
    "--sentiment-model",
    help="A `repairqc sentiment` model directory for the text features (default: a lexicon).",
)


@app.command("features")
def features_cmd(
    orders: Annotated[Path, typer.Option("--orders", help="Validated or labelled orders.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (features.parquet).")],
    technicians: TechniciansFile = None,
    units: UnitsFile = None,
    params: Annotated[Path, _PARAMS] = Path("params.yaml"),
    sentiment_model: Annotated[Path | None, _SENTIMENT] = None,
) -> None:
    """Build as-of features, the time split and the as-of labels of every completed order."""
    from pipelines.features import build_feature_file

    try:
        build_feature_file(orders, out, technicians, units, params, sentiment_model)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))


@app.command("train")
def train_cmd(
    orders: Annotated[Path, typer.Option("--orders", help="Orders file (CSV or Parquet).")],
    model_dir: Annotated[
        Path, typer.Option("--model-dir", help="Where to write the MLflow model directory.")
    ],
    technicians: TechniciansFile = None,
    units: UnitsFile = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Train on what was known before this time (default: all)."),
    ] = None,
    features: Annotated[
        Path | None,
        typer.Option("--features", help="Reuse a features.parquet from `repairqc features`."),
    ] = None,
    truth: Annotated[
        Path | None,
        typer.Option("--truth", help="ground_truth.parquet of generated data (oracle AUC)."),
    ] = None,
    params: Annotated[Path, _PARAMS] = Path("params.yaml"),
    no_mlflow: Annotated[
        bool, typer.Option("--no-mlflow", help="Do not log the run to MLflow.")
    ] = False,
    sentiment_model: Annotated[Path | None, _SENTIMENT] = None,
) -> None:
    """Train both heads (censored labels, time split), save the model, log the run."""
    from pipelines.features import parse_time
    from pipelines.train import train_files

    try:
        res = train_files(
            orders,
            model_dir,
            technicians,
            units,
            parse_time(until),
            features,
            truth,
            params,
            log_mlflow=not no_mlflow,
            sentiment_model=sentiment_model,
        )
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    m = res["metrics"]
    for head in ("rework", "dissatisfied"):
        typer.echo(
            f"{head}: AUC {m[f'{head}_auc']:.4f}  ECE {m[f'{head}_ece']:.4f}  "
            f"lift@10% {m[f'{head}_lift_top10']:.2f}"
        )
    typer.echo(f"model: {model_dir}  run: {res['info'].get('run_id', '-')}")


@app.command("evaluate")
def evaluate_cmd(
    features: Annotated[Path, typer.Option("--features", help="features.parquet (with split).")],
    model_dir: Annotated[Path, typer.Option("--model-dir", help="Trained model directory.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (metrics, plots).")],
    truth: Annotated[
        Path | None,
        typer.Option("--truth", help="ground_truth.parquet of generated data (oracle AUC)."),
    ] = None,
    params: Annotated[Path, _PARAMS] = Path("params.yaml"),
) -> None:
    """Evaluate on the test slice against the rule, a logistic regression and the oracle."""
    from pipelines.evaluate import evaluate_files

    try:
        evaluate_files(features, model_dir, out, truth, params)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))


@app.command("score")
def score_cmd(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="Trained model directory.")],
    orders: Annotated[
        Path, typer.Option("--orders", help="Orders file: the orders to score and their history.")
    ],
    start: Annotated[
        str, typer.Option("--from", help="Score orders completed at or after this time.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output CSV.")],
    end: Annotated[
        str | None, typer.Option("--to", help="... and before this time (default: no end).")
    ] = None,
    technicians: TechniciansFile = None,
    units: UnitsFile = None,
    reasons: Annotated[
        int, typer.Option("--reasons", help="How many top reasons per order (0: none).")
    ] = 3,
) -> None:
    """Score completed orders in [from, to) as of their completion; write a CSV."""
    from pipelines.features import parse_time
    from pipelines.score import score_files

    try:
        t0, t1 = parse_time(start), parse_time(end)
        if t1 is not None and t1 <= t0:
            _fail("--to must be after --from")
        n = score_files(model_dir, orders, out, t0, t1, technicians, units, reasons)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    typer.echo(f"scored {n} orders -> {out}")


@app.command("register")
def register_cmd(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="Model directory from train.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the decision as JSON here.")
    ] = None,
    params: Annotated[Path, _PARAMS] = Path("params.yaml"),
) -> None:
    """Register the model as challenger; promote to champion only if it passes the gate."""
    from pipelines.register import register_model_dir

    try:
        d = register_model_dir(model_dir, out, params)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    state = "champion" if d["promoted"] else "challenger (champion unchanged)"
    typer.echo(f"{d['name']} v{d['version']}: {state}; " + "; ".join(d["reasons"]))


@app.command("report")
def report_cmd(
    start: Annotated[
        str, typer.Option("--from", help="First day of the period (YYYY-MM-DD, reported_at).")
    ],
    end: Annotated[str, typer.Option("--to", help="Last day of the period (inclusive).")],
    out: Annotated[
        list[Path],
        typer.Option("--out", help="report.json or report.html (repeat to write both)."),
    ],
    community: Annotated[
        str | None, typer.Option("--community", help="Only this community_id.")
    ] = None,
    orders: Annotated[
        Path | None,
        typer.Option(
            "--orders",
            help="Orders contract file (default: the service's store, REPAIRQC_DATABASE_URL).",
        ),
    ] = None,
    technicians: Annotated[
        Path | None, typer.Option("--technicians", help="Technicians file (for teams).")
    ] = None,
    units: UnitsFile = None,
    params: Annotated[
        Path, typer.Option("--params", help="params.yaml with the kpi: and label: blocks.")
    ] = Path("params.yaml"),
    encoding: CsvEncoding = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(
            "--model-dir",
            help="Model directory for the scores (default: the registry's champion; "
            "with the store, its recorded decisions give the scores).",
        ),
    ] = None,
) -> None:
    """Improvement report: KPIs, estimates, dossiers, drivers, hotspots, model health, actions."""
    from models.validation import ContractError
    from pipelines.io import UnreadableFileError
    from pipelines.report import SourceUnavailableError, build_report, write_report

    try:
        for o in out:
            if o.suffix.lower() not in (".json", ".html", ".htm"):
                _fail(f"--out must end in .json or .html, got {o.name!r}")
        report = build_report(
            start,
            end,
            orders=orders,
            technicians=technicians,
            units=units,
            community=community,
            params_path=params,
            encoding=encoding,
            model_dir=model_dir,
        )
        for o in out:
            write_report(report, o)
    except (
        SourceUnavailableError,
        ContractError,
        UnreadableFileError,
        ValueError,
        FileNotFoundError,
    ) as e:
        _fail(str(e))
    k = report["kpis"]["overall"]
    typer.echo(
        "  ".join(f"{name} {'-' if v is None else f'{v:.1%}'}" for name, v in k.items())
        + f"  ({report['counts']['current']['orders']} orders) -> "
        + ", ".join(map(str, out))
    )


@app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    model_dir: Annotated[
        Path | None,
        typer.Option("--model-dir", help="Serve this model directory instead of the champion."),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Policy YAML (default serving/policy.yaml).")
    ] = None,
) -> None:
    """Start the scoring API (needs REPAIRQC_SAMPLING_SECRET unless REPAIRQC_DEV_MODE=1)."""
    from pipelines.serve import serve

    try:
        serve(host, port, model_dir, policy)
    except ValueError as e:
        _fail(str(e))


keys_app = typer.Typer(help="API keys of the scoring service (stored hashed).")
app.add_typer(keys_app, name="keys")
app.add_typer(sentiment_app, name="sentiment")


@keys_app.command("create")
def keys_create_cmd(
    role: Annotated[str, typer.Option("--role", help="system, quality or admin.")],
    note: Annotated[str | None, typer.Option("--note", help="Who or what the key is for.")] = None,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from pipelines.serve import create_key

    try:
        key_id, key = create_key(role, note)
    except ValueError as e:
        _fail(str(e))
    typer.echo(key)
    typer.secho(f"key id {key_id} ({role}); shown once, store it now", err=True)


@keys_app.command("list")
def keys_list_cmd() -> None:
    """List key ids, roles and dates (never the keys)."""
    from pipelines.serve import list_keys

    for k in list_keys():
        cells = (k["key_id"], k["role"], k["created_at"], k["revoked_at"] or "-", k["note"] or "")
        typer.echo("\t".join(map(str, cells)))


@keys_app.command("revoke")
def keys_revoke_cmd(
    key_id: Annotated[str, typer.Argument(help="Key id from `keys list`.")],
) -> None:
    """Revoke a key (effective within the service's key cache time)."""
    from pipelines.serve import revoke_key

    if not revoke_key(key_id):
        _fail(f"no active key {key_id}")
    typer.echo(f"revoked {key_id}")


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url", help="Store URL (default: REPAIRQC_DATABASE_URL or the service's)."
    ),
]


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option("--out", help="Output directory for the contract files.")],
    database_url: DatabaseUrl = None,
) -> None:
    """The service's store as contract files, for dvc repro on real operation data.

    orders/technicians/units.csv (follow-up outcomes filled in), inspections.csv and
    decisions.csv (π and draws).
    """
    from pipelines.export import EmptyStoreError, export_store, open_store

    try:
        summary = export_store(out, open_store(database_url))
    except EmptyStoreError as e:
        _fail(str(e))
    typer.echo(", ".join(f"{k}: {v} rows" for k, v in summary["rows"].items()) + f" -> {out}/")


outcomes_app = typer.Typer(help="Outcomes of scored orders (回访、质检结果) into the store.")
app.add_typer(outcomes_app, name="outcomes")


@outcomes_app.command("import")
def outcomes_import_cmd(
    infile: Annotated[Path, typer.Option("--in", help="CSV of one kind of outcome.")],
    kind: Annotated[str, typer.Option("--kind", help="followup, internal or third_party.")],
    database_url: DatabaseUrl = None,
    encoding: CsvEncoding = None,
) -> None:
    """Validate a whole file, then record it (atomic; identical rows are not recorded twice)."""
    from pipelines.export import open_store
    from pipelines.io import UnreadableFileError
    from pipelines.outcomes import ImportFailedError, import_outcomes

    try:
        got = import_outcomes(infile, kind, open_store(database_url), encoding)
    except ImportFailedError as e:
        for msg in e.errors[:50]:
            typer.secho(msg, err=True)
        if len(e.errors) > 50:
            typer.secho(f"... and {len(e.errors) - 50} more", err=True)
        _fail(str(e))
    except UnreadableFileError as e:
        _fail(str(e))
    typer.echo(f"{got['rows']} rows: {got['recorded']} recorded, {got['duplicates']} duplicates")


def main() -> None:
    """Entry point for ``python -m pipelines.cli``."""
    app()


if __name__ == "__main__":
    main()
