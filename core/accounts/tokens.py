"""API tokens: creation, lookup by digest, revocation."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.accounts.models import ApiToken, Role, User
from core.errors import N_, Forbidden, InvalidInput, InvalidToken, NotFound
from core.timeutil import utcnow

TOKEN_PREFIX = "lsk_"  # noqa: S105 -- a public marker, not a secret
# "lsk_" + 43 url-safe base64 characters (32 random bytes): enough entropy that a plain SHA-256 digest is
# a safe thing to store, and cheap enough to check on every API request (argon2 is for passwords).
_TOKEN_RE = re.compile(r"^lsk_[A-Za-z0-9_-]{43}$")
# Writing last_used_at on every request would turn reads into writes; once a minute is precise enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(db: Session, actor: User, owner: User, name: str) -> tuple[ApiToken, str]:
    """Create a token for `owner`; returns the row and the secret, which is never retrievable again."""
    if actor.id != owner.id and not actor.has_role(Role.ADMIN):
        raise Forbidden()
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput({"name": [N_("Give the token a name of 1 to 100 characters.")]})
    if db.scalar(select(ApiToken.id).where(ApiToken.user_id == owner.id, ApiToken.name == name)):
        raise InvalidInput({"name": [N_("You already have a token with this name.")]})
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=owner.id, name=name, prefix=secret[:8], digest=_digest(secret))
    db.add(token)
    db.flush()
    audit.record(db, actor, "api_token.created", token, owner_id=owner.id, name=name)
    return token, secret


def revoke_token(db: Session, actor: User, token_id: int) -> ApiToken:
    token = db.get(ApiToken, token_id)
    if token is None or (token.user_id != actor.id and not actor.has_role(Role.ADMIN)):
        raise NotFound("api_token", token_id)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(db, actor, "api_token.revoked", token, owner_id=token.user_id, name=token.name)
    return token


def user_for_token(db: Session, presented: str) -> User:
    """The active user a presented token belongs to, or InvalidToken saying why not."""
    if not _TOKEN_RE.fullmatch(presented or ""):  # not match(): its "$" would accept a trailing newline
        raise InvalidToken("malformed")
    token = db.scalar(select(ApiToken).where(ApiToken.digest == _digest(presented)))
    if token is None:
        raise InvalidToken("unknown")
    if token.revoked_at is not None:
        raise InvalidToken("revoked")
    if not token.user.active:
        raise InvalidToken("account_disabled")
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        token.last_used_at = now
    return token.user


def tokens_of(db: Session, user: User) -> list[ApiToken]:
    return list(db.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at)))
