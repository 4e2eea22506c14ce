"""Prometheus metrics and structured logs without resident PII.

Metrics live in a registry per app (tests build many apps in one process). Logs are one JSON
object per line; every message and string field passes :func:`mask_pii`, which hides mobile
and landline numbers, ID-card numbers and the names residents write in free text (``张先生``,
``联系人：李四``). Descriptions are never logged on purpose; the mask is the second line.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

_PII_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<!\d)\d{17}[\dXx](?!\d)"), "[身份证]"),
    (re.compile(r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?!\d)"), "[手机号]"),
    (re.compile(r"(?<!\d)0\d{2,3}-?\d{7,8}(?!\d)"), "[电话]"),
    (re.compile(r"(?:联系人|姓名|业主|住户)[:：\s]*[\u4e00-\u9fa5]{2,4}"), "[姓名]"),
    (re.compile(r"[\u4e00-\u9fa5](?:先生|女士|小姐|阿姨|师傅)"), "[称呼]"),
)


def mask_pii(text: str) -> str:
    """Replace phone numbers, ID numbers and names in free text with placeholders."""
    for pattern, repl in _PII_PATTERNS:
        text = pattern.sub(repl, text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record, PII masked (message, args and extra string fields)."""

    _STD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as masked JSON."""
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": mask_pii(record.getMessage()),
        }
        for k, v in vars(record).items():
            if k not in self._STD and not k.startswith("_"):
                out[k] = mask_pii(v) if isinstance(v, str) else v
        if record.exc_info:
            out["exc"] = mask_pii(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(level: str) -> None:
    """Route the service's loggers through the masked JSON formatter."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    for name in ("serving", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.setLevel(level)
        lg.propagate = False


class Metrics:
    """The service's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # the process's memory, CPU and garbage collections, as in the default registry: a
        # service that keeps its history in memory is watched by its resident size (a leak
        # of replaced histories grew it ~80 MB per 10,000 orders merged, unseen here)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.history_orders = Gauge(
            "repairqc_history_orders",
            "Orders in the in-memory history that scores read (every stored order)",
            registry=self.registry,
        )
        self.latency = Histogram(
            "repairqc_request_seconds",
            "Request latency by route",
            ["route", "method", "status"],
            registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.scores = Counter(
            "repairqc_scored_orders_total", "Orders scored (new decisions)", registry=self.registry
        )
        self.replays = Counter(
            "repairqc_replayed_decisions_total",
            "Recorded decisions returned again",
            registry=self.registry,
        )
        self.levels = Counter(
            "repairqc_risk_level_total",
            "New decisions by risk level",
            ["level"],
            registry=self.registry,
        )
        self.flags = Counter(
            "repairqc_inspection_flags_total",
            "Inspection flags by reason code",
            ["code"],
            registry=self.registry,
        )
        self.samples = Counter(
            "repairqc_third_party_samples_total",
            "Orders drawn for third-party inspection",
            registry=self.registry,
        )
        self.rejected = Counter(
            "repairqc_rejected_orders_total",
            "Orders rejected by validation",
            registry=self.registry,
        )
