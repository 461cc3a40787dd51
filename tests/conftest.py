"""Fixtures: a real database per backend (SQLite and PostgreSQL), a savepoint per test, the app and its client.

Every test that uses `db` or `app` runs once against SQLite and once against PostgreSQL. PostgreSQL is the
server on 127.0.0.1:5432 (or LABSHARE_TEST_PG_ADMIN_URL); each run creates its own database and drops it
at the end. LABSHARE_TEST_BACKENDS=sqlite limits a local run to SQLite; CI runs both.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, make_url
from sqlalchemy.orm import Session

from core.db import make_engine
from core.settings import load_settings
from migrations import runner

BACKENDS = [b.strip() for b in os.environ.get("LABSHARE_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]
PG_ADMIN_URL = os.environ.get("LABSHARE_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_admin_conninfo() -> str:
    url = make_url(PG_ADMIN_URL)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_pg_database(prefix: str = "labshare_test") -> str:
    """Create an empty database and return its SQLAlchemy URL; fail loudly if PostgreSQL is not there."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        with psycopg.connect(_pg_admin_conninfo(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc}); start it, point "
                    "LABSHARE_TEST_PG_ADMIN_URL at one, or set LABSHARE_TEST_BACKENDS=sqlite", pytrace=False)
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    assert name
    assert re.fullmatch(r"[a-z0-9_]+", name)
    with psycopg.connect(_pg_admin_conninfo(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'labshare.db'}"
    return create_pg_database()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def engine(backend: str, tmp_path_factory) -> Iterator[Engine]:
    """A migrated database of the backend, shared by the session's tests (each test runs in a savepoint)."""
    url = fresh_database_url(backend, tmp_path_factory)
    engine = make_engine(url)
    runner.upgrade(engine)
    yield engine
    engine.dispose()
    if backend == "postgresql":
        drop_pg_database(url)


@pytest.fixture
def connection(engine: Engine):
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.execution_options(sqlite_begin="IMMEDIATE")  # as web requests that write do
        transaction = connection.begin()
        yield connection
        transaction.rollback()


def _savepoint_session(connection) -> Session:
    # Commits inside the code under test release a savepoint; the outer transaction is rolled back.
    return Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)


@pytest.fixture
def db(connection) -> Iterator[Session]:
    session = _savepoint_session(connection)
    yield session
    session.close()


@pytest.fixture
def settings(engine: Engine):
    return load_settings(environ={}, env="test", database_url=engine.url.render_as_string(hide_password=False))


@pytest.fixture
def app(settings, engine, connection):
    from web import create_app

    app = create_app(settings, engine=engine, testing=True)
    app.extensions["labshare.sessions"] = lambda: _savepoint_session(connection)
    return app


@pytest.fixture
def client(app):
    return app.test_client()


class Auth:
    """Signs in through the real form, CSRF token included."""

    def __init__(self, client):
        self.client = client

    def csrf_token(self, path: str = "/login") -> str:
        page = self.client.get(path).get_data(as_text=True)
        match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
            r'name="csrf-token" content="([^"]+)"', page)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def login(self, email: str, password: str, **extra):
        token = self.csrf_token("/login")
        return self.client.post("/login", data={"email": email, "password": password, "csrf_token": token,
                                                **extra})

    def logout(self):
        return self.client.post("/logout", data={"csrf_token": self.csrf_token("/")})


@pytest.fixture
def auth(client) -> Auth:
    return Auth(client)


# --- private services for integration tests ------------------------------------------------------------

@pytest.fixture(scope="session")
def mosquitto():
    """A private Mosquitto with the shipped configuration (docs/mosquitto/mosquitto.conf), anonymous access."""
    from tests.services import MosquittoServer

    with MosquittoServer() as server:
        yield server


@pytest.fixture(scope="session")
def influxdb():
    """A private InfluxDB 1.x (Debian's influxd) on free loopback ports."""
    from tests.services import InfluxDBServer

    with InfluxDBServer() as server:
        yield server


@pytest.fixture(scope="session")
def influx_v2_gateway(influxdb):
    """TEST FAKE of InfluxDB >= 1.8's /api/v2/write compatibility endpoint, in front of `influxdb`."""
    from tests.services import InfluxV2Gateway

    with InfluxV2Gateway(influxdb) as gateway:
        yield gateway


# --- a summary per database backend, for the closing lines of a run -----------------------------------

def pytest_terminal_summary(terminalreporter) -> None:
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") not in ("call", "setup") or (
                    outcome == "passed" and report.when != "call"):
                continue
            match = re.search(r"\[(?:[^\]]*-)?(sqlite|postgresql)(?:-[^\]]*)?\]", report.nodeid)
            key = match.group(1) if match else "backend-independent"
            counts.setdefault(key, {}).setdefault(outcome, 0)
            counts[key][outcome] += 1
    if counts:
        terminalreporter.section("tests per database backend")
        for key in ("sqlite", "postgresql", "backend-independent"):
            if key in counts:
                parts = ", ".join(f"{n} {outcome}" for outcome, n in counts[key].items())
                terminalreporter.write_line(f"{key}: {parts}")
