"""Accounts: organisations, affiliations, users, sign-in, roles, facility scopes and the append-only audit log."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy.exc
from argon2 import PasswordHasher
from sqlalchemy import func, select, text

from booking.models import FacilityManager
from booking.permissions import can_manage_facility, grant_facility_manager, managed_facility_ids
from core import audit
from core.accounts import services
from core.accounts.credit_code import credit_code_check_character, organisation_code_check_character
from core.accounts.models import Affiliation, Locale, Organisation, OrganisationKind, Role, User, UserRole
from core.accounts.passwords import verify_password
from core.accounts.services import (
    CREDIT_CODE_MESSAGES,
    OrganisationData,
    are_related,
    authenticate,
    change_password,
    create_organisation,
    create_user,
    declare_affiliation,
    set_roles,
)
from core.audit import AuditEntry
from core.errors import AccountDisabled, Forbidden, InvalidCredentials, InvalidInput
from tests.factories import PASSWORD, make_facility, make_organisation, make_user, unique_credit_code

VALID_CODE = "91510107MA62XK3R42"  # an enterprise in Wuhou district, Chengdu (see test_credit_code.py)
TABLES = (Organisation, Affiliation, User, UserRole, FacilityManager, AuditEntry)
FIXED_NOW = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)


def counts(db) -> dict[str, int]:
    db.flush()
    return {model.__tablename__: db.scalar(select(func.count()).select_from(model)) for model in TABLES}


def audit_entries(db, action: str | None = None) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    return list(db.scalars(query))


def with_checks(first16: str, org_check: str | None = None) -> str:
    """A code whose final check character is right; the organisation code check too unless `org_check`."""
    first17 = first16 + (org_check or organisation_code_check_character(first16[8:]))
    return first17 + credit_code_check_character(first17)


def org_data(**overrides) -> OrganisationData:
    values = dict(name_zh="四川大学", name_en="Sichuan University", credit_code=unique_credit_code(),
                  kind="university", city="510100", tech_sme=False)
    values.update(overrides)
    return OrganisationData(**values)


@pytest.fixture
def admin(db) -> User:
    return make_user(db, roles=(Role.ADMIN,))


# --- organisations -------------------------------------------------------------------------------------------

def test_create_organisation_normalises_stores_and_audits(db, admin):
    raw_code = " 9151 0107 ma62xk3r42 "  # as typed: spaces, lower case
    org = create_organisation(db, admin, org_data(
        name_zh=" 成都科创有限公司 ", name_en=" Chengdu Innovation Ltd. ", credit_code=raw_code,
        kind="enterprise", city="510100", tech_sme=True))
    db.commit()
    db.expire_all()

    stored = db.get(Organisation, org.id)
    assert stored.credit_code == VALID_CODE
    assert (stored.name_zh, stored.name_en) == ("成都科创有限公司", "Chengdu Innovation Ltd.")
    assert stored.kind is OrganisationKind.ENTERPRISE
    assert stored.city == "510100"
    assert stored.tech_sme is True
    [entry] = audit_entries(db, "organisation.created")
    assert (entry.actor_id, entry.target_type, entry.target_id) == (admin.id, "organisation", str(org.id))
    assert entry.data == {"credit_code": VALID_CODE}


def test_the_system_may_create_an_organisation_without_an_actor(db):
    org = create_organisation(db, None, org_data())
    db.flush()

    [entry] = audit_entries(db, "organisation.created")
    assert entry.actor_id is None
    assert entry.target_id == str(org.id)


@pytest.mark.parametrize(("code", "reason", "position"), [
    pytest.param(VALID_CODE[:17], "length", None, id="too-short"),
    pytest.param(VALID_CODE + "0", "length", None, id="too-long"),
    pytest.param("", "length", None, id="empty"),
    pytest.param("91510107MI62XK3R42", "charset", 10, id="charset-I"),
    pytest.param("91510107MA62XK3R4O", "charset", 18, id="charset-O"),
    pytest.param(with_checks("H1510107MA62XK3R"), "authority", 1, id="authority"),
    pytest.param(with_checks("91AB0107MA62XK3R"), "division", 3, id="division"),
    pytest.param(with_checks("91510107MA62XK3R", org_check="5"), "org_code_check", 17, id="org-code-check"),
    pytest.param(VALID_CODE[:17] + "3", "check_character", 18, id="check-character"),
    pytest.param("91510107MA62XK3R24", "org_code_check", 17, id="transposed"),
])
def test_an_invalid_credit_code_is_refused_and_nothing_is_written(db, admin, code, reason, position):
    before = counts(db)

    with pytest.raises(InvalidInput) as caught:
        create_organisation(db, admin, org_data(credit_code=code))

    messages = caught.value.fields["credit_code"]
    expected = CREDIT_CODE_MESSAGES[reason]
    assert messages == [expected % {"position": position} if "%(" in expected else expected]
    assert set(caught.value.fields) == {"credit_code"}
    assert caught.value.details == {"fields": caught.value.fields}
    assert counts(db) == before


def test_a_registered_credit_code_cannot_be_registered_again(db, admin):
    make_organisation(db, credit_code=VALID_CODE)
    before = counts(db)

    with pytest.raises(InvalidInput) as caught:
        create_organisation(db, admin, org_data(credit_code=VALID_CODE.lower()))

    assert caught.value.fields == {"credit_code": ["An organisation with this credit code is already registered."]}
    assert counts(db) == before


@pytest.mark.parametrize(("overrides", "field"), [
    (dict(city="510200"), "city"),  # no such 市州
    (dict(city="110100"), "city"),  # Beijing: not in Sichuan
    (dict(city=""), "city"),
    (dict(kind="company"), "kind"),
    (dict(kind="University"), "kind"),
    (dict(name_zh="   "), "name_zh"),
    (dict(name_en=""), "name_en"),
    (dict(name_en="x" * 201), "name_en"),
])
def test_invalid_organisation_fields_are_refused_and_nothing_is_written(db, admin, overrides, field):
    before = counts(db)

    with pytest.raises(InvalidInput) as caught:
        create_organisation(db, admin, org_data(**overrides))

    assert set(caught.value.fields) == {field}
    assert counts(db) == before


def test_every_invalid_organisation_field_is_reported_at_once(db, admin):
    with pytest.raises(InvalidInput) as caught:
        create_organisation(db, admin, org_data(credit_code="123", kind="club", city="000000", name_zh=""))

    assert set(caught.value.fields) == {"credit_code", "kind", "city", "name_zh"}


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.LAB_MANAGER, Role.FINANCE])
def test_only_admins_create_organisations(db, role):
    actor = make_user(db, roles=(role,))
    before = counts(db)

    with pytest.raises(Forbidden):
        create_organisation(db, actor, org_data())

    assert counts(db) == before


# --- affiliations --------------------------------------------------------------------------------------------

def test_declared_affiliations_relate_organisations_either_way(db, admin):
    university, spin_off, stranger = (make_organisation(db) for _ in range(3))

    assert not are_related(db, university.id, spin_off.id)
    declare_affiliation(db, admin, university, spin_off)
    db.flush()

    assert are_related(db, university.id, spin_off.id)
    assert are_related(db, spin_off.id, university.id)
    assert are_related(db, university.id, university.id)
    assert not are_related(db, university.id, stranger.id)
    assert not are_related(db, stranger.id, spin_off.id)
    [entry] = audit_entries(db, "organisation.affiliation_declared")
    assert (entry.actor_id, entry.target_type, entry.target_id) == (admin.id, "organisation", str(university.id))
    assert entry.data == {"related_id": spin_off.id}


def test_declaring_an_affiliation_twice_writes_it_once(db, admin):
    a, b = make_organisation(db), make_organisation(db)
    declare_affiliation(db, admin, a, b)
    db.flush()
    before = counts(db)

    declare_affiliation(db, admin, a, b)

    assert counts(db) == before


def test_an_organisation_cannot_be_affiliated_with_itself(db, admin):
    org = make_organisation(db)
    before = counts(db)

    with pytest.raises(InvalidInput) as caught:
        declare_affiliation(db, admin, org, org)

    assert set(caught.value.fields) == {"related"}
    assert counts(db) == before


def test_only_admins_declare_affiliations(db):
    a, b = make_organisation(db), make_organisation(db)
    actor = make_user(db, organisation=a, roles=(Role.LAB_MANAGER, Role.FINANCE))
    before = counts(db)

    with pytest.raises(Forbidden):
        declare_affiliation(db, actor, a, b)

    assert counts(db) == before
    assert not are_related(db, a.id, b.id)


# --- users ---------------------------------------------------------------------------------------------------

def new_user(db, actor, organisation: Organisation, **overrides) -> User:
    values = dict(email="alice@example.test", password="a long enough password", name_zh="王爱丽", name_en="Alice Wang")
    values.update(overrides)
    return create_user(db, actor, organisation=organisation, **values)


def test_create_user_hashes_the_password_lowercases_the_email_and_grants_roles(db, admin):
    org = make_organisation(db)
    user = create_user(db, admin, email="  Alice.Wang@Example.TEST ", password="s3cret pass phrase", organisation=org,
                       name_zh=" 王爱丽 ", roles=("researcher", Role.FINANCE), locale="en")
    db.commit()
    db.expire_all()

    stored = db.get(User, user.id)
    assert stored.email == "alice.wang@example.test"
    assert stored.password_hash.startswith("$argon2id$")
    assert "s3cret pass phrase" not in stored.password_hash
    assert verify_password(stored.password_hash, "s3cret pass phrase")
    assert not verify_password(stored.password_hash, "S3cret pass phrase")
    assert stored.roles == {Role.RESEARCHER, Role.FINANCE}
    assert (stored.name_zh, stored.name_en) == ("王爱丽", "王爱丽")  # name_en falls back to name_zh
    assert stored.locale is Locale.EN
    assert stored.organisation_id == org.id
    assert stored.active is True
    assert stored.last_login_at is None
    [entry] = audit_entries(db, "user.created")
    assert (entry.actor_id, entry.target_type, entry.target_id) == (admin.id, "user_account", str(user.id))
    assert entry.data == {"email": "alice.wang@example.test", "roles": ["finance", "researcher"]}


def test_create_user_defaults_to_a_researcher_speaking_chinese(db, admin):
    user = new_user(db, admin, make_organisation(db))

    assert user.roles == {Role.RESEARCHER}
    assert user.locale is Locale.ZH_CN
    assert user.name_en == "Alice Wang"


@pytest.mark.parametrize(("overrides", "field"), [
    pytest.param(dict(email="not-an-email"), "email", id="email-no-at"),
    pytest.param(dict(email="alice@localhost"), "email", id="email-no-dot"),
    pytest.param(dict(email=""), "email", id="email-empty"),
    pytest.param(dict(email="alice wang@example.test"), "email", id="email-space"),
    pytest.param(dict(email="a@@example.test"), "email", id="email-two-at"),
    pytest.param(dict(email="x" * 245 + "@example.cn"), "email", id="email-too-long"),
    pytest.param(dict(password="short"), "password", id="password-short"),
    pytest.param(dict(password="1234567"), "password", id="password-7"),
    pytest.param(dict(password=""), "password", id="password-empty"),
    pytest.param(dict(password="x" * 257), "password", id="password-too-long"),
    pytest.param(dict(roles=("superuser",)), "roles", id="role-unknown"),
    pytest.param(dict(roles=("admin", "root")), "roles", id="role-one-unknown"),
    pytest.param(dict(roles=("Admin",)), "roles", id="role-case"),
    pytest.param(dict(roles=()), "roles", id="no-roles"),
    pytest.param(dict(locale="fr"), "locale", id="locale-unknown"),
    pytest.param(dict(locale="zh-CN"), "locale", id="locale-spelling"),
    pytest.param(dict(name_zh="  "), "name_zh", id="name-blank"),
    pytest.param(dict(name_zh="名" * 101), "name_zh", id="name-too-long"),
])
def test_invalid_user_input_is_refused_and_nothing_is_written(db, admin, overrides, field):
    org = make_organisation(db)
    before = counts(db)

    with pytest.raises(InvalidInput) as caught:
        new_user(db, admin, org, **overrides)

    assert set(caught.value.fields) == {field}
    assert counts(db) == before


def test_boundary_lengths_are_accepted(db, admin):
    user = new_user(db, admin, make_organisation(db), password="x" * 8, email="y" * 243 + "@example.cn",
                    name_zh="名" * 100)

    assert len(user.email) == 254
    assert verify_password(user.password_hash, "x" * 8)


@pytest.mark.parametrize("spelling", ["alice@example.test", "ALICE@EXAMPLE.TEST", " Alice@Example.Test "])
def test_an_email_address_is_registered_once_whatever_its_case(db, admin, spelling):
    org = make_organisation(db)
    new_user(db, admin, org, email="Alice@example.test")
    before = counts(db)

    with pytest.raises(InvalidInput) as caught:
        new_user(db, admin, org, email=spelling)

    assert caught.value.fields == {"email": ["A user with this e-mail address already exists."]}
    assert counts(db) == before


def test_every_invalid_user_field_is_reported_at_once(db, admin):
    with pytest.raises(InvalidInput) as caught:
        new_user(db, admin, make_organisation(db), email="nope", password="short", roles=("wizard",), locale="de",
                 name_zh="")

    assert set(caught.value.fields) == {"email", "password", "roles", "locale", "name_zh"}


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.LAB_MANAGER, Role.FINANCE])
def test_only_admins_create_users(db, role):
    actor = make_user(db, roles=(role,))
    before = counts(db)

    with pytest.raises(Forbidden):
        new_user(db, actor, actor.organisation, roles=(Role.ADMIN,))

    assert counts(db) == before


# --- sign-in -------------------------------------------------------------------------------------------------

@pytest.fixture
def fixed_now(monkeypatch):
    monkeypatch.setattr(services, "utcnow", lambda: FIXED_NOW)
    return FIXED_NOW


@pytest.mark.parametrize("email", ["bob@example.test", "  BOB@Example.test  "])
def test_authenticate_with_the_right_password_records_the_sign_in(db, fixed_now, email):
    user = make_user(db, email="bob@example.test")

    assert authenticate(db, email, PASSWORD) is user
    db.commit()
    db.expire_all()

    assert db.get(User, user.id).last_login_at == fixed_now


@pytest.mark.parametrize(("email", "password"), [
    pytest.param("bob@example.test", PASSWORD + "!", id="wrong-password"),
    pytest.param("bob@example.test", PASSWORD.upper(), id="wrong-case"),
    pytest.param("bob@example.test", "", id="empty-password"),
    pytest.param("bob@example.test", None, id="no-password"),
    pytest.param("nobody@example.test", PASSWORD, id="unknown-email"),
    pytest.param("", PASSWORD, id="empty-email"),
])
def test_wrong_credentials_fail_alike_and_record_nothing(db, fixed_now, email, password):
    user = make_user(db, email="bob@example.test")
    db.commit()
    before = counts(db)

    with pytest.raises(InvalidCredentials) as caught:
        authenticate(db, email, password)

    assert caught.value.code == "invalid_credentials"
    assert str(caught.value) == "The e-mail address or the password is wrong."
    db.commit()
    db.expire_all()
    assert db.get(User, user.id).last_login_at is None
    assert counts(db) == before


def test_a_disabled_account_cannot_sign_in(db, fixed_now):
    user = make_user(db, email="carol@example.test", active=False)

    with pytest.raises(AccountDisabled) as caught:
        authenticate(db, "carol@example.test", PASSWORD)
    assert caught.value.code == "account_disabled"
    # a wrong password says nothing about the account's state
    with pytest.raises(InvalidCredentials):
        authenticate(db, "carol@example.test", "not the password")

    db.commit()
    db.expire_all()
    assert db.get(User, user.id).last_login_at is None


def test_a_weak_hash_is_upgraded_at_sign_in(db, fixed_now):
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    user = make_user(db, email="dave@example.test", password_hash=weak)

    authenticate(db, "dave@example.test", PASSWORD)
    db.commit()
    db.expire_all()

    stored = db.get(User, user.id).password_hash
    assert stored != weak
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, PASSWORD)


# --- passwords and roles -------------------------------------------------------------------------------------

def test_change_password_needs_the_current_one(db):
    user = make_user(db)
    old_hash = user.password_hash
    db.commit()
    before = counts(db)

    with pytest.raises(InvalidInput) as caught:
        change_password(db, user, current="not the password", new="a brand new password")

    assert set(caught.value.fields) == {"current_password"}
    db.commit()
    db.expire_all()
    assert db.get(User, user.id).password_hash == old_hash
    assert counts(db) == before


def test_change_password_refuses_a_short_new_one(db):
    user = make_user(db)
    old_hash = user.password_hash
    before = counts(db)

    with pytest.raises(InvalidInput) as caught:
        change_password(db, user, current=PASSWORD, new="short")

    assert set(caught.value.fields) == {"new_password"}
    assert user.password_hash == old_hash
    assert counts(db) == before


def test_change_password_replaces_the_hash_and_is_audited(db):
    user = make_user(db)

    change_password(db, user, current=PASSWORD, new="a brand new password")
    db.commit()
    db.expire_all()

    stored = db.get(User, user.id)
    assert verify_password(stored.password_hash, "a brand new password")
    assert not verify_password(stored.password_hash, PASSWORD)
    [entry] = audit_entries(db, "user.password_changed")
    assert (entry.actor_id, entry.target_type, entry.target_id) == (user.id, "user_account", str(user.id))
    assert "a brand new password" not in str(entry.data)


def test_set_roles_replaces_the_roles_and_is_audited(db, admin):
    user = make_user(db, roles=(Role.RESEARCHER,))

    set_roles(db, admin, user, [Role.FINANCE, "lab_manager"])
    db.commit()
    db.expire_all()

    assert db.get(User, user.id).roles == {Role.FINANCE, Role.LAB_MANAGER}
    assert set(db.scalars(select(UserRole.role).where(UserRole.user_id == user.id))) == {Role.FINANCE,
                                                                                         Role.LAB_MANAGER}
    [entry] = audit_entries(db, "user.roles_changed")
    assert (entry.actor_id, entry.target_id) == (admin.id, str(user.id))
    assert entry.data == {"before": ["researcher"], "after": ["finance", "lab_manager"]}


def test_set_roles_keeps_roles_that_stay(db, admin):
    user = make_user(db, roles=(Role.RESEARCHER, Role.FINANCE))
    kept = db.get(UserRole, (user.id, Role.RESEARCHER)).granted_at

    set_roles(db, admin, user, [Role.RESEARCHER, Role.ADMIN])
    db.commit()
    db.expire_all()

    assert db.get(User, user.id).roles == {Role.RESEARCHER, Role.ADMIN}
    assert db.get(UserRole, (user.id, Role.RESEARCHER)).granted_at == kept


def test_set_roles_refuses_no_roles_and_non_admins(db, admin):
    user = make_user(db, roles=(Role.RESEARCHER,))
    other = make_user(db, roles=(Role.LAB_MANAGER, Role.FINANCE))
    db.commit()
    before = counts(db)

    with pytest.raises(InvalidInput):
        set_roles(db, admin, user, [])
    with pytest.raises(Forbidden):
        set_roles(db, other, user, [Role.ADMIN])
    with pytest.raises(Forbidden):
        set_roles(db, user, user, [Role.ADMIN])

    db.flush()
    db.expire_all()
    assert db.get(User, user.id).roles == {Role.RESEARCHER}
    assert counts(db) == before


# --- facility scopes -----------------------------------------------------------------------------------------

def test_grant_facility_manager_gives_the_role_and_the_scope(db, admin):
    user = make_user(db, roles=(Role.RESEARCHER,))
    managed, other = make_facility(db), make_facility(db)
    assert managed_facility_ids(db, user) == set()

    assert grant_facility_manager(db, admin, managed.id, user) is True
    db.commit()
    db.expire_all()

    assert db.get(User, user.id).roles == {Role.RESEARCHER, Role.LAB_MANAGER}
    assert managed_facility_ids(db, user) == {managed.id}
    assert can_manage_facility(db, user, managed.id)
    assert not can_manage_facility(db, user, other.id)
    [entry] = audit_entries(db, "facility.manager_granted")
    assert (entry.actor_id, entry.target_type, entry.target_id) == (admin.id, "user_account", str(user.id))
    assert entry.data == {"facility_id": managed.id}


def test_grant_facility_manager_is_idempotent(db, admin):
    user = make_user(db, roles=(Role.LAB_MANAGER,))
    first, second = make_facility(db), make_facility(db)
    assert grant_facility_manager(db, admin, first.id, user) is True
    db.flush()
    before = counts(db)

    assert grant_facility_manager(db, admin, first.id, user) is False
    assert counts(db) == before

    assert grant_facility_manager(db, admin, second.id, user) is True
    db.flush()
    assert managed_facility_ids(db, user) == {first.id, second.id}
    assert db.scalar(select(func.count()).select_from(UserRole).where(UserRole.user_id == user.id)) == 1


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.LAB_MANAGER, Role.FINANCE])
def test_only_admins_grant_facility_managers(db, role):
    facility = make_facility(db)
    actor = make_user(db, roles=(role,))
    if role is Role.LAB_MANAGER:
        db.add(FacilityManager(facility_id=facility.id, user_id=actor.id))  # even a manager of that facility
    user = make_user(db)
    before = counts(db)

    with pytest.raises(Forbidden):
        grant_facility_manager(db, actor, facility.id, user)

    assert counts(db) == before
    assert user.roles == {Role.RESEARCHER}


# (roles, manages the first facility, scope: "all" / "first" / "none", may manage first, may manage second)
SCOPES = [
    pytest.param((Role.ADMIN,), False, "all", True, True, id="admin"),
    pytest.param((Role.ADMIN, Role.LAB_MANAGER), True, "all", True, True, id="admin-and-manager"),
    pytest.param((Role.LAB_MANAGER,), True, "first", True, False, id="lab-manager"),
    pytest.param((Role.LAB_MANAGER, Role.RESEARCHER), True, "first", True, False, id="manager-and-researcher"),
    pytest.param((Role.LAB_MANAGER,), False, "none", False, False, id="lab-manager-of-nothing"),
    pytest.param((Role.RESEARCHER,), False, "none", False, False, id="researcher"),
    pytest.param((Role.RESEARCHER,), True, "none", False, False, id="researcher-with-stale-scope-row"),
    pytest.param((Role.FINANCE,), False, "none", False, False, id="finance"),
]


@pytest.mark.parametrize(("roles", "manages_first", "scope", "may_first", "may_second"), SCOPES)
def test_who_may_manage_which_facility(db, roles, manages_first, scope, may_first, may_second):
    first, second = make_facility(db), make_facility(db)
    user = make_user(db, roles=roles)
    if manages_first:
        db.add(FacilityManager(facility_id=first.id, user_id=user.id))
        db.flush()

    expected_scope = {"all": None, "first": {first.id}, "none": set()}[scope]
    assert managed_facility_ids(db, user) == expected_scope
    assert can_manage_facility(db, user, first.id) is may_first
    assert can_manage_facility(db, user, second.id) is may_second


# --- the audit log -------------------------------------------------------------------------------------------

def test_audit_record_names_actor_action_target_and_data(db, admin):
    org = make_organisation(db)

    entry = audit.record(db, admin, "organisation.checked", org, amount=Decimal("12.50"), tags=("a", "b"),
                         when=datetime(2026, 1, 1, tzinfo=UTC), nested={"n": 1, 2: None}, flag=True)
    db.commit()
    db.expire_all()

    stored = db.get(AuditEntry, entry.id)
    assert (stored.actor_id, stored.action) == (admin.id, "organisation.checked")
    assert (stored.target_type, stored.target_id) == ("organisation", str(org.id))
    assert stored.data == {"amount": "12.50", "tags": ["a", "b"], "when": "2026-01-01 00:00:00+00:00",
                           "nested": {"n": 1, "2": None}, "flag": True}
    assert stored.at.tzinfo is UTC
    assert abs(stored.at - datetime.now(UTC)) < timedelta(minutes=1)


def test_audit_record_flushes_a_new_target_to_name_it(db):
    org = Organisation(name_zh="新单位", name_en="New organisation", credit_code=unique_credit_code(),
                       kind=OrganisationKind.INSTITUTE, city="510700")
    db.add(org)

    entry = audit.record(db, None, "organisation.created", org)
    db.flush()

    assert org.id is not None
    assert (entry.actor_id, entry.target_type, entry.target_id) == (None, "organisation", str(org.id))


def test_audit_record_without_a_target(db):
    entry = audit.record(db, None, "system.started")
    db.flush()

    assert (entry.target_type, entry.target_id, entry.data) == (None, None, {})


@pytest.mark.parametrize("statement", [
    "UPDATE audit_entry SET action = 'tampered' WHERE id = :id",
    "UPDATE audit_entry SET actor_id = NULL WHERE id = :id",
    "UPDATE audit_entry SET action = action",
    "DELETE FROM audit_entry WHERE id = :id",
    "DELETE FROM audit_entry",
])
def test_the_database_refuses_to_rewrite_the_audit_log(db, admin, statement):
    entry = audit.record(db, admin, "user.roles_changed", admin, before=["researcher"], after=["admin"])
    db.commit()
    before = counts(db)

    with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"), db.begin_nested():
        db.execute(text(statement), {"id": entry.id})

    db.expire_all()
    stored = db.get(AuditEntry, entry.id)
    assert stored is not None
    assert (stored.actor_id, stored.action) == (admin.id, "user.roles_changed")
    assert counts(db) == before
