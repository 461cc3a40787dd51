"""Migrations build exactly the schema the models describe, with the audit triggers, and tear it down again.

Each test migrates a fresh, empty database of its own (not the shared `engine` fixture's), on each backend.
"""

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy.exc
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import BigInteger, Engine, MetaData, Numeric, String, insert, inspect, text

from core.audit import AuditEntry
from core.db import make_engine
from migrations import runner
from migrations.metadata import DATABASE_ONLY_OBJECTS, include_object, target_metadata
from tests.conftest import create_pg_database, drop_pg_database

SQLITE_TRIGGERS = {"audit_entry_no_update", "audit_entry_no_delete"}


@pytest.fixture
def fresh_url(backend: str, tmp_path) -> Iterator[str]:
    """The URL of an empty database that only this test uses."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url = create_pg_database("labshare_migrations")
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def inspect_engine(fresh_url: str) -> Iterator[Engine]:
    engine = make_engine(fresh_url)
    yield engine
    engine.dispose()


def schema_differences(engine: Engine, metadata: MetaData = target_metadata) -> list:
    """Alembic's autogenerate comparison of the database with `metadata`, column types included.

    The default type comparison is kept on purpose, and is correct for our TypeDecorators: Alembic
    compares the DDL the dialect's type compiler renders for the model's type with the reflected one, and
    the compiler renders a TypeDecorator through its dialect implementation (`load_dialect_impl`). So
    `Money` compares as BIGINT on SQLite and NUMERIC(14, 2) on PostgreSQL, `UtcDateTime` as DATETIME and
    TIMESTAMP WITH TIME ZONE, exactly what the migration created; no spurious differences arise, and
    test_type_differences_are_detected shows that a real one would be reported.

    `include_object` is the filter migrations/env.py gives autogenerate: it leaves out the few objects the
    migrations create in SQL that the models cannot express (a PostgreSQL trigram index).
    """
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                               "include_object": include_object})
        diffs = compare_metadata(context, metadata)
    flat = []
    for diff in diffs:  # column changes come grouped in lists, table and index changes as tuples
        flat.extend(diff if isinstance(diff, list) else [diff])
    return flat


def head_revision() -> str:
    return ScriptDirectory.from_config(runner.alembic_config("sqlite://")).get_current_head()


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def audit_triggers(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            return set(connection.scalars(text(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_entry'")))
        return set(connection.scalars(text(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_entry'::regclass AND NOT tgisinternal")))


def audit_functions(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(text("SELECT proname FROM pg_proc WHERE proname LIKE 'audit_entry%'")))


def expected_triggers(engine: Engine) -> set[str]:
    return SQLITE_TRIGGERS if engine.dialect.name == "sqlite" else {"audit_entry_append_only"}


def assert_audit_log_is_append_only(engine: Engine) -> None:
    with engine.connect() as connection, connection.begin() as transaction:
        connection.execute(insert(AuditEntry.__table__).values(at=datetime(2026, 1, 1, tzinfo=UTC),
                                                                action="migration.checked", data={}))
        for statement in ("UPDATE audit_entry SET action = 'tampered'", "DELETE FROM audit_entry"):
            with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"), connection.begin_nested():
                connection.execute(text(statement))
        assert connection.scalar(text("SELECT action FROM audit_entry")) == "migration.checked"
        transaction.rollback()


def test_the_fresh_database_is_empty(inspect_engine):
    assert table_names(inspect_engine) == set()


def test_upgrade_builds_exactly_the_schema_of_the_models(fresh_url, inspect_engine):
    runner.upgrade(fresh_url)

    assert runner.current_revision(inspect_engine) == head_revision()
    assert table_names(inspect_engine) == set(target_metadata.tables) | {"alembic_version"}
    assert schema_differences(inspect_engine) == []


def test_the_objects_left_out_of_the_comparison_do_exist(fresh_url, inspect_engine):
    """What include_object hides from the comparison must be checked here instead (PostgreSQL only)."""
    runner.upgrade(fresh_url)

    with inspect_engine.connect() as connection:
        if inspect_engine.dialect.name == "postgresql":
            names = set(connection.scalars(text("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")))
            assert DATABASE_ONLY_OBJECTS.issubset(names)
        else:
            names = set(connection.scalars(text("SELECT name FROM sqlite_master")))
            assert not DATABASE_ONLY_OBJECTS & names


def test_money_and_time_columns_have_the_types_of_their_dialect(fresh_url, inspect_engine):
    runner.upgrade(fresh_url)

    columns = {c["name"]: c["type"] for c in inspect(inspect_engine).get_columns("resource")}
    money, created = columns["original_value"], columns["created_at"]
    if inspect_engine.dialect.name == "sqlite":
        assert isinstance(money, BigInteger)  # integer fen: SQLite's NUMERIC would be a float
    else:
        assert isinstance(money, Numeric)
        assert (money.precision, money.scale) == (14, 2)
        assert created.timezone is True  # timestamptz


def test_type_differences_are_detected(fresh_url, inspect_engine):
    """The comparison above is not vacuous: a column whose type differs from the model's is reported."""
    runner.upgrade(fresh_url)
    altered = MetaData(naming_convention=target_metadata.naming_convention)
    for table in target_metadata.sorted_tables:
        table.to_metadata(altered)
    altered.tables["resource"].c.original_value.type = String(20)

    diffs = schema_differences(inspect_engine, altered)

    assert [(d[0], d[2], d[3]) for d in diffs] == [("modify_type", "resource", "original_value")]


def test_upgrade_creates_the_audit_triggers(fresh_url, inspect_engine):
    runner.upgrade(fresh_url)

    assert audit_triggers(inspect_engine) == expected_triggers(inspect_engine)
    if inspect_engine.dialect.name == "postgresql":
        assert audit_functions(inspect_engine) == {"audit_entry_append_only"}
    assert_audit_log_is_append_only(inspect_engine)


def test_downgrade_to_base_leaves_nothing_but_the_version_table(fresh_url, inspect_engine):
    runner.upgrade(fresh_url)

    runner.downgrade(fresh_url, "base")

    assert table_names(inspect_engine) == {"alembic_version"}
    assert runner.current_revision(inspect_engine) is None
    with inspect_engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM alembic_version")) == 0
        if inspect_engine.dialect.name == "sqlite":
            leftovers = set(connection.scalars(text(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND tbl_name <> 'alembic_version'")))
            assert leftovers == set()  # no trigger, index or view outlived its table
    if inspect_engine.dialect.name == "postgresql":
        assert audit_functions(inspect_engine) == set()


def test_upgrade_after_downgrade_rebuilds_the_same_schema(fresh_url, inspect_engine):
    runner.upgrade(fresh_url)
    runner.downgrade(fresh_url, "base")

    runner.upgrade(fresh_url)

    assert runner.current_revision(inspect_engine) == head_revision()
    assert schema_differences(inspect_engine) == []
    assert audit_triggers(inspect_engine) == expected_triggers(inspect_engine)
    assert_audit_log_is_append_only(inspect_engine)


def test_upgrade_is_idempotent_at_head(fresh_url, inspect_engine):
    runner.upgrade(fresh_url)
    runner.upgrade(fresh_url)

    assert runner.current_revision(inspect_engine) == head_revision()
    assert schema_differences(inspect_engine) == []


def test_upgrade_accepts_an_engine(fresh_url, inspect_engine):
    runner.upgrade(inspect_engine)

    assert runner.current_revision(inspect_engine) == head_revision()
    assert audit_triggers(inspect_engine) == expected_triggers(inspect_engine)
