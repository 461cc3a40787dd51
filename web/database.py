"""One SQLAlchemy session per request; routes commit once, at the end of their unit of work."""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session, sessionmaker


def init_app(app: Flask, session_factory: sessionmaker[Session]) -> None:
    app.extensions["labshare.sessions"] = session_factory

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        db: Session | None = g.pop("db", None)
        if db is not None:
            db.close()  # anything not committed is rolled back


def get_db() -> Session:
    if "db" not in g:
        g.db = current_app.extensions["labshare.sessions"]()
    return g.db
