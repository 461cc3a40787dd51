"""SQL the reports need on both databases: a timestamp as whole seconds since the epoch.

Reading millions of timestamps as Python datetimes (and converting them) costs most of a provincial
report's time; the database hands out integers instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from sqlalchemy import BigInteger, Select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement, FunctionElement


class epoch_seconds(FunctionElement):
    """Whole seconds since 1970-01-01 UTC of a UtcDateTime column (floored)."""

    type = BigInteger()
    inherit_cache = True

    def __init__(self, column: ColumnElement):
        super().__init__(column)


@compiles(epoch_seconds, "postgresql")
def _postgresql(element, compiler, **kw) -> str:
    return f"CAST(floor(extract(epoch from {compiler.process(element.clauses, **kw)})) AS BIGINT)"


@compiles(epoch_seconds, "sqlite")
def _sqlite(element, compiler, **kw) -> str:
    # SQLite keeps the UTC wall time as text ("2026-03-16 01:00:00.000000"); strftime reads it as UTC
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


def stream_rows(db: Session, stmt: Select, batch: int) -> Iterator[tuple]:
    """Rows of `stmt` as plain tuples, `batch` at a time, in bounded memory.

    On PostgreSQL (psycopg) straight from a server-side cursor on the session's connection: building
    SQLAlchemy rows for millions of sessions and reservations would take as long as the report itself. Only
    for statements whose parameters need no type conversion (ints, aware datetimes, plain strings).
    Elsewhere through SQLAlchemy Core."""
    connection = db.connection()
    if connection.dialect.name != "postgresql" or connection.dialect.driver != "psycopg":
        result = connection.execute(stmt.execution_options(yield_per=batch))
        yield from (tuple(row) for rows in result.partitions() for row in rows)
        return
    compiled = stmt.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
    driver = connection.connection.driver_connection
    with driver.cursor(name=f"labshare_report_{next(_cursor_names)}") as cursor:
        cursor.itersize = batch
        cursor.execute(str(compiled), compiled.construct_params())
        while rows := cursor.fetchmany(batch):
            yield from rows


_cursor_names = itertools.count()
