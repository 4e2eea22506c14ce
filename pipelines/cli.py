"""The ``repairqc`` command line: thin wrappers around the pipeline stages.

Imports of heavy libraries (lightgbm, mlflow, snownlp) happen inside the commands, so that
``repairqc --help`` answers instantly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

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


def main() -> None:
    """Entry point for ``python -m pipelines.cli``."""
    app()


if __name__ == "__main__":
    main()
