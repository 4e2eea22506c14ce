"""Reading and writing contract files: CSV (any common Chinese encoding) and Parquet.

Kept out of ``models/`` so the pure code never touches the file system.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

log = logging.getLogger(__name__)

#: Tried in order when no encoding is given: UTF-8 (with or without BOM), then GB18030, the
#: superset of GBK/GB2312 that Chinese Excel writes.
ENCODINGS = ("utf-8-sig", "gb18030")


class UnreadableFileError(ValueError):
    """The file cannot be read as a table at all."""


def decode_bytes(data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """Decode a CSV file's bytes; return (text, encoding used).

    An explicit ``encoding`` wins. Otherwise strict UTF-8, then GB18030, then whatever
    charset-normalizer detects; a file no decoder accepts is unreadable, never "fixed" with
    replacement characters that would silently corrupt descriptions.
    """
    if encoding:
        try:
            return data.decode(encoding), encoding
        except (UnicodeDecodeError, LookupError) as e:
            raise UnreadableFileError(f"cannot decode file as {encoding}: {e}") from e
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 with BOM (Excel "Unicode text")
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as e:
            raise UnreadableFileError(f"cannot decode UTF-16 file: {e}") from e
    for enc in ENCODINGS:
        try:
            return data.decode(enc), enc
        except UnicodeDecodeError:
            continue
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise UnreadableFileError("cannot detect the text encoding; pass --encoding")
    return str(best), best.encoding


def _split_csv(text: str) -> tuple[pd.DataFrame, dict[int, str]]:
    """Tolerant CSV split used when pandas refuses a file (ragged lines).

    Every data record is kept: records with the wrong number of fields are padded/truncated to
    the header and reported in ``bad_rows`` so validation quarantines them with a reason.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration as e:
        raise UnreadableFileError("the file is empty (no header row)") from e
    rows, bad = [], {}
    width = len(header)
    for rec in reader:
        if not rec:
            continue
        if len(rec) != width:
            bad[len(rows)] = f"expected {width} fields, found {len(rec)}"
            rec = (rec + [""] * width)[:width]
        rows.append(rec)
    return pd.DataFrame(rows, columns=header, dtype=object), bad


def read_raw_table(
    path: str | Path, encoding: str | None = None
) -> tuple[pd.DataFrame, dict[int, str]]:
    """Read a contract file without interpreting any value.

    CSV cells stay text ("" for empty) so validation sees exactly what the source wrote;
    Parquet keeps its types. Returns the frame and the ragged rows (CSV only).

    Raises
    ------
    UnreadableFileError
        Missing file, unknown format, undecodable bytes or no header.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path), {}
        except Exception as e:  # pyarrow raises many types
            raise UnreadableFileError(f"{path}: not a readable Parquet file: {e}") from e
    if suffix not in (".csv", ".txt", ".tsv"):
        raise UnreadableFileError(
            f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)"
        )
    text, used = decode_bytes(path.read_bytes(), encoding)
    if used not in ("utf-8-sig", "utf-8"):
        log.info("%s: decoded as %s", path, used)
    if not text.strip():
        raise UnreadableFileError(f"{path}: the file is empty")
    sep = "\t" if suffix == ".tsv" else ","
    try:
        return _read_csv_as_text(text, sep), {}
    except (pa.ArrowInvalid, pd.errors.ParserError):
        log.warning("%s: ragged CSV lines; reading tolerantly and quarantining them", path)
        return _split_csv(text)


def _read_csv_as_text(text: str, sep: str) -> pd.DataFrame:
    """Every cell as text ("" when empty), through Arrow's multi-threaded CSV reader."""
    header = next(csv.reader(io.StringIO(text[: text.find("\n") + 1 or None]), delimiter=sep))
    header = [h.strip().lstrip("\ufeff") for h in header]
    table = pacsv.read_csv(
        io.BytesIO(text.encode("utf-8")),
        read_options=pacsv.ReadOptions(column_names=header, skip_rows=1),
        parse_options=pacsv.ParseOptions(delimiter=sep, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={h: pa.string() for h in header},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    return table.to_pandas(types_mapper=lambda t: pd.StringDtype("pyarrow"))


def read_typed(path: str | Path) -> pd.DataFrame:
    """Read a file this project wrote (validated Parquet)."""
    return pd.read_parquet(path)
