"""Organisation self-registration: an organisation registers itself with its first user on the public page,
waits (pending, the user inactive), and a platform admin approves or rejects it.

The unique constraints on `organisation.credit_code` and `user_account.email` are what refuses a duplicate,
also when two registrations race: the insert runs in a savepoint, and an IntegrityError becomes the same
friendly `DuplicateRegistration` the up-front check gives.

A rejected registration keeps its rows (the decision and its reason stay visible to admins; the audit log
says who decided). The same credit code may register again later: the rejected organisation row is taken
up again (back to pending, with the new details), and so is the applicant's account when the new
registration uses the same e-mail address. An account is only ever taken up while it is inactive, has never
signed in and belongs to a rejected organisation: nothing a real user owns can be taken over.

Services take the session and the acting user (None: the anonymous applicant, or the system) and leave the
commit to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import audit
from core.accounts.credit_code import InvalidCreditCode, validate_credit_code
from core.accounts.models import Locale, Organisation, OrganisationKind, OrganisationStatus, Role, User, UserRole
from core.accounts.passwords import hash_password
from core.accounts.services import (
    CREDIT_CODE_MESSAGES,
    is_valid_email,
    normalise_email,
    password_errors,
)
from core.errors import N_, Conflict, Forbidden, InvalidInput, Message, NotFound
from core.i18n import gettext_for
from core.mail import enqueue
from core.regions import SICHUAN_CITIES
from core.timeutil import utcnow

MAX_REASON_LENGTH = 500

CREDIT_CODE_TAKEN = N_("An organisation with this credit code is already registered or waiting for approval. "
                       "If you work there, ask its administrator or the platform administrators for an account.")
EMAIL_TAKEN = N_("This e-mail address already belongs to an account. Sign in with it, or use another address.")


class DuplicateRegistration(InvalidInput):
    """The credit code or the e-mail address is taken; `fields` says which (and nothing about who has it)."""

    code = "already_registered"
    message = N_("This organisation or e-mail address is already registered.")


class RegistrationDecided(Conflict):
    code = "registration_decided"
    message = N_("This registration has already been decided.")


@dataclass(frozen=True)
class RegistrationData:
    """What the public registration form collects: the organisation and its first user."""

    name_zh: str
    name_en: str
    credit_code: str
    kind: str
    city: str
    tech_sme: bool
    user_name_zh: str
    user_name_en: str
    email: str
    password: str
    locale: str = Locale.ZH_CN


def _validate(data: RegistrationData) -> tuple[str, str, dict[str, list[str]]]:
    """The normalised credit code and e-mail address, and every field error (a field name → messages)."""
    errors: dict[str, list[str]] = {}
    code = (data.credit_code or "").strip()
    try:
        code = validate_credit_code(code)
    except InvalidCreditCode as exc:
        message = CREDIT_CODE_MESSAGES.get(exc.reason, CREDIT_CODE_MESSAGES["check_character"])
        errors["credit_code"] = [Message(message, position=exc.position) if "%(" in message else message]
    for name in ("name_zh", "name_en"):
        value = (getattr(data, name) or "").strip()
        if not value or len(value) > 200:
            errors[name] = [N_("Enter a name of 1 to 200 characters.")]
    if data.kind not in {k.value for k in OrganisationKind}:
        errors["kind"] = [N_("Unknown kind of organisation.")]
    if data.city not in SICHUAN_CITIES:
        errors["city"] = [N_("Unknown city or prefecture.")]
    name_zh = (data.user_name_zh or "").strip()
    if not name_zh or len(name_zh) > 100:
        errors["user_name_zh"] = [N_("Enter a name of 1 to 100 characters.")]
    if len((data.user_name_en or "").strip()) > 100:
        errors["user_name_en"] = [N_("Enter a name of at most 100 characters.")]
    email = normalise_email(data.email)
    if not is_valid_email(email):
        errors["email"] = [N_("Enter a valid e-mail address.")]
    if problems := password_errors(data.password or ""):
        errors["password"] = problems
    if data.locale not in {loc.value for loc in Locale}:
        errors["locale"] = [N_("Unknown language.")]
    return code, email, errors


def _reusable_account(user: User) -> bool:
    """An applicant's account left behind by a rejected registration, which nobody has ever used."""
    return (not user.active and user.last_login_at is None
            and user.organisation.status == OrganisationStatus.REJECTED)


def register_organisation(db: Session, actor: User | None, data: RegistrationData, *,
                          now: datetime | None = None) -> Organisation:
    """A pending organisation with its first user (inactive until approved); platform admins are e-mailed.

    Raises InvalidInput for bad fields and DuplicateRegistration for a credit code or e-mail address that is
    taken (checked first, and guaranteed by the unique constraints under a race). On SQLite the caller's
    transaction must hold the write lock (core.db.begin_write), as every web POST does.
    """
    now = now or utcnow()
    code, email, errors = _validate(data)
    if errors:
        raise InvalidInput(errors)
    taken: dict[str, list[str]] = {}
    org = db.scalar(select(Organisation).where(Organisation.credit_code == code).with_for_update())
    if org is not None and org.status != OrganisationStatus.REJECTED:
        taken["credit_code"] = [CREDIT_CODE_TAKEN]
    user = db.scalar(select(User).where(User.email == email).with_for_update(of=User))
    if user is not None and not _reusable_account(user):
        taken["email"] = [EMAIL_TAKEN]
    if taken:
        raise DuplicateRegistration(taken)

    values: dict[str, Any] = dict(
        name_zh=data.name_zh.strip(), name_en=data.name_en.strip(), kind=OrganisationKind(data.kind),
        city=data.city, tech_sme=bool(data.tech_sme), status=OrganisationStatus.PENDING, registered_at=now,
        decided_at=None, decision_reason=None)
    try:
        with db.begin_nested():
            if org is None:
                org = Organisation(credit_code=code, **values)
                db.add(org)
            else:  # a rejected registration of this credit code, taken up again
                for name, value in values.items():
                    setattr(org, name, value)
                db.flush()
                # applicants of the earlier attempt who are not the one registering now never get in
                for stale in db.scalars(select(User).where(
                        User.organisation_id == org.id, User.active.is_(False), User.last_login_at.is_(None),
                        User.email != email)):
                    db.delete(stale)
            db.flush()
            user_values = dict(name_zh=data.user_name_zh.strip(),
                               name_en=(data.user_name_en or "").strip() or data.user_name_zh.strip(),
                               password_hash=hash_password(data.password), locale=Locale(data.locale),
                               organisation_id=org.id, active=False)
            if user is None:
                user = User(email=email, role_grants=[UserRole(role=Role.RESEARCHER)], **user_values)
                db.add(user)
            else:
                for name, value in user_values.items():
                    setattr(user, name, value)
                user.organisation = org
            db.flush()
    except IntegrityError as exc:
        raise _duplicate_from(exc) from exc
    audit.record(db, actor, "organisation.registered", org, credit_code=code, email=email, user_id=user.id)
    _notify_admins(db, org, user)
    return org


def _duplicate_from(exc: IntegrityError) -> DuplicateRegistration:
    """Which unique constraint a racing registration ran into (PostgreSQL names it; SQLite names the column)."""
    text = str(exc.orig)
    constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None) or ""
    if "email" in constraint or "user_account.email" in text:
        return DuplicateRegistration({"email": [EMAIL_TAKEN]})
    if "credit_code" in constraint or "organisation.credit_code" in text:
        return DuplicateRegistration({"credit_code": [CREDIT_CODE_TAKEN]})
    raise exc


def pending_registrations(db: Session) -> list[Organisation]:
    return list(db.scalars(select(Organisation).where(Organisation.status == OrganisationStatus.PENDING)
                           .order_by(Organisation.registered_at, Organisation.id)))


def applicants_of(db: Session, org: Organisation) -> list[User]:
    """The accounts that registered with the organisation and wait for the decision."""
    return list(db.scalars(select(User).where(User.organisation_id == org.id, User.last_login_at.is_(None))
                           .order_by(User.id)))


def _decide(db: Session, actor: User | None, org_id: int) -> Organisation:
    if actor is not None and not actor.has_role(Role.ADMIN):
        raise Forbidden()
    org = db.scalar(select(Organisation).where(Organisation.id == org_id).with_for_update())
    if org is None:
        raise NotFound("organisation", org_id)
    if org.status != OrganisationStatus.PENDING:
        raise RegistrationDecided(details={"status": str(org.status)})
    return org


def approve_registration(db: Session, actor: User | None, org_id: int, *, now: datetime | None = None) -> Organisation:
    """The organisation approved and its applicants' accounts activated; they are told by e-mail."""
    org = _decide(db, actor, org_id)
    org.status, org.decided_at, org.decision_reason = OrganisationStatus.APPROVED, now or utcnow(), None
    applicants = applicants_of(db, org)
    for user in applicants:
        user.active = True
    db.flush()
    audit.record(db, actor, "organisation.approved", org, credit_code=org.credit_code,
                 activated=[u.id for u in applicants])
    for user in applicants:
        _notify_applicant(db, org, user, "approved")
    return org


def reject_registration(db: Session, actor: User | None, org_id: int, reason: str, *,
                        now: datetime | None = None) -> Organisation:
    """The organisation rejected with a reason the applicants are e-mailed; their accounts stay inactive."""
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput({"reason": [N_("Give a reason of 1 to 500 characters; the applicant reads it.")]})
    org = _decide(db, actor, org_id)
    org.status, org.decided_at, org.decision_reason = OrganisationStatus.REJECTED, now or utcnow(), reason
    db.flush()
    audit.record(db, actor, "organisation.rejected", org, credit_code=org.credit_code, reason=reason)
    for user in applicants_of(db, org):
        _notify_applicant(db, org, user, "rejected")
    return org


# --- e-mails, each in its recipient's language --------------------------------------------------------------

ADMIN_SUBJECT = N_("New organisation registration: %(organisation)s")
# Bodies are lists of one-line messages (an empty string is a blank line), so each line translates on its own.
ADMIN_BODY = [N_("%(organisation)s (%(credit_code)s) has registered on LabShare and waits for approval."),
              N_("First user: %(user)s <%(email)s>"), "",
              N_("Approve or reject it under Administration → Organisations.")]
APPLICANT_SUBJECTS = {
    "approved": N_("Your organisation is approved: %(organisation)s"),
    "rejected": N_("Your organisation registration was not approved: %(organisation)s"),
}
APPLICANT_BODIES = {
    "approved": [N_("Dear %(user)s,"), "",
                 N_("%(organisation)s is now approved on LabShare. You can sign in with %(email)s and book "
                    "instruments and pilot lines.")],
    "rejected": [N_("Dear %(user)s,"), "", N_("The registration of %(organisation)s on LabShare was not approved."),
                 N_("Reason: %(reason)s"), "", N_("You may correct the details and register again.")],
}


def _body(translate, lines: list[str], values: dict[str, Any]) -> str:
    return "\n".join(translate(line) % values if line else "" for line in lines)


def _notify_admins(db: Session, org: Organisation, applicant: User) -> None:
    admins = db.scalars(select(User).join(UserRole).where(UserRole.role == Role.ADMIN, User.active.is_(True))
                        .order_by(User.id)).all()
    for admin in admins:
        locale = str(admin.locale)
        _ = gettext_for(locale)
        values = {"organisation": org.name(locale), "credit_code": org.credit_code,
                  "user": applicant.name(locale), "email": applicant.email}
        enqueue(db, to=admin.email, subject="[LabShare] " + _(ADMIN_SUBJECT) % values,
                body=_body(_, ADMIN_BODY, values), topic="organisation.registered", user_id=admin.id)


def _notify_applicant(db: Session, org: Organisation, user: User, decision: str) -> None:
    locale = str(user.locale)
    _ = gettext_for(locale)
    values = {"organisation": org.name(locale), "user": user.name(locale), "email": user.email,
              "reason": org.decision_reason or ""}
    enqueue(db, to=user.email, subject="[LabShare] " + _(APPLICANT_SUBJECTS[decision]) % values,
            body=_body(_, APPLICANT_BODIES[decision], values), topic=f"organisation.{decision}", user_id=user.id)
