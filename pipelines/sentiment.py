"""``repairqc sentiment``: train the comment model on labelled comments and score comment files.

A thin shell around :mod:`models.sentiment`: it reads and writes files (CSV or Parquet, chosen
by extension), checks columns and labels with messages a user can act on, and leaves the
learning to the model module. Also the weak-label stage on work orders:
:func:`train_from_orders` learns from rated follow-up comments and :func:`score_orders` applies
the model to report descriptions and to every comment, rated or not.

Heavy imports (pandas, scikit-learn, snownlp) happen inside the functions, so that registering
this sub-app in ``pipelines.cli`` keeps ``repairqc --help`` instant.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from models.sentiment import CommentSentimentModel, SnowNLPSentiment

log = logging.getLogger(__name__)

app = typer.Typer(
    help="Resident-comment sentiment: train on labelled comments, score comment files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Ratings that give a weak label to a follow-up comment: 4–5 positive, 1–2 negative; 3 is
#: left out because a "neutral" rating mixes mild praise and mild complaints.
POSITIVE_RATINGS = (4, 5)
NEGATIVE_RATINGS = (1, 2)
#: Below this many examples of a class a fitted model would mostly echo the lexicon noise.
MIN_PER_CLASS = 5


class SentimentInputError(ValueError):
    """The input file or frame cannot be used as asked (missing column, bad labels, no text)."""


# ----------------------------------------------------------------------------------------------
# file helpers
# ----------------------------------------------------------------------------------------------


def read_table(path: Path) -> pd.DataFrame:
    """Read CSV (UTF-8, with or without BOM) or Parquet, by extension."""
    import pandas as pd

    suffix = path.suffix.lower()
    if not path.is_file():
        raise SentimentInputError(f"input file not found: {path}")
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".csv", ".txt"):
        try:
            # utf-8-sig reads both: it strips a BOM when there is one.
            return pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
        except UnicodeDecodeError as e:
            raise SentimentInputError(f"{path} is not UTF-8 text: {e}") from e
    raise SentimentInputError(f"unsupported input format {suffix!r}: use .csv or .parquet")


def write_table(df: pd.DataFrame, path: Path) -> None:
    """Write CSV or Parquet by extension; CSV gets a BOM so Excel shows the Chinese correctly."""
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif suffix == ".csv":
        df.to_csv(path, index=False, encoding="utf-8-sig")
    else:
        raise SentimentInputError(f"unsupported output format {suffix!r}: use .csv or .parquet")


def _require_columns(df: pd.DataFrame, *cols: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SentimentInputError(
            f"column {missing[0]!r} not found in the input; available columns: "
            + ", ".join(map(str, df.columns))
        )


def _texts(df: pd.DataFrame, col: str) -> tuple[list[str], np.ndarray]:
    """The column as strings ('' for missing) and its blank mask; error if all are blank."""
    from models.sentiment import _as_texts, blank_mask

    texts = _as_texts(df[col])
    blank = blank_mask(texts)
    if len(texts) and blank.all():
        raise SentimentInputError(f"column {col!r} has no text: all {len(texts)} rows are empty")
    return texts, blank


def _labels(df: pd.DataFrame, col: str) -> np.ndarray:
    """Labels as 0/1 ints; a clear error naming the column and the offending values."""
    import pandas as pd

    raw = df[col]
    as_str = raw.astype("string").str.strip()
    num = pd.to_numeric(as_str, errors="coerce")
    bad = ~num.isin([0, 1])
    if bad.any():
        values = sorted({"<empty>" if (v is pd.NA or v == "") else str(v) for v in as_str[bad]})
        raise SentimentInputError(
            f"label column {col!r} must hold 1 (positive) or 0 (negative); "
            f"{int(bad.sum())} rows have other values: {', '.join(values[:10])}"
        )
    return num.to_numpy(dtype="int8")


# ----------------------------------------------------------------------------------------------
# pure-ish stage functions (frames in, frames/models out)
# ----------------------------------------------------------------------------------------------


def cross_validated_metrics(
    texts: list[str],
    labels: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    C: float | None = None,
) -> dict[str, float]:
    """Stratified k-fold accuracy, ROC AUC and macro-F1 of the default model on these labels.

    Stored in the manifest so every trained model says how good it was on its own data.
    Empty when a class has fewer examples than folds. ``C``: the regularisation the final
    model chose on all labels; fixing it here saves the inner C search in every fold (5× the
    training time) at the price of a negligible optimism (one choice among four values).
    """
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from models.sentiment import CommentSentimentModel

    y = np.asarray(labels)
    if min(np.bincount(y, minlength=2)) < folds:
        return {}
    X = np.asarray(texts, dtype=object)
    p = np.zeros(len(y))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        m = CommentSentimentModel() if C is None else CommentSentimentModel(C=C)
        p[te] = m.fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
    return {
        "cv_folds": folds,
        "accuracy": float(accuracy_score(y, p >= 0.5)),
        "roc_auc": float(roc_auc_score(y, p)),
        "macro_f1": float(f1_score(y, p >= 0.5, average="macro")),
    }


def train_frame(
    df: pd.DataFrame, text_col: str, label_col: str
) -> tuple[CommentSentimentModel, list[str], np.ndarray, int]:
    """Fit the comment model on a labelled frame; returns (model, texts, labels, n_blank).

    Blank texts carry no evidence, so they are left out of training (and counted).
    """
    import numpy as np

    from models.sentiment import CommentSentimentModel

    _require_columns(df, text_col, label_col)
    texts, blank = _texts(df, text_col)
    labels = _labels(df, label_col)
    keep = ~blank
    tx = [t for t, k in zip(texts, keep, strict=True) if k]
    y = labels[keep]
    counts = np.bincount(y, minlength=2)
    if counts.min() < MIN_PER_CLASS:
        raise SentimentInputError(
            f"need at least {MIN_PER_CLASS} positive and {MIN_PER_CLASS} negative comments; "
            f"got {int(counts[1])} positive and {int(counts[0])} negative"
        )
    return CommentSentimentModel().fit(tx, y), tx, y, int(blank.sum())


def score_frame(
    model: CommentSentimentModel | SnowNLPSentiment, df: pd.DataFrame, text_col: str
) -> tuple[pd.DataFrame, int]:
    """The input's columns plus ``sentiment`` = P(positive) and the aspect tags.

    Blank texts are kept with ``sentiment`` NaN; returns (frame, number of blank rows).
    """
    import pandas as pd

    from models.sentiment import aspect_frame, score_texts

    _require_columns(df, text_col)
    texts, blank = _texts(df, text_col)
    extra = aspect_frame(texts)
    extra.insert(0, "sentiment", score_texts(model, texts))
    clash = [c for c in extra.columns if c in df.columns]
    if clash:
        log.warning("replacing existing columns %s with fresh scores", clash)
    out = pd.concat(
        [df.drop(columns=clash).reset_index(drop=True), extra.reset_index(drop=True)], axis=1
    )
    out.index = df.index
    return out, int(blank.sum())


def weak_labels(orders: pd.DataFrame) -> pd.DataFrame:
    """Rated, non-blank follow-up comments with their weak label (4–5 → 1, 1–2 → 0, 3 out)."""
    import pandas as pd

    from models.sentiment import blank_mask

    _require_columns(orders, "feedback_comment", "rating")
    rating = pd.to_numeric(orders["rating"], errors="coerce")
    has_text = ~blank_mask(orders["feedback_comment"])
    pos = rating.isin(POSITIVE_RATINGS).to_numpy()
    neg = rating.isin(NEGATIVE_RATINGS).to_numpy()
    keep = has_text & (pos | neg)
    return pd.DataFrame(
        {"text": orders["feedback_comment"][keep].astype(str), "label": pos[keep].astype("int8")},
        index=orders.index[keep],
    )


def train_from_orders(orders: pd.DataFrame, **params: Any) -> CommentSentimentModel:
    """Weak-label stage: learn comment sentiment from the operation's own rated comments.

    Every company holds these labels already: a follow-up comment rated 4–5 is positive, 1–2
    negative (3 is ambiguous and excluded). The model then scores texts that have no rating:
    report descriptions, unrated comments, a resident's past comments.

    Parameters
    ----------
    orders
        Work orders with ``feedback_comment`` and ``rating`` (the contract's outcome columns).
    **params
        Passed to :class:`models.sentiment.CommentSentimentModel`.

    Returns
    -------
    CommentSentimentModel
        The fitted model.
    """
    import numpy as np

    from models.sentiment import CommentSentimentModel

    wl = weak_labels(orders)
    counts = np.bincount(wl["label"].to_numpy(), minlength=2)
    if counts.min() < MIN_PER_CLASS:
        raise SentimentInputError(
            f"need at least {MIN_PER_CLASS} rated comments of each kind (rating 4–5 and 1–2); "
            f"got {int(counts[1])} positive and {int(counts[0])} negative"
        )
    log.info(
        "training comment sentiment on %d rated comments (%d positive, %d negative)",
        len(wl),
        counts[1],
        counts[0],
    )
    return CommentSentimentModel(**params).fit(wl["text"].tolist(), wl["label"].to_numpy())


def score_orders(
    model: CommentSentimentModel | SnowNLPSentiment, orders: pd.DataFrame
) -> pd.DataFrame:
    """A copy of ``orders`` with text sentiment and aspect columns added.

    ``description_sentiment`` and ``description_aspect_*`` come from the report and are known
    when the order is created. ``comment_sentiment`` and ``comment_aspect_*`` come from the
    follow-up comment, an *outcome* (``models.schemas``): use them as labels, or as features of
    *later* orders only (a resident's past comments), never to score the order itself.
    The input frame is not modified.
    """
    from models.sentiment import aspect_frame, score_texts

    out = orders.copy()
    for src, name in (("description", "description"), ("feedback_comment", "comment")):
        if src not in orders.columns:
            continue
        texts = orders[src]
        out[f"{name}_sentiment"] = score_texts(model, texts)
        tags = aspect_frame(texts, prefix=f"{name}_aspect_")
        tags.index = orders.index
        for col in tags.columns:
            out[col] = tags[col]
    return out


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=2)


def _warn(message: str) -> None:
    # One channel only: the CLI's stderr (logging would print the same line a second time).
    typer.secho(f"warning: {message}", err=True, fg=typer.colors.YELLOW)


@app.command("train")
def train_cmd(
    in_: Annotated[Path, typer.Option("--in", help="Labelled comments (.csv or .parquet).")],
    text_col: Annotated[str, typer.Option("--text-col", help="Column with the comment text.")],
    label_col: Annotated[
        str, typer.Option("--label-col", help="Column with the label: 1 positive, 0 negative.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Model directory to write.")],
) -> None:
    """Train the comment sentiment model and write a model directory (manifest + model)."""
    from models.sentiment import save_model

    try:
        df = read_table(in_)
        model, tx, y, n_blank = train_frame(df, text_col, label_col)
    except SentimentInputError as e:
        _fail(str(e))
        return
    if n_blank:
        _warn(f"{n_blank} rows with empty {text_col!r} were left out of training")
    metrics = cross_validated_metrics(tx, y, C=model.C_)
    save_model(
        model,
        out,
        metrics=metrics,
        extra={"n_positive": int(y.sum()), "n_negative": int(len(y) - y.sum()), "source": in_.name},
    )
    shown = ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k != "cv_folds")
    typer.echo(
        f"trained on {len(y)} comments ({int(y.sum())} positive) plus {model.n_aux_} auxiliary "
        f"reviews -> {out}/  {shown}"
    )


@app.command("score")
def score_cmd(
    model_dir: Annotated[Path, typer.Option("--model", help="Model directory from `train`.")],
    in_: Annotated[Path, typer.Option("--in", help="Comments to score (.csv or .parquet).")],
    text_col: Annotated[str, typer.Option("--text-col", help="Column with the comment text.")],
    out: Annotated[Path, typer.Option("--out", help="Output file (.csv or .parquet).")],
) -> None:
    """Add ``sentiment`` = P(positive) and aspect tags to every row of a comment file."""
    from models.sentiment import load_model

    if out.suffix.lower() not in (".csv", ".parquet"):
        _fail(f"unsupported output format {out.suffix!r}: use .csv or .parquet")
    try:
        model = load_model(model_dir)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
        return
    try:
        df = read_table(in_)
        scored, n_blank = score_frame(model, df, text_col)
    except SentimentInputError as e:
        _fail(str(e))
        return
    if n_blank:
        _warn(f"{n_blank} of {len(df)} rows have empty {text_col!r}: their sentiment is NaN")
    write_table(scored, out)
    typer.echo(f"scored {len(df) - n_blank} comments -> {out}")


@app.command("train-orders")
def train_orders_cmd(
    orders: Annotated[
        Path, typer.Option("--orders", help="Validated orders (orders.parquet from `validate`).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Model directory to write.")],
    fit_fraction: Annotated[
        float,
        typer.Option(
            "--fit-fraction",
            min=0.05,
            max=1.0,
            help="Learn only from the oldest fraction of completed orders (by completed_at), the "
            "same slice the risk heads are fitted on, so later orders' ratings never shape the "
            "text features the heads are evaluated with.",
        ),
    ] = 1.0,
) -> None:
    """Weak-label stage: learn comment sentiment from the operation's own rated comments."""
    import pandas as pd

    from models.sentiment import save_model

    try:
        df = pd.read_parquet(orders)
    except (OSError, ValueError) as e:
        _fail(f"{orders}: cannot read validated orders: {e}")
        return
    done = df[df["completed_at"].notna()].sort_values("completed_at", kind="stable")
    cutoff_n = max(1, int(round(len(done) * fit_fraction)))
    fit = done.iloc[:cutoff_n]
    try:
        wl = weak_labels(fit)
        model = train_from_orders(fit)
    except SentimentInputError as e:
        _fail(str(e))
        return
    y = wl["label"].to_numpy()
    metrics = cross_validated_metrics(wl["text"].tolist(), y, C=model.C_)
    until = fit["completed_at"].max()
    save_model(
        model,
        out,
        metrics=metrics,
        extra={
            "n_positive": int(y.sum()),
            "n_negative": int(len(y) - y.sum()),
            "source": orders.name,
            "trained_until": str(until),
            "fit_fraction": fit_fraction,
        },
    )
    shown = ", ".join(f"{k}={v:.3f}" for k, v in metrics.items() if k != "cv_folds")
    typer.echo(f"trained on {len(y)} rated comments completed up to {until} -> {out}/  {shown}")
