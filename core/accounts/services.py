"""Account services: organisations, users, sign-in and profiles.

Each takes the session and the acting user, validates, writes, audits, and leaves the commit to the caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from core import audit
from core.accounts.credit_code import InvalidCreditCode, validate_credit_code
from core.accounts.models import (
    Affiliation,
    Locale,
    Organisation,
    OrganisationKind,
    OrganisationStatus,
    Role,
    User,
    UserRole,
)
from core.accounts.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    hash_password,
    needs_rehash,
    verify_password,
)
from core.errors import N_, AccountDisabled, Forbidden, InvalidCredentials, InvalidInput, Message, NotFound
from core.regions import SICHUAN_CITIES
from core.timeutil import utcnow

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

CREDIT_CODE_MESSAGES = {
    "length": N_("A unified social credit code has 18 characters."),
    "authority": N_("The first character is not a known registration authority."),
    "charset": N_("Character %(position)s is not allowed in a unified social credit code."),
    "division": N_("Characters 3 to 8 must be an administrative division code."),
    "org_code_check": N_("The organisation code inside the credit code has a wrong check character."),
    "check_character": N_("The last character does not match: this credit code has a typo."),
}


class OrganisationPending(AccountDisabled):
    """Right password, but the user's organisation registered itself and waits for a platform admin."""

    code = "organisation_pending"
    message = N_("Your organisation's registration is waiting for approval by a platform administrator. "
                 "You can sign in once it is approved; we will tell you by e-mail.")


class OrganisationRejected(AccountDisabled):
    code = "organisation_rejected"
    message = N_("Your organisation's registration was not approved, so this account cannot sign in. "
                 "The e-mail we sent you gives the reason; you may register again.")


@dataclass(frozen=True)
class OrganisationData:
    name_zh: str
    name_en: str
    credit_code: str
    kind: str
    city: str
    tech_sme: bool = False


def _require_admin(actor: User | None) -> None:
    # actor None means the system itself (migrations, the seed command run by an operator)
    if actor is not None and not actor.has_role(Role.ADMIN):
        raise Forbidden()


def create_organisation(db: Session, actor: User | None, data: OrganisationData) -> Organisation:
    _require_admin(actor)
    errors: dict[str, list[str]] = {}
    code = data.credit_code
    try:
        code = validate_credit_code(data.credit_code)
    except InvalidCreditCode as exc:
        message = CREDIT_CODE_MESSAGES.get(exc.reason, CREDIT_CODE_MESSAGES["check_character"])
        errors["credit_code"] = [Message(message, position=exc.position) if "%(" in message else message]
    else:
        if db.scalar(select(Organisation.id).where(Organisation.credit_code == code)):
            errors["credit_code"] = [N_("An organisation with this credit code is already registered.")]
    for field in ("name_zh", "name_en"):
        value = getattr(data, field).strip()
        if not value or len(value) > 200:
            errors[field] = [N_("Enter a name of 1 to 200 characters.")]
    if data.kind not in {k.value for k in OrganisationKind}:
        errors["kind"] = [N_("Unknown kind of organisation.")]
    if data.city not in SICHUAN_CITIES:
        errors["city"] = [N_("Unknown city or prefecture.")]
    if errors:
        raise InvalidInput(errors)
    org = Organisation(name_zh=data.name_zh.strip(), name_en=data.name_en.strip(), credit_code=code,
                       kind=OrganisationKind(data.kind), city=data.city, tech_sme=data.tech_sme)
    db.add(org)
    db.flush()
    audit.record(db, actor, "organisation.created", org, credit_code=code)
    return org


def declare_affiliation(db: Session, actor: User | None, org: Organisation, related: Organisation) -> None:
    _require_admin(actor)
    if org.id == related.id:
        raise InvalidInput({"related": [N_("An organisation cannot be affiliated with itself.")]})
    if db.get(Affiliation, (org.id, related.id)) is None:
        db.add(Affiliation(organisation_id=org.id, related_id=related.id))
        audit.record(db, actor, "organisation.affiliation_declared", org, related_id=related.id)


def are_related(db: Session, a_id: int, b_id: int) -> bool:
    """Same organisation, or an affiliation declared by either side."""
    if a_id == b_id:
        return True
    return db.scalar(
        select(func.count()).select_from(Affiliation).where(
            or_((Affiliation.organisation_id == a_id) & (Affiliation.related_id == b_id),
                (Affiliation.organisation_id == b_id) & (Affiliation.related_id == a_id)))
    ) > 0


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()


def is_valid_email(email: str) -> bool:
    """A normalised address that looks deliverable (the check create_user applies)."""
    return bool(_EMAIL_RE.match(email)) and len(email) <= 254


def password_errors(password: str) -> list[str]:
    """What is wrong with a new password (the rules every form that sets one applies)."""
    return _password_errors(password)


def _password_errors(password: str) -> list[str]:
    if len(password) < MIN_PASSWORD_LENGTH:
        return [N_("The password needs at least 8 characters.")]
    if len(password) > MAX_PASSWORD_LENGTH:
        return [N_("The password may have at most 256 characters.")]
    return []


def create_user(db: Session, actor: User | None, *, email: str, password: str, organisation: Organisation,
                name_zh: str, name_en: str = "", roles: Iterable[Role | str] = (Role.RESEARCHER,),
                locale: str = Locale.ZH_CN) -> User:
    _require_admin(actor)
    email = normalise_email(email)
    errors: dict[str, list[str]] = {}
    if not _EMAIL_RE.match(email) or len(email) > 254:
        errors["email"] = [N_("Enter a valid e-mail address.")]
    elif db.scalar(select(User.id).where(User.email == email)):
        errors["email"] = [N_("A user with this e-mail address already exists.")]
    if pw_errors := _password_errors(password):
        errors["password"] = pw_errors
    if not name_zh.strip() or len(name_zh) > 100:
        errors["name_zh"] = [N_("Enter a name of 1 to 100 characters.")]
    role_values = set()
    for role in roles:
        if role not in {r.value for r in Role}:
            errors["roles"] = [Message(N_("Unknown role: %(role)s."), role=str(role))]
        else:
            role_values.add(Role(role))
    if not role_values and "roles" not in errors:
        errors["roles"] = [N_("Give the user at least one role.")]
    if locale not in {loc.value for loc in Locale}:
        errors["locale"] = [N_("Unknown language.")]
    if errors:
        raise InvalidInput(errors)
    user = User(email=email, password_hash=hash_password(password), organisation=organisation,
                name_zh=name_zh.strip(), name_en=(name_en or name_zh).strip(), locale=Locale(locale),
                role_grants=[UserRole(role=r) for r in sorted(role_values)])
    db.add(user)
    db.flush()
    audit.record(db, actor, "user.created", user, email=email, roles=sorted(role_values))
    return user


def set_roles(db: Session, actor: User, user: User, roles: Iterable[Role]) -> None:
    _require_admin(actor)
    roles = list(roles)
    unknown = [r for r in roles if r not in {role.value for role in Role}]
    if unknown:
        raise InvalidInput({"roles": [Message(N_("Unknown role: %(role)s."), role=str(unknown[0]))]})
    wanted = {Role(r) for r in roles}
    if not wanted:
        raise InvalidInput({"roles": [N_("Give the user at least one role.")]})
    before = sorted(user.roles)
    user.role_grants = [g for g in user.role_grants if g.role in wanted] + [
        UserRole(role=r) for r in sorted(wanted - user.roles)]
    audit.record(db, actor, "user.roles_changed", user, before=before, after=sorted(wanted))


def authenticate(db: Session, email: str, password: str) -> User:
    """The user with these credentials, with the sign-in recorded; InvalidCredentials otherwise."""
    user = db.scalar(select(User).where(User.email == normalise_email(email)))
    if not verify_password(user.password_hash if user else None, password or ""):
        raise InvalidCredentials()
    # verify_password is only true for an existing user; only its owner learns why the account cannot sign in
    if user.organisation.status == OrganisationStatus.PENDING:
        raise OrganisationPending()
    if user.organisation.status == OrganisationStatus.REJECTED:
        raise OrganisationRejected()
    if not user.active:
        raise AccountDisabled()
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    return user


def update_profile(db: Session, actor: User, *, name_zh: str, name_en: str, locale: str) -> User:
    errors: dict[str, list[str]] = {}
    if not name_zh.strip() or len(name_zh) > 100:
        errors["name_zh"] = [N_("Enter a name of 1 to 100 characters.")]
    if len(name_en) > 100:
        errors["name_en"] = [N_("Enter a name of at most 100 characters.")]
    if locale not in {loc.value for loc in Locale}:
        errors["locale"] = [N_("Unknown language.")]
    if errors:
        raise InvalidInput(errors)
    actor.name_zh, actor.name_en, actor.locale = name_zh.strip(), (name_en.strip() or name_zh.strip()), Locale(locale)
    return actor


def change_password(db: Session, actor: User, *, current: str, new: str) -> None:
    if not verify_password(actor.password_hash, current or ""):
        raise InvalidInput({"current_password": [N_("The current password is wrong.")]})
    if errors := _password_errors(new or ""):
        raise InvalidInput({"new_password": errors})
    actor.password_hash = hash_password(new)
    audit.record(db, actor, "user.password_changed", actor)


def find_user_by_email(db: Session, email: str) -> User:
    user = db.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        raise NotFound("user", normalise_email(email))
    return user
