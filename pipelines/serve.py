"""Entry points of ``repairqc serve`` and ``repairqc keys`` (thin: settings in, uvicorn out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _settings(**overrides: Any):
    """Settings from the environment, with CLI overrides; a clear error when unsafe."""
    from pydantic import ValidationError

    from serving.config import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ValueError("; ".join(e["msg"] for e in exc.errors())) from exc


def serve(host: str, port: int, model_dir: Path | None, policy: Path | None) -> None:
    """Run the API with uvicorn (one process; the model is loaded once in the lifespan).

    Why one worker process for 16+ connections on 2 cores: the as-of features need every
    stored order in an in-memory history, and a second process would hold a second history
    that does not see the orders the first one stored until a rebuild from the database — a
    stale history for every order routed to the "other" worker. Concurrency comes instead from
    the threadpool of the sync endpoint (validation, JSON, DB waits of up to 40 requests in
    flight) and from the scorer's coalescer, which scores the small requests that queued
    while it was busy as one batch (``serving.engine.Coalescer``): the fixed per-call cost of
    the decision is shared, so throughput grows with concurrency without a second process.
    SQLite writes stay safe either way (WAL, busy timeout, one short transaction per write;
    idempotent decision inserts).

    LightGBM predicts with one OpenMP thread: with the default (all cores) a single-row p99
    jumps several-fold whenever another process holds a core, and requests are already
    concurrent. Set before LightGBM is imported; an explicit ``OMP_NUM_THREADS`` wins.
    """
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import uvicorn

    from serving.main import create_app

    settings = _settings(model_dir=model_dir, policy_path=policy)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)


def _store():
    from serving.store.db import Store, make_engine, upgrade

    # keys need only the database: no secret is required to manage them
    settings = _settings(dev_mode=True)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    return Store(engine)


def create_key(role: str, note: str | None = None) -> tuple[str, str]:
    """Create an API key of ``role``; ``(key_id, key)``."""
    return _store().create_key(role, note)


def list_keys() -> list[dict[str, Any]]:
    """Key ids, roles, dates."""
    return _store().list_keys()


def revoke_key(key_id: str) -> bool:
    """Revoke a key by id."""
    return _store().revoke_key(key_id)
