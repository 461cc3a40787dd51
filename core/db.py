"""Database plumbing: the declarative `Base`, engines and the session factory."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import Enum, MetaData, create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from core.types import Money, UtcDateTime

# Stable constraint names, so that Alembic migrations can name what they alter or drop.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar = {datetime: UtcDateTime(), Decimal: Money()}


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the per-dialect settings LabShare relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)
        _configure_sqlite(engine, in_memory=parsed.database in (None, "", ":memory:"))
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine, *, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # pysqlite's own transaction handling breaks SAVEPOINT and delays BEGIN; we issue BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # IMMEDIATE takes SQLite's write lock at BEGIN: a transaction that checks-then-writes (an overlap
        # check before an insert) is then serialised against every other writer, as a row lock would.
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def str_enum(cls: type[enum.Enum], name: str) -> Enum:
    """An enum column stored as its value and checked by a constraint, not a native PostgreSQL type:
    adding a value later is then an ordinary migration on both databases."""
    return Enum(cls, name=name, native_enum=False, create_constraint=True, length=32,
                values_callable=lambda members: [m.value for m in members])


def begin_write(db: Session) -> None:
    """Start the session's transaction as a writer. On SQLite this takes the write lock at once (BEGIN
    IMMEDIATE), so a read-check-write sequence cannot interleave with another writer; elsewhere it is a
    no-op (PostgreSQL code takes row locks where it needs them)."""
    if db.get_bind().dialect.name != "sqlite":
        return
    if db.in_transaction():
        if holds_write_lock(db):
            return
        raise RuntimeError("begin_write() must be called before the session's first statement")
    db.connection(execution_options={"sqlite_begin": "IMMEDIATE"})


def holds_write_lock(db: Session) -> bool:
    return db.connection().get_execution_options().get("sqlite_begin") == "IMMEDIATE"
