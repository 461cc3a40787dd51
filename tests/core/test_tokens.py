"""API tokens: shown once, stored as a SHA-256 digest, named uniquely per user, checked and revoked."""

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from core.accounts import tokens
from core.accounts.models import ApiToken, Role
from core.accounts.tokens import create_token, revoke_token, tokens_of, user_for_token
from core.audit import AuditEntry
from core.errors import Forbidden, InvalidInput, InvalidToken, NotFound
from tests.factories import make_token, make_user

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def counts(db) -> dict[str, int]:
    db.flush()
    return {model.__tablename__: db.scalar(select(func.count()).select_from(model)) for model in (ApiToken, AuditEntry)}


def entries(db, action: str) -> list[AuditEntry]:
    return list(db.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


class Clock:
    """Stands in for core.accounts.tokens.utcnow."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock(T0)
    monkeypatch.setattr(tokens, "utcnow", clock)
    return clock


# --- creation ------------------------------------------------------------------------------------------------

def test_create_token_shows_the_secret_once_and_stores_only_its_digest(db):
    user = make_user(db)

    token, secret = create_token(db, user, user, "  laptop script  ")
    db.commit()

    assert re.fullmatch(r"lsk_[A-Za-z0-9_-]{43}", secret)
    assert len(secret) == 47
    assert token.name == "laptop script"
    assert token.user_id == user.id
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert token.prefix == secret[:8]
    assert token.active
    assert token.last_used_at is None
    row = db.execute(text("SELECT * FROM api_token WHERE id = :id"), {"id": token.id}).mappings().one()
    for column, value in row.items():
        assert secret not in str(value), column
        assert secret[4:] not in str(value), column  # nor the random part without its marker
    assert tokens_of(db, user) == [token]


def test_secrets_are_random(db):
    user = make_user(db)

    secrets = {make_token(db, user)[1] for _ in range(5)}

    assert len(secrets) == 5


def test_create_token_is_audited_without_the_secret(db):
    user = make_user(db)

    token, secret = create_token(db, user, user, "ci")
    db.flush()

    [entry] = entries(db, "api_token.created")
    assert (entry.actor_id, entry.target_type, entry.target_id) == (user.id, "api_token", str(token.id))
    assert entry.data == {"owner_id": user.id, "name": "ci"}
    assert secret not in str(entry.data)


@pytest.mark.parametrize("name", ["", "   ", None, "x" * 101])
def test_a_token_needs_a_name_of_1_to_100_characters(db, name):
    user = make_user(db)
    before = counts(db)

    with pytest.raises(InvalidInput) as caught:
        create_token(db, user, user, name)

    assert set(caught.value.fields) == {"name"}
    assert counts(db) == before


def test_a_name_of_100_characters_is_accepted(db):
    user = make_user(db)

    token, _ = create_token(db, user, user, "x" * 100)

    assert token.name == "x" * 100


def test_token_names_are_unique_per_user(db):
    user, other = make_user(db), make_user(db)
    create_token(db, user, user, "ci")
    before = counts(db)

    with pytest.raises(InvalidInput) as caught:
        create_token(db, user, user, " ci ")
    assert caught.value.fields == {"name": ["You already have a token with this name."]}
    assert counts(db) == before

    token, _ = create_token(db, other, other, "ci")  # another user may use the same name
    assert token.user_id == other.id


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.LAB_MANAGER, Role.FINANCE])
def test_a_non_admin_cannot_create_a_token_for_someone_else(db, role):
    actor, owner = make_user(db, roles=(role,)), make_user(db)
    before = counts(db)

    with pytest.raises(Forbidden):
        create_token(db, actor, owner, "sneaky")

    assert counts(db) == before
    assert tokens_of(db, owner) == []


def test_an_admin_can_create_a_token_for_someone_else(db):
    admin, owner = make_user(db, roles=(Role.ADMIN,)), make_user(db)

    token, secret = create_token(db, admin, owner, "device gateway")
    db.flush()

    assert token.user_id == owner.id
    assert user_for_token(db, secret) is owner
    [entry] = entries(db, "api_token.created")
    assert (entry.actor_id, entry.data["owner_id"]) == (admin.id, owner.id)


# --- lookup --------------------------------------------------------------------------------------------------

def test_user_for_token_returns_the_owner_and_records_the_use(db, clock):
    token, secret = make_token(db)

    assert user_for_token(db, secret) is token.user
    db.commit()
    db.expire_all()

    assert db.get(ApiToken, token.id).last_used_at == T0


def test_last_used_at_is_written_at_most_once_a_minute(db, clock):
    token, secret = make_token(db)
    user_for_token(db, secret)
    db.commit()

    for later in (timedelta(seconds=1), timedelta(seconds=59), timedelta(seconds=59, microseconds=999999)):
        clock.now = T0 + later
        user_for_token(db, secret)
        db.commit()
        db.expire_all()
        assert db.get(ApiToken, token.id).last_used_at == T0

    clock.now = T0 + timedelta(minutes=1)
    user_for_token(db, secret)
    db.commit()
    db.expire_all()
    assert db.get(ApiToken, token.id).last_used_at == T0 + timedelta(minutes=1)


@pytest.mark.parametrize("presented", [
    pytest.param("", id="empty"),
    pytest.param(None, id="none"),
    pytest.param("lsk_", id="marker-only"),
    pytest.param("lsk_" + "a" * 42, id="one-short"),
    pytest.param("lsk_" + "a" * 44, id="one-long"),
    pytest.param("LSK_" + "a" * 43, id="marker-case"),
    pytest.param("tok_" + "a" * 43, id="wrong-marker"),
    pytest.param("lsk_" + "a" * 42 + "=", id="padding"),
    pytest.param("lsk_" + "a" * 42 + "/", id="not-url-safe"),
    pytest.param("Bearer lsk_" + "a" * 43, id="with-scheme"),
    pytest.param(" lsk_" + "a" * 43, id="leading-space"),
    pytest.param("lsk_" + "a" * 43 + "\n", id="trailing-newline"),
])
def test_a_malformed_token_is_refused(db, clock, presented):
    with pytest.raises(InvalidToken) as caught:
        user_for_token(db, presented)

    assert caught.value.reason == "malformed"
    assert caught.value.details == {"reason": "malformed"}
    assert caught.value.code == "invalid_token"


def test_an_unknown_token_is_refused(db, clock):
    _token, secret = make_token(db)
    forged = secret[:-1] + ("A" if secret[-1] != "A" else "B")

    with pytest.raises(InvalidToken) as caught:
        user_for_token(db, forged)

    assert caught.value.reason == "unknown"


def test_a_revoked_token_is_refused_and_its_use_not_recorded(db, clock):
    token, secret = make_token(db)
    revoke_token(db, token.user, token.id)
    db.commit()

    with pytest.raises(InvalidToken) as caught:
        user_for_token(db, secret)

    assert caught.value.reason == "revoked"
    db.commit()
    db.expire_all()
    assert db.get(ApiToken, token.id).last_used_at is None


def test_the_token_of_a_disabled_account_is_refused(db, clock):
    user = make_user(db, active=False)
    token, secret = make_token(db, user)
    db.commit()

    with pytest.raises(InvalidToken) as caught:
        user_for_token(db, secret)

    assert caught.value.reason == "account_disabled"
    db.commit()
    db.expire_all()
    assert db.get(ApiToken, token.id).last_used_at is None


def test_reasons_have_distinct_messages():
    messages = {reason: str(InvalidToken(reason)) for reason in ("malformed", "unknown", "revoked", "account_disabled")}

    assert len(set(messages.values())) == 4


# --- revocation ----------------------------------------------------------------------------------------------

def test_the_owner_revokes_a_token_and_it_is_audited(db, clock):
    token, _ = make_token(db)
    owner = token.user

    assert revoke_token(db, owner, token.id) is token
    db.commit()
    db.expire_all()

    stored = db.get(ApiToken, token.id)
    assert stored.revoked_at == T0
    assert not stored.active
    [entry] = entries(db, "api_token.revoked")
    assert (entry.actor_id, entry.target_type, entry.target_id) == (owner.id, "api_token", str(token.id))
    assert entry.data == {"owner_id": owner.id, "name": token.name}


def test_an_admin_revokes_anyones_token(db, clock):
    token, _ = make_token(db)
    admin = make_user(db, roles=(Role.ADMIN,))

    revoke_token(db, admin, token.id)
    db.commit()
    db.expire_all()

    assert db.get(ApiToken, token.id).revoked_at == T0
    [entry] = entries(db, "api_token.revoked")
    assert entry.actor_id == admin.id


def test_revoking_twice_keeps_the_first_time_and_audits_once(db, clock):
    token, _ = make_token(db)
    revoke_token(db, token.user, token.id)
    db.commit()

    clock.now = T0 + timedelta(hours=1)
    revoke_token(db, token.user, token.id)
    db.commit()
    db.expire_all()

    assert db.get(ApiToken, token.id).revoked_at == T0
    assert len(entries(db, "api_token.revoked")) == 1


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.LAB_MANAGER, Role.FINANCE])
def test_a_stranger_cannot_revoke_a_token_and_learns_nothing(db, clock, role):
    token, secret = make_token(db)
    stranger = make_user(db, roles=(role,), organisation=token.user.organisation)
    db.commit()
    before = counts(db)

    with pytest.raises(NotFound) as caught:
        revoke_token(db, stranger, token.id)

    assert caught.value.details == {"kind": "api_token", "id": str(token.id)}
    db.commit()
    db.expire_all()
    assert db.get(ApiToken, token.id).revoked_at is None
    assert counts(db) == before
    assert user_for_token(db, secret).id == token.user_id


def test_revoking_a_token_that_does_not_exist_is_not_found(db):
    user = make_user(db, roles=(Role.ADMIN,))
    before = counts(db)

    with pytest.raises(NotFound):
        revoke_token(db, user, 987654321)

    assert counts(db) == before


def test_tokens_of_lists_only_the_users_tokens_oldest_first(db):
    user, other = make_user(db), make_user(db)
    newer, _ = make_token(db, user, "created later")  # inserted first: the order is by time, not by id
    older, _ = make_token(db, user, "created earlier")
    make_token(db, other, "someone else's")
    newer.created_at, older.created_at = T0 + timedelta(minutes=1), T0
    db.commit()

    assert tokens_of(db, user) == [older, newer]
    assert tokens_of(db, make_user(db)) == []
