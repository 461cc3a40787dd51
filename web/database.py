"""One SQLAlchemy session per request; routes commit once, at the end of their unit of work."""

from __future__ import annotations

from flask import Flask, current_app, g, request
from sqlalchemy.orm import Session, sessionmaker

from core.db import begin_write

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def init_app(app: Flask, session_factory: sessionmaker[Session]) -> None:
    app.extensions["labshare.sessions"] = session_factory

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        db: Session | None = g.pop("db", None)
        if db is not None:
            db.close()  # anything not committed is rolled back


def commit_and_continue(db: Session) -> None:
    """Commit, and go on in a new transaction of the same kind (a writer's keeps SQLite's write lock)."""
    db.commit()
    if request and request.method not in SAFE_METHODS:
        begin_write(db)


def get_db() -> Session:
    if "db" not in g:
        g.db = current_app.extensions["labshare.sessions"]()
        if request and request.method not in SAFE_METHODS:
            # Writes take SQLite's write lock from the first statement (no-op on PostgreSQL), so services
            # that check before they write are serialised there (booking.locking).
            begin_write(g.db)
    return g.db
