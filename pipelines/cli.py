"""The ``repairqc`` command line: thin wrappers around the pipeline stages.

Imports of heavy libraries (lightgbm, mlflow, snownlp) happen inside the commands, so that
``repairqc --help`` answers instantly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

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


def _fail(message: str) -> None:
    """Print a clear error and exit non-zero (no traceback for a user mistake)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=2)


@app.command("validate")
def validate_cmd(
    orders: Annotated[Path, typer.Option("--orders", help="Orders file (CSV or Parquet).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    technicians: Annotated[
        Path | None, typer.Option("--technicians", help="Technicians file (optional).")
    ] = None,
    units: Annotated[Path | None, typer.Option("--units", help="Units file (optional).")] = None,
    encoding: Annotated[
        str | None,
        typer.Option("--encoding", help="Force a CSV encoding (default: UTF-8/BOM, then GBK)."),
    ] = None,
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
    params: Annotated[
        Path, typer.Option("--params", help="params.yaml with a label: block.")
    ] = Path("params.yaml"),
) -> None:
    """Attach rework and dissatisfaction labels (censored orders stay unlabelled)."""
    from pipelines.label import label_file

    try:
        stats = label_file(orders, out, params)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    typer.echo(
        f"rework: {stats['rework_labelled']} labelled ({stats['rework_rate']:.1%} positive), "
        f"{stats['rework_censored']} censored; dissatisfied: {stats['dissatisfied_labelled']} "
        f"labelled ({stats['dissatisfied_rate']:.1%}), "
        f"{stats['dissatisfied_from_comment']} from comments"
    )


def main() -> None:
    """Entry point for ``python -m pipelines.cli``."""
    app()


if __name__ == "__main__":
    main()
