"""Factories for every model: `make_x(db, **overrides)` returns a flushed row with sensible defaults."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from booking.categories import ServiceCategory
from booking.models import (
    Blackout,
    BlackoutKind,
    Facility,
    FacilityManager,
    OperationMode,
    Qualification,
    Reservation,
    ReservationKind,
    ReservationState,
    Resource,
    ResourceKind,
)
from core.accounts.credit_code import make_credit_code
from core.accounts.models import ApiToken, Organisation, OrganisationKind, Role, User
from core.accounts.passwords import hash_password
from core.accounts.tokens import create_token
from core.timeutil import as_utc

PASSWORD = "correct horse battery"
_PASSWORD_HASH = hash_password(PASSWORD)  # hashing once keeps the suite fast; argon2 is slow on purpose
_seq = itertools.count(1)


def unique_credit_code() -> str:
    n = next(_seq)
    return make_credit_code("9", "1", "510100", f"{n:08d}")


def make_organisation(db: Session, **overrides: Any) -> Organisation:
    n = next(_seq)
    values = dict(name_zh=f"测试单位{n}", name_en=f"Test organisation {n}", credit_code=unique_credit_code(),
                  kind=OrganisationKind.ENTERPRISE, city="510100", tech_sme=False)
    values.update(overrides)
    org = Organisation(**values)
    db.add(org)
    db.flush()
    return org


def make_user(db: Session, roles: tuple[Role | str, ...] = (Role.RESEARCHER,), **overrides: Any) -> User:
    from core.accounts.models import UserRole

    n = next(_seq)
    organisation = overrides.pop("organisation", None) or make_organisation(db)
    values = dict(email=f"user{n}@example.test", name_zh=f"用户{n}", name_en=f"User {n}",
                  password_hash=_PASSWORD_HASH, locale="zh_CN")
    values.update(overrides)
    user = User(organisation=organisation, role_grants=[UserRole(role=Role(r)) for r in roles], **values)
    db.add(user)
    db.flush()
    return user


def make_facility(db: Session, managers: tuple[User, ...] = (), **overrides: Any) -> Facility:
    n = next(_seq)
    owner = overrides.pop("owner", None) or make_organisation(db, kind=OrganisationKind.INSTITUTE)
    values = dict(name_zh=f"测试实验室{n}", name_en=f"Test facility {n}", city="510100",
                  address_zh="成都市", address_en="Chengdu", timezone="Asia/Shanghai",
                  opening_hours={"mon": "08:30-17:30", "tue": "08:30-17:30"})
    values.update(overrides)
    facility = Facility(owner=owner, **values)
    db.add(facility)
    db.flush()
    for manager in managers:
        db.add(FacilityManager(facility_id=facility.id, user_id=manager.id))
    db.flush()
    return facility


def make_resource(db: Session, **overrides: Any) -> Resource:
    n = next(_seq)
    facility = overrides.pop("facility", None) or make_facility(db)
    values = dict(kind=ResourceKind.INSTRUMENT, name_zh=f"扫描电镜{n}", name_en=f"SEM {n}", model=f"M-{n}",
                  manufacturer="ZEISS", original_value=Decimal("1500000.00"), category=ServiceCategory.TESTING,
                  operation_mode=OperationMode.BOTH, voucher_eligible=True,
                  specs=[{"key_zh": "分辨率", "key_en": "Resolution", "value": "1 nm"}])
    values.update(overrides)
    resource = Resource(facility=facility, **values)
    db.add(resource)
    db.flush()
    return resource


def make_token(db: Session, user: User | None = None, name: str | None = None) -> tuple[ApiToken, str]:
    user = user or make_user(db)
    return create_token(db, user, user, name or f"token {next(_seq)}")


def row_counts(db: Session, *models: type) -> dict[str, int]:
    """Rows per table as the database sees them now, for checks that a failed request wrote nothing."""
    return {model.__tablename__: db.scalar(select(func.count()).select_from(model)) for model in models}


def make_reservation(db: Session, **overrides: Any) -> Reservation:
    """A reservation written directly (no rules, no clash check, no e-mail): for setting up a schedule."""
    resource = overrides.pop("resource", None) or make_resource(db)
    user = overrides.pop("user", None) or make_user(db)
    starts_at = overrides.pop("starts_at", None) or datetime(2030, 1, 7, 1, 0, tzinfo=UTC) + timedelta(days=next(_seq))
    values = dict(billed_org_id=user.organisation_id, starts_at=starts_at,
                  ends_at=overrides.pop("ends_at", None) or starts_at + timedelta(hours=2),
                  state=ReservationState.CONFIRMED, kind=ReservationKind.SELF_SERVICE, purpose="")
    values.update(overrides)
    values["starts_at"], values["ends_at"] = as_utc(values["starts_at"]), as_utc(values["ends_at"])  # as read back
    reservation = Reservation(resource_id=resource.id, user_id=user.id, **values)
    db.add(reservation)
    db.flush()
    return reservation


def make_blackout(db: Session, **overrides: Any) -> Blackout:
    resource = overrides.pop("resource", None) or make_resource(db)
    starts_at = overrides.pop("starts_at", None) or datetime(2030, 1, 7, 1, 0, tzinfo=UTC) + timedelta(days=next(_seq))
    values = dict(starts_at=starts_at, ends_at=overrides.pop("ends_at", None) or starts_at + timedelta(hours=4),
                  kind=BlackoutKind.MAINTENANCE, reason="")
    values.update(overrides)
    values["starts_at"], values["ends_at"] = as_utc(values["starts_at"]), as_utc(values["ends_at"])
    blackout = Blackout(resource_id=resource.id, **values)
    db.add(blackout)
    db.flush()
    return blackout


def make_qualification(db: Session, user: User, resource: Resource, **overrides: Any) -> Qualification:
    """`user` may operate `resource` alone; pass expires_at / revoked_at for expired or revoked ones."""
    values = dict(granted_at=datetime(2026, 1, 1, tzinfo=UTC), expires_at=None, revoked_at=None)
    values.update(overrides)
    qualification = Qualification(user_id=user.id, resource_id=resource.id, **values)
    db.add(qualification)
    db.flush()
    return qualification


def make_device(db: Session, **overrides: Any) -> Any:
    """A registered device (credential hash of the password "device-secret")."""
    from devices.credentials import mosquitto_hash
    from devices.models import Device, UsageSource

    n = next(_seq)
    resource = overrides.pop("resource", None) or make_resource(db)
    values = dict(device_id=f"dev-{n}", resource_id=resource.id, usage_source=UsageSource.STATUS,
                  credential_hash=mosquitto_hash("device-secret"))
    values.update(overrides)
    device = Device(**values)
    db.add(device)
    db.flush()
    return device
