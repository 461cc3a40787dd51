"""Facility management by admins: create and update with every field checked, managers assigned and removed."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from booking.facilities import assign_manager, create_facility, remove_manager, update_facility
from booking.models import Facility, FacilityManager
from core.accounts.models import OrganisationKind, Role, UserRole
from core.audit import AuditEntry
from core.errors import Forbidden, InvalidInput, NotFound
from tests.factories import make_facility, make_organisation, make_user, row_counts

TABLES = (Facility, FacilityManager, AuditEntry, UserRole)


@pytest.fixture
def owner(db):
    return make_organisation(db, kind=OrganisationKind.INSTITUTE)


@pytest.fixture
def values(owner):
    return {"name_zh": "分析测试中心", "name_en": "Analysis Centre", "owner_id": owner.id, "city": "510700",
            "address_zh": "绵阳市涪城区", "address_en": "Fucheng, Mianyang", "timezone": "Asia/Shanghai",
            "opening_hours": {"mon": "08:30-17:30", "fri": " 09:00-12:00 ", "sat": ""}}


def actions(db, action: str) -> list[AuditEntry]:
    return list(db.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_an_admin_creates_a_facility_with_normalised_hours_and_an_audit_entry(db, admin, values):
    facility = create_facility(db, admin, values)
    db.flush()
    assert facility.id is not None
    assert (facility.name_zh, facility.name_en, facility.city) == ("分析测试中心", "Analysis Centre", "510700")
    assert facility.owner_id == values["owner_id"]
    assert facility.opening_hours == {"mon": "08:30-17:30", "fri": "09:00-12:00"}
    [entry] = actions(db, "facility.created")
    assert (entry.actor_id, entry.target_id) == (admin.id, str(facility.id))


def test_a_facility_without_optional_fields_gets_the_defaults(db, admin, owner):
    facility = create_facility(db, admin, {"name_zh": "中心", "name_en": "Centre", "owner_id": owner.id,
                                           "city": "510100"})
    assert (facility.timezone, facility.address_zh, facility.opening_hours) == ("Asia/Shanghai", "", {})


@pytest.mark.parametrize("missing", ["name_zh", "name_en", "owner_id", "city"])
def test_creating_without_a_required_field_names_it_and_writes_nothing(db, admin, values, missing):
    before = row_counts(db, *TABLES)
    del values[missing]
    with pytest.raises(InvalidInput) as error:
        create_facility(db, admin, values)
    assert set(error.value.fields) == {missing}
    assert row_counts(db, *TABLES) == before


BAD_VALUES = [
    ("name_zh", ""), ("name_zh", "   "), ("name_zh", "名" * 201), ("name_zh", 7),
    ("name_en", ""), ("name_en", "x" * 201),
    ("owner_id", 2**31 - 1), ("owner_id", "1"), ("owner_id", True),
    ("city", "310000"), ("city", "510101"),
    ("address_zh", "址" * 301), ("address_en", 12),
    ("timezone", "Mars/Olympus"), ("timezone", "America"), ("timezone", ""), ("timezone", None),
    ("opening_hours", {"mon": "8-17"}), ("opening_hours", {"mon": "17:00-08:00"}),
    ("opening_hours", {"xyz": "08:00-09:00"}),
    ("opening_hours", {"mon": "08:00-24:30"}), ("opening_hours", ["mon"]), ("opening_hours", {"mon": 8}),
    ("colour", "red"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_creating_with_a_bad_value_names_the_field_and_writes_nothing(db, admin, values, name, value):
    before = row_counts(db, *TABLES)
    values[name] = value
    with pytest.raises(InvalidInput) as error:
        create_facility(db, admin, values)
    assert set(error.value.fields) == {name}
    assert all(isinstance(m, str) and m for m in error.value.fields[name])
    assert row_counts(db, *TABLES) == before


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_updating_with_a_bad_value_names_the_field_and_changes_nothing(db, admin, name, value):
    facility = make_facility(db)
    snapshot = {c.key: getattr(facility, c.key) for c in Facility.__table__.columns}
    before = row_counts(db, *TABLES)
    with pytest.raises(InvalidInput) as error:
        update_facility(db, admin, facility.id, {"name_en": "Renamed", name: value})
    assert set(error.value.fields) == {name}
    db.flush()
    db.expire_all()
    assert {c.key: getattr(db.get(Facility, facility.id), c.key) for c in Facility.__table__.columns} == snapshot
    assert row_counts(db, *TABLES) == before


def test_an_admin_updates_fields_and_the_audit_entry_records_before_and_after(db, admin):
    facility = make_facility(db, city="510100", opening_hours={"mon": "08:30-17:30"})
    new_owner = make_organisation(db)
    update_facility(db, admin, facility.id, {"city": "510600", "owner_id": new_owner.id, "name_zh": facility.name_zh,
                                             "opening_hours": {"sun": "10:00-16:00"}, "timezone": "Asia/Urumqi"})
    db.flush()
    assert (facility.city, facility.owner.id, facility.timezone) == ("510600", new_owner.id, "Asia/Urumqi")
    assert facility.opening_hours == {"sun": "10:00-16:00"}
    [entry] = actions(db, "facility.updated")
    assert entry.actor_id == admin.id
    assert set(entry.data["after"]) == {"city", "owner_id", "opening_hours", "timezone"}  # the name did not change
    assert entry.data["before"]["city"] == "510100"


def test_an_update_that_changes_nothing_is_not_audited(db, admin):
    facility = make_facility(db)
    update_facility(db, admin, facility.id, {"name_zh": facility.name_zh, "city": facility.city})
    assert actions(db, "facility.updated") == []


def test_updating_a_missing_facility_is_not_found(db, admin):
    with pytest.raises(NotFound):
        update_facility(db, admin, 2**31 - 1, {"name_zh": "x"})


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.LAB_MANAGER, Role.FINANCE])
def test_only_admins_manage_facilities(db, values, role):
    actor = make_user(db, roles=(role,))
    facility = make_facility(db, managers=(actor,) if role == Role.LAB_MANAGER else ())
    other = make_user(db)
    before = row_counts(db, *TABLES)
    with pytest.raises(Forbidden):
        create_facility(db, actor, values)
    with pytest.raises(Forbidden):
        update_facility(db, actor, facility.id, {"name_zh": "改名"})
    with pytest.raises(Forbidden):
        assign_manager(db, actor, facility.id, other)
    with pytest.raises(Forbidden):
        remove_manager(db, actor, facility.id, actor.id)
    assert row_counts(db, *TABLES) == before
    assert facility.name_zh != "改名"


def test_forbidden_comes_before_validation(db, researcher):
    with pytest.raises(Forbidden):
        create_facility(db, researcher, {})


def test_assigning_a_manager_gives_the_role_once_and_is_audited(db, admin):
    facility = make_facility(db)
    user = make_user(db)
    assert assign_manager(db, admin, facility.id, user) is True
    assert assign_manager(db, admin, facility.id, user) is False
    db.flush()
    assert user.has_role(Role.LAB_MANAGER)
    assert [m.id for m in facility.managers] == [user.id]
    assert len(actions(db, "facility.manager_granted")) == 1


def test_assigning_to_a_missing_facility_is_not_found(db, admin):
    with pytest.raises(NotFound):
        assign_manager(db, admin, 2**31 - 1, make_user(db))


def test_removing_a_manager_keeps_the_role_and_is_audited(db, admin):
    user = make_user(db, roles=(Role.LAB_MANAGER,))
    facility = make_facility(db, managers=(user,))
    assert remove_manager(db, admin, facility.id, user.id) is True
    db.flush()
    assert facility.managers == []
    assert db.get(FacilityManager, (facility.id, user.id)) is None
    assert user.has_role(Role.LAB_MANAGER)
    [entry] = actions(db, "facility.manager_removed")
    assert (entry.actor_id, entry.target_id, entry.data["facility_id"]) == (admin.id, str(user.id), facility.id)


def test_removing_someone_who_is_not_a_manager_changes_nothing(db, admin):
    facility = make_facility(db)
    user = make_user(db)
    assert remove_manager(db, admin, facility.id, user.id) is False
    assert actions(db, "facility.manager_removed") == []
