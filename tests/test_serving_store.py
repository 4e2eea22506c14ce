"""Audit store: migrations match the tables, keys are hashed, PII is masked in logs."""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from typer.testing import CliRunner

from pipelines.cli import app
from serving.observability import JsonFormatter, mask_pii
from serving.store import tables as T
from serving.store.db import Store, make_engine, upgrade


def test_migrations_create_exactly_the_declared_tables(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    upgrade(engine)
    upgrade(engine)  # idempotent
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), T.metadata)
    assert diff == []


def test_keys_are_stored_hashed_and_roles_checked(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    upgrade(engine)
    store = Store(engine)
    key_id, key = store.create_key("quality", note="品质部")
    assert store.role_of(key) == "quality"
    assert store.role_of(key + "x") is None
    with engine.connect() as conn:
        stored = conn.execute(sa.select(T.api_keys.c.key_hash)).scalar()
    assert key not in stored and len(stored) == 64
    assert store.revoke_key(key_id) and store.role_of(key) is None


def test_keys_cli_prints_a_key_once(tmp_path, monkeypatch):
    monkeypatch.setenv("REPAIRQC_DATABASE_URL", f"sqlite:///{tmp_path / 'k.db'}")
    r = CliRunner().invoke(app, ["keys", "create", "--role", "system"])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[0]
    assert key.startswith("rqc_")
    listed = CliRunner().invoke(app, ["keys", "list"]).stdout
    assert "system" in listed and key not in listed
    bad = CliRunner().invoke(app, ["keys", "create", "--role", "root"])
    assert bad.exit_code == 2 and "role must be one of system, quality, admin" in bad.output


def test_pii_is_masked_in_free_text_and_logs():
    text = "张先生电话13812345678，联系人：李小明，座机021-62345678，身份证110101199003071234"
    masked = mask_pii(text)
    for secret in ("13812345678", "李小明", "张先生", "62345678", "110101199003071234"):
        assert secret not in masked
    rec = logging.makeLogRecord({"msg": "call %s", "args": ("13812345678",), "note": "王女士"})
    out = json.loads(JsonFormatter().format(rec))
    assert "13812345678" not in out["msg"] and out["note"] == "[称呼]"
