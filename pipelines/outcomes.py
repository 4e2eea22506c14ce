"""``repairqc outcomes import``: follow-up or inspection results from a CSV into the store.

For systems that cannot call ``POST /v1/outcomes``: the same validation (``serving.schemas``
models and ``serving.routes.outcomes.check_outcomes``), the same idempotent, append-only
records. One kind per file (``--kind followup|internal|third_party``); columns:

* followup: ``order_id, rating, comment, complaint, followed_up_at[, source]``
* internal: ``order_id, passed, defect_codes, inspector, notes, photos, inspected_at[, source]``
* third_party: the internal columns plus ``agency``

Empty cells are missing values; ``defect_codes`` and ``photos`` are ``;``-separated; booleans
accept true/false, 1/0, yes/no and 是/否 (合格/不合格 for ``passed``). The import is atomic: any
bad row and nothing is recorded; every problem is reported as ``line N (order_id): field:
problem`` (line 1 is the header).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

#: Columns per kind (required ones must be present as columns; values are checked per row).
COLUMNS: dict[str, tuple[str, ...]] = {
    "followup": ("order_id", "rating", "comment", "complaint", "followed_up_at", "source"),
    "internal": (
        "order_id",
        "passed",
        "defect_codes",
        "inspector",
        "notes",
        "photos",
        "inspected_at",
        "source",
    ),
}
COLUMNS["third_party"] = (*COLUMNS["internal"], "agency")
REQUIRED: dict[str, tuple[str, ...]] = {
    "followup": ("order_id", "followed_up_at"),
    "internal": ("order_id", "passed", "inspector", "inspected_at"),
    "third_party": ("order_id", "passed", "inspector", "inspected_at", "agency"),
}
_LISTS = ("defect_codes", "photos")
_BOOLS = ("complaint", "passed")
_TRUE = {"true", "1", "yes", "y", "是", "合格", "t"}
_FALSE = {"false", "0", "no", "n", "否", "不合格", "f"}


class ImportFailedError(ValueError):
    """The file cannot be imported; ``errors`` lists every problem."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__(f"{len(errors)} problem(s); nothing was recorded")


def _cell(name: str, value: Any) -> Any:
    """A CSV text cell as the API would receive it (None when empty)."""
    text = "" if value is None else str(value).strip()
    if not text:
        return [] if name in _LISTS else None
    if name in _LISTS:
        return [p.strip() for p in text.split(";") if p.strip()]
    if name in _BOOLS:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        return text  # the model names the field and the problem
    return text


def parse_rows(
    raw: list[dict[str, Any]], kind: str
) -> tuple[list[BaseModel], list[int], list[str]]:
    """Validate rows with the API's models; (models, their line numbers, errors)."""
    from serving.routes.outcomes import field_error
    from serving.schemas import FollowupIn, InspectionIn

    model = FollowupIn if kind == "followup" else InspectionIn
    items, lines, errors = [], [], []
    for i, row in enumerate(raw):
        line = i + 2
        data = {k: _cell(k, v) for k, v in row.items()}
        if kind != "followup":
            data["kind"] = kind
        data = {k: v for k, v in data.items() if v is not None and v != [] or k in _LISTS}
        try:
            items.append(model.model_validate(data))
            lines.append(line)
        except ValidationError as exc:
            oid = row.get("order_id") or "?"
            errors += [f"line {line} ({oid}): {field_error(e)}" for e in exc.errors()]
    return items, lines, errors


def import_outcomes(path: Path, kind: str, store: Any, encoding: str | None = None) -> dict:
    """Validate the whole file, then record it; raises :class:`ImportFailedError` on any error."""
    from pipelines.io import read_raw_table
    from serving.routes.outcomes import check_outcomes

    if kind not in COLUMNS:
        raise ImportFailedError([f"--kind: must be one of {', '.join(COLUMNS)}"])
    frame, ragged = read_raw_table(path, encoding)
    cols = [str(c) for c in frame.columns]
    problems = [f"line {n}: ragged line ({t[:60]})" for n, t in sorted(ragged.items())]
    unknown = sorted(set(cols) - set(COLUMNS[kind]))
    missing = [c for c in REQUIRED[kind] if c not in cols]
    if unknown:
        problems.append(f"header: unknown column(s) {unknown} for --kind {kind}")
    if missing:
        problems.append(f"header: missing column(s) {missing} for --kind {kind}")
    if problems:
        raise ImportFailedError(problems)
    raw = frame.astype(object).where(frame.notna(), None).to_dict("records")
    items, lines, errors = parse_rows(raw, kind)
    facts = store.order_facts({m.order_id for m in items})
    now = dt.datetime.now(dt.UTC)
    if kind == "followup":
        fu, ins, semantic = check_outcomes(facts, items, [], now)  # type: ignore[arg-type]
    else:
        fu, ins, semantic = check_outcomes(facts, [], items, now)  # type: ignore[arg-type]
    for msg in semantic:  # "followups[3].field: …" -> "line 5 (order): field: …"
        head, _, rest = msg.partition(".")
        i = int(head[head.index("[") + 1 : head.index("]")])
        errors.append(f"line {lines[i]} ({items[i].order_id}): {rest}")
    if errors:
        raise ImportFailedError(sorted(errors, key=lambda e: int(e.split()[1])))
    got = store.add_followups(fu) if kind == "followup" else store.add_inspections(ins)
    dup = sum(r["duplicate"] for r in got)
    return {"rows": len(got), "recorded": len(got) - dup, "duplicates": dup}
