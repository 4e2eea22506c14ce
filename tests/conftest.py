"""Store backends of the tests: SQLite (always) and PostgreSQL (when a test server is given).

A fixture that depends on ``backend`` runs its tests once per backend (ids ``[sqlite]`` and
``[postgresql]``). The PostgreSQL runs need ``REPAIRQC_TEST_POSTGRES_URL``, the SQLAlchemy URL
of a database on a server where its user may create databases (``scripts/start-postgres.sh``
starts a throwaway one); every test module or test gets a fresh database of its own, dropped
afterwards. Without the URL they skip, unless ``REPAIRQC_REQUIRE_POSTGRES=1`` (set by
``.ci/run``): then they fail, so CI cannot silently skip PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_URL_ENV = "REPAIRQC_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "REPAIRQC_REQUIRE_POSTGRES"

#: The store backends a ``backend``-parametrised fixture runs on.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def postgres_admin_url() -> str:
    """The test server's URL; skips (or fails when required) without one or without psycopg."""
    url = os.environ.get(POSTGRES_URL_ENV, "")
    why = None
    if not url:
        why = f"{POSTGRES_URL_ENV} is not set (scripts/start-postgres.sh starts a test server)"
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            why = "psycopg is not installed (pip install -r requirements.lock)"
    if why is None:
        return url
    if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
        pytest.fail(f"{REQUIRE_POSTGRES_ENV}=1 but {why}", pytrace=False)
    pytest.skip(why)


def _admin_engine(url: str):
    import sqlalchemy as sa

    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def _create_database() -> tuple[str, str]:
    import sqlalchemy as sa

    admin = postgres_admin_url()
    name = f"repairqc_t_{uuid.uuid4().hex[:12]}"
    engine = _admin_engine(admin)
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    url = sa.engine.make_url(admin).set(database=name)
    return name, url.render_as_string(hide_password=False)


def _drop_database(name: str) -> None:
    import sqlalchemy as sa

    engine = _admin_engine(os.environ[POSTGRES_URL_ENV])
    with engine.connect() as conn:  # FORCE: the service's pooled connections may still be open
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _database(backend: str) -> Iterator[str | None]:
    if backend != "postgresql":
        yield None  # the caller's default: a SQLite file in its temp dir
        return
    name, url = _create_database()
    try:
        yield url
    finally:
        _drop_database(name)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    """``sqlite`` or ``postgresql``: every test of a fixture using this runs on both."""
    return request.param


@pytest.fixture(scope="module")
def module_database_url(backend: str) -> Iterator[str | None]:
    """A fresh database of ``backend`` for a test module (None: SQLite in the caller's dir)."""
    yield from _database(backend)


@pytest.fixture()
def database_url(backend: str) -> Iterator[str | None]:
    """A fresh database of ``backend`` for one test (None: SQLite in the caller's dir)."""
    yield from _database(backend)


@pytest.fixture()
def postgres_url() -> Iterator[str | None]:
    """A fresh PostgreSQL database for one PostgreSQL-only test (mark it ``postgres``)."""
    yield from _database("postgresql")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A trained model directory and its completed orders by completion time, trained once per
    run for every served-API test module (they serve copies of it: ``serve_copy``)."""
    from tests.serving_fixtures import train_model_dir

    model_dir, orders = train_model_dir(tmp_path_factory.mktemp("model") / "model")
    done = orders[orders["status"] == "completed"].sort_values("completed_at")
    return model_dir, done
