"""Bearer-token authentication for the API; the session cookie is deliberately not accepted here."""

from __future__ import annotations

from flask import g, request

from core.accounts.models import User
from core.accounts.tokens import user_for_token
from core.errors import Unauthenticated
from web.api.blueprint import blp
from web.database import commit_and_continue, get_db


def current_api_user() -> User:
    return g.api_user


@blp.before_request
def _authenticate() -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthenticated()
    db = get_db()
    g.api_user = user_for_token(db, presented.strip())
    if db.dirty:  # last_used_at moved on: record it even if the request itself fails
        commit_and_continue(db)
