"""Factories for every model: `make_x(db, **overrides)` returns a flushed row with sensible defaults."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from booking.categories import ServiceCategory
from booking.models import Facility, FacilityManager, OperationMode, Resource, ResourceKind
from core.accounts.credit_code import make_credit_code
from core.accounts.models import ApiToken, Organisation, OrganisationKind, Role, User
from core.accounts.passwords import hash_password
from core.accounts.tokens import create_token

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
