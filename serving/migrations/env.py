"""Alembic environment of the audit store, configured from code (no alembic.ini needed).

``serving.store.db.upgrade(url)`` runs the migrations at service start; the URL comes from the
``sqlalchemy.url`` option set there, or from ``REPAIRQC_DATABASE_URL`` when alembic is run by
hand (``alembic -c serving/alembic.ini upgrade head``).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from serving.store.tables import metadata

config = context.config


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("REPAIRQC_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: set REPAIRQC_DATABASE_URL")
    from serving.store.db import postgres_driver  # postgresql:// -> the shipped driver

    return postgres_driver(url).render_as_string(hide_password=False)


def run_migrations_offline() -> None:
    """Emit SQL for the migrations without a connection (``alembic upgrade --sql``)."""
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Apply the migrations on a connection (given by the caller, or opened here)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
