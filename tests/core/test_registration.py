"""Organisation self-registration as a service: register → pending, approve or reject, register again after a
rejection; duplicates refused (also when two registrations race on PostgreSQL); e-mails in the outbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import select

from core.accounts import registration
from core.accounts.models import Organisation, OrganisationStatus, Role, User
from core.accounts.registration import DuplicateRegistration, RegistrationData, RegistrationDecided
from core.accounts.services import OrganisationPending, OrganisationRejected, authenticate
from core.audit import AuditEntry
from core.db import make_engine, make_sessionmaker
from core.errors import Forbidden, InvalidInput
from core.mail import OutboundEmail
from migrations import runner
from tests.conftest import create_pg_database, drop_pg_database
from tests.factories import make_organisation, make_user, row_counts, unique_credit_code

PASSWORD = "a long enough password"


def application(**overrides) -> RegistrationData:
    values = dict(name_zh="成都新材料科技有限公司", name_en="Chengdu New Materials Co., Ltd.",
                  credit_code=unique_credit_code(), kind="enterprise", city="510100", tech_sme=True,
                  user_name_zh="王工", user_name_en="Wang Gong", email=f"wang{next(_n)}@newmat.example",
                  password=PASSWORD, locale="en")
    values.update(overrides)
    return RegistrationData(**values)


_n = iter(range(1, 10**6))


@pytest.fixture
def admin(db) -> User:
    return make_user(db, roles=(Role.ADMIN,), locale="zh_CN")


def outbox(db, topic: str) -> list[OutboundEmail]:
    return list(db.scalars(select(OutboundEmail).where(OutboundEmail.topic == topic).order_by(OutboundEmail.id)))


def test_a_registration_is_pending_with_an_inactive_user_and_the_admins_are_told(db, admin):
    data = application()

    org = registration.register_organisation(db, None, data)

    assert org.status == OrganisationStatus.PENDING
    assert org.registered_at is not None
    assert org.decided_at is None
    (user,) = org.users
    assert (user.email, user.active, user.roles, str(user.locale)) == (data.email, False, {Role.RESEARCHER}, "en")
    assert user.password_hash != PASSWORD
    (mail,) = [m for m in outbox(db, "organisation.registered") if m.to_address == admin.email]
    assert "成都新材料科技有限公司" in mail.subject  # the admin's language
    assert data.credit_code in mail.body
    assert db.scalar(select(AuditEntry.action).where(AuditEntry.target_id == str(org.id))) == "organisation.registered"
    with pytest.raises(OrganisationPending):
        authenticate(db, data.email, PASSWORD)


def test_approval_activates_the_user_audits_and_tells_them_in_their_language(db, admin):
    data = application()
    org = registration.register_organisation(db, None, data)

    registration.approve_registration(db, admin, org.id)

    assert org.status == OrganisationStatus.APPROVED
    assert org.decided_at is not None
    assert authenticate(db, data.email, PASSWORD).email == data.email
    (mail,) = outbox(db, "organisation.approved")
    assert mail.to_address == data.email
    assert mail.subject == "[LabShare] Your organisation is approved: Chengdu New Materials Co., Ltd."
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "organisation.approved")).one()
    assert entry.actor_id == admin.id
    assert entry.target_id == str(org.id)
    with pytest.raises(RegistrationDecided):
        registration.reject_registration(db, admin, org.id, "too late")


def test_rejection_keeps_the_user_out_with_a_clear_message_and_can_be_registered_again(db, admin):
    data = application()
    org = registration.register_organisation(db, None, data)

    with pytest.raises(InvalidInput) as missing:
        registration.reject_registration(db, admin, org.id, "  ")
    assert "reason" in missing.value.fields
    registration.reject_registration(db, admin, org.id, "营业执照与名称不符")

    assert (org.status, org.decision_reason) == (OrganisationStatus.REJECTED, "营业执照与名称不符")
    (mail,) = outbox(db, "organisation.rejected")
    assert mail.to_address == data.email
    assert "营业执照与名称不符" in mail.body
    assert db.scalars(select(AuditEntry.data).where(AuditEntry.action == "organisation.rejected")).one()[
        "reason"] == "营业执照与名称不符"
    with pytest.raises(OrganisationRejected):
        authenticate(db, data.email, PASSWORD)

    # the same credit code and e-mail may apply again: the rows are taken up, pending once more
    again = registration.register_organisation(db, None, replace(data, name_en="Chengdu New Materials Ltd.",
                                                                 password="another good password"))
    assert again.id == org.id
    assert again.status == OrganisationStatus.PENDING
    assert again.decision_reason is None
    assert [u.email for u in again.users] == [data.email]
    registration.approve_registration(db, admin, again.id)
    assert authenticate(db, data.email, "another good password").organisation.name_en == \
        "Chengdu New Materials Ltd."


def test_a_new_applicant_for_a_rejected_code_replaces_the_old_one(db, admin):
    first = application()
    org = registration.register_organisation(db, None, first)
    registration.reject_registration(db, admin, org.id, "wrong city")

    second = application(credit_code=first.credit_code, email="someone.else@newmat.example")
    registration.register_organisation(db, None, second)
    db.expire_all()

    assert [u.email for u in db.get(Organisation, org.id).users] == ["someone.else@newmat.example"]
    assert db.scalar(select(User).where(User.email == first.email)) is None


def test_taken_credit_codes_and_addresses_are_refused_without_saying_by_whom(db):
    existing = make_organisation(db, name_zh="保密单位")
    member = make_user(db)
    counts = row_counts(db, Organisation, User)

    with pytest.raises(DuplicateRegistration) as refused:
        registration.register_organisation(db, None, application(credit_code=existing.credit_code.lower(),
                                                                  email=member.email.upper()))

    assert refused.value.code == "already_registered"
    assert set(refused.value.fields) == {"credit_code", "email"}
    assert "保密单位" not in str(refused.value.fields)
    assert member.name_zh not in str(refused.value.fields)
    assert row_counts(db, Organisation, User) == counts


def test_a_pending_registration_blocks_the_same_code_and_an_active_account_is_never_taken_over(db, admin):
    data = application()
    registration.register_organisation(db, None, data)
    with pytest.raises(DuplicateRegistration) as refused:
        registration.register_organisation(db, None, application(credit_code=data.credit_code))
    assert set(refused.value.fields) == {"credit_code"}

    rejected = registration.register_organisation(db, None, application())
    registration.reject_registration(db, admin, rejected.id, "no")
    signed_in_before = make_user(db, organisation=rejected, active=False)
    signed_in_before.last_login_at = signed_in_before.created_at
    db.flush()
    with pytest.raises(DuplicateRegistration):
        registration.register_organisation(db, None, application(email=signed_in_before.email))


@pytest.mark.parametrize(("field", "value"), [
    ("credit_code", "91510100MA61234567"), ("credit_code", "123"), ("name_zh", " "), ("kind", "club"),
    ("city", "110000"), ("email", "not-an-address"), ("password", "short"), ("user_name_zh", ""),
    ("locale", "fr")])
def test_bad_fields_are_named_and_nothing_is_written(db, field, value):
    counts = row_counts(db, Organisation, User, OutboundEmail, AuditEntry)

    with pytest.raises(InvalidInput) as refused:
        registration.register_organisation(db, None, application(**{field: value}))

    assert field in refused.value.fields
    assert not isinstance(refused.value, DuplicateRegistration)
    assert row_counts(db, Organisation, User, OutboundEmail, AuditEntry) == counts


def test_only_admins_decide(db):
    org = registration.register_organisation(db, None, application())
    researcher = make_user(db)

    with pytest.raises(Forbidden):
        registration.approve_registration(db, researcher, org.id)
    with pytest.raises(Forbidden):
        registration.reject_registration(db, researcher, org.id, "no")


# --- a race on PostgreSQL: two registrations of one credit code, one wins -----------------------------------------

@pytest.fixture(scope="module")
def pg_sessions() -> Iterator:
    url = create_pg_database("labshare_registration_race")
    engine = make_engine(url, pool_size=8)
    try:
        runner.upgrade(engine)
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()
        drop_pg_database(url)


@pytest.mark.parametrize("shared", ["credit_code", "email"])
def test_two_registrations_racing_for_one_credit_code_or_address_one_wins(pg_sessions, shared):
    common = application()
    attempts = [application(**{shared: getattr(common, shared)}) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=30)
    outcomes: list[str] = []

    def register(data: RegistrationData) -> None:
        with pg_sessions() as session:
            session.scalar(select(1))  # connected and in a transaction before the race starts
            barrier.wait()
            try:
                registration.register_organisation(session, None, data)
                session.commit()
                outcomes.append("registered")
            except DuplicateRegistration as exc:
                session.rollback()
                outcomes.append(f"refused:{','.join(exc.fields)}")

    threads = [threading.Thread(target=register, args=(data,)) for data in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) == ["refused:" + shared, "registered"]
    with pg_sessions() as session:
        column = Organisation.credit_code if shared == "credit_code" else User.email
        model = Organisation if shared == "credit_code" else User
        assert len(session.scalars(select(model).where(column == getattr(common, shared))).all()) == 1
