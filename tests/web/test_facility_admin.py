"""Facility management pages under /admin/facilities and the facility endpoints of the API, for admins only."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from sqlalchemy import select

from booking.models import Facility, FacilityManager
from core.accounts.models import OrganisationKind, Role
from core.audit import AuditEntry
from tests.factories import PASSWORD, make_facility, make_organisation, make_resource, make_token, make_user, row_counts
from tests.web.test_api import assert_error, bearer
from tests.web.test_pages import field_errors, input_is_marked_invalid

TABLES = (Facility, FacilityManager, AuditEntry)


@pytest.fixture
def admin(db):
    return make_user(db, roles=(Role.ADMIN,))


@pytest.fixture
def owner(db):
    return make_organisation(db, kind=OrganisationKind.UNIVERSITY)


@pytest.fixture
def facility(db):
    return make_facility(db)


def form_data(owner, **overrides) -> dict[str, str]:
    data = {"name_zh": "新材料中试基地", "name_en": "New Materials Pilot Base", "owner_id": str(owner.id),
            "city": "510600", "address_zh": "德阳市旌阳区", "address_en": "Jingyang, Deyang",
            "timezone": "Asia/Shanghai", "hours_mon": "08:30-17:30", "hours_tue": "08:30-17:30", "hours_wed": "",
            "hours_thu": "", "hours_fri": "09:00-12:00", "hours_sat": "", "hours_sun": ""}
    data.update(overrides)
    return data


def csrf(auth, path: str) -> str:
    return auth.csrf_token(path)


# --- who may open the pages ------------------------------------------------------------------------------

PAGES = ("/admin/facilities", "/admin/facilities/{id}/edit")


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize(("role", "expected"), [("admin", 200), ("lab_manager", 403), ("researcher", 403),
                                                ("finance", 403)])
def test_only_admins_open_the_facility_pages(db, client, auth, facility, page, role, expected):
    user = make_user(db, roles=(role,))
    if role == "lab_manager":
        db.add(FacilityManager(facility_id=facility.id, user_id=user.id))
        db.flush()
    auth.login(user.email, PASSWORD)
    assert client.get(page.format(id=facility.id)).status_code == expected


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_visitors_are_sent_to_sign_in(client, facility, page):
    path = page.format(id=facility.id)
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/login?next={quote(path, safe='')}"


def test_a_lab_manager_cannot_post_a_new_facility(db, client, auth, owner):
    user = make_user(db, roles=(Role.LAB_MANAGER,))
    auth.login(user.email, PASSWORD)
    before = row_counts(db, *TABLES)
    token = csrf(auth, "/")
    response = client.post("/admin/facilities", data={**form_data(owner), "csrf_token": token})
    assert response.status_code == 403
    assert row_counts(db, *TABLES) == before


def test_the_navigation_shows_facilities_to_admins_only(db, client, auth, admin):
    auth.login(admin.email, PASSWORD)
    assert 'href="/admin/facilities"' in client.get("/").get_data(as_text=True)
    auth.logout()
    manager = make_user(db, roles=(Role.LAB_MANAGER,))
    auth.login(manager.email, PASSWORD)
    assert 'href="/admin/facilities"' not in client.get("/").get_data(as_text=True)


# --- list and create -------------------------------------------------------------------------------------

def test_the_list_shows_managers_and_resource_counts(db, client, auth, admin):
    manager = make_user(db, roles=(Role.LAB_MANAGER,), name_zh="王经理")
    facility = make_facility(db, managers=(manager,), name_zh="测试中心甲")
    make_resource(db, facility=facility)
    make_resource(db, facility=facility)
    auth.login(admin.email, PASSWORD)
    page = client.get("/admin/facilities").get_data(as_text=True)
    row = re.search(rf'<tr data-facility-id="{facility.id}">(.*?)</tr>', page, re.S).group(1)
    assert "测试中心甲" in row
    assert "王经理" in row
    assert re.search(r"<td>2</td>", row)
    assert 'data-testid="facility-form"' in page


def test_an_admin_creates_a_facility(db, client, auth, admin, owner):
    auth.login(admin.email, PASSWORD)
    token = csrf(auth, "/admin/facilities")
    response = client.post("/admin/facilities", data={**form_data(owner), "csrf_token": token})
    assert response.status_code == 302
    facility = db.scalar(select(Facility).where(Facility.name_en == "New Materials Pilot Base"))
    assert response.headers["Location"] == f"/admin/facilities/{facility.id}/edit"
    assert (facility.city, facility.owner_id) == ("510600", owner.id)
    assert facility.opening_hours == {"mon": "08:30-17:30", "tue": "08:30-17:30", "fri": "09:00-12:00"}
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "新材料中试基地" in page
    assert db.scalar(select(AuditEntry).where(AuditEntry.action == "facility.created")) is not None


@pytest.mark.parametrize(("field", "value", "field_id"), [
    ("name_zh", "", "name_zh"),
    ("name_en", "x" * 201, "name_en"),
    ("city", "310000", "city"),
    ("owner_id", "999999", "owner_id"),
    ("timezone", "Mars/Olympus", "timezone"),
    ("hours_wed", "8-5", "hours_wed"),
    ("hours_sun", "18:00-09:00", "hours_sun"),
])
def test_a_bad_field_is_marked_next_to_it_and_nothing_is_written(db, client, auth, admin, owner, field, value,
                                                                 field_id):
    auth.login(admin.email, PASSWORD)
    before = row_counts(db, *TABLES)
    token = csrf(auth, "/admin/facilities")
    response = client.post("/admin/facilities", data={**form_data(owner, **{field: value}), "csrf_token": token})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert input_is_marked_invalid(page, field_id)
    assert field_errors(page, field_id)
    assert row_counts(db, *TABLES) == before


def test_a_form_without_csrf_token_is_refused(db, client, auth, admin, owner):
    auth.login(admin.email, PASSWORD)
    before = row_counts(db, *TABLES)
    assert client.post("/admin/facilities", data=form_data(owner)).status_code == 400
    assert row_counts(db, *TABLES) == before


# --- edit and managers -----------------------------------------------------------------------------------

def test_the_edit_page_shows_the_fields_the_hours_and_the_managers(db, client, auth, admin):
    manager = make_user(db, roles=(Role.LAB_MANAGER,))
    facility = make_facility(db, managers=(manager,), opening_hours={"thu": "07:00-19:00"})
    auth.login(admin.email, PASSWORD)
    page = client.get(f"/admin/facilities/{facility.id}/edit").get_data(as_text=True)
    assert re.search(r'<input[^>]*id="hours_thu"[^>]*value="07:00-19:00"', page)
    assert re.search(r'<input[^>]*id="name_en"[^>]*value="' + re.escape(facility.name_en), page)
    assert manager.email in page
    assert f"/admin/facilities/{facility.id}/managers/{manager.id}/remove" in page
    assert page.count('name="csrf_token"') >= 3  # the facility, the removal and the new-manager forms


def test_an_admin_edits_a_facility(db, client, auth, admin, owner, facility):
    auth.login(admin.email, PASSWORD)
    path = f"/admin/facilities/{facility.id}/edit"
    data = form_data(owner, name_en="Renamed", hours_mon="", hours_sat="10:00-14:00", timezone="Asia/Urumqi")
    response = client.post(path, data={**data, "csrf_token": csrf(auth, path)})
    assert response.status_code == 302
    db.expire_all()
    facility = db.get(Facility, facility.id)
    assert (facility.name_en, facility.timezone, facility.owner_id) == ("Renamed", "Asia/Urumqi", owner.id)
    assert facility.opening_hours == {"tue": "08:30-17:30", "fri": "09:00-12:00", "sat": "10:00-14:00"}


def test_a_bad_edit_shows_the_error_and_changes_nothing(db, client, auth, admin, owner, facility):
    auth.login(admin.email, PASSWORD)
    path = f"/admin/facilities/{facility.id}/edit"
    name = facility.name_en
    response = client.post(path, data={**form_data(owner, name_en="Renamed", timezone="Nowhere/City"),
                                       "csrf_token": csrf(auth, path)})
    assert response.status_code == 422
    assert input_is_marked_invalid(response.get_data(as_text=True), "timezone")
    db.expire_all()
    assert db.get(Facility, facility.id).name_en == name


def test_editing_a_missing_facility_is_404(client, auth, admin):
    auth.login(admin.email, PASSWORD)
    assert client.get("/admin/facilities/999999/edit").status_code == 404


def test_an_admin_adds_and_removes_a_manager(db, client, auth, admin, facility):
    user = make_user(db)
    auth.login(admin.email, PASSWORD)
    path = f"/admin/facilities/{facility.id}/edit"
    response = client.post(f"/admin/facilities/{facility.id}/managers",
                           data={"email": user.email.upper(), "csrf_token": csrf(auth, path)})
    assert response.status_code == 302
    assert db.get(FacilityManager, (facility.id, user.id)) is not None
    db.expire_all()
    assert db.get(type(user), user.id).has_role(Role.LAB_MANAGER)
    page = client.get(path).get_data(as_text=True)
    assert user.email in page

    response = client.post(f"/admin/facilities/{facility.id}/managers/{user.id}/remove",
                           data={"csrf_token": csrf(auth, path)})
    assert response.status_code == 302
    assert db.get(FacilityManager, (facility.id, user.id)) is None
    assert db.scalar(select(AuditEntry).where(AuditEntry.action == "facility.manager_removed")) is not None


def test_adding_an_unknown_email_marks_the_field(db, client, auth, admin, facility):
    auth.login(admin.email, PASSWORD)
    path = f"/admin/facilities/{facility.id}/edit"
    before = row_counts(db, *TABLES)
    response = client.post(f"/admin/facilities/{facility.id}/managers",
                           data={"email": "nobody@example.test", "csrf_token": csrf(auth, path)})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert input_is_marked_invalid(page, "email")
    assert re.search(r'<input[^>]*id="name_en"[^>]*value="' + re.escape(facility.name_en), page)  # still filled
    assert re.search(r'<input[^>]*id="hours_mon"[^>]*value="08:30-17:30"', page)
    assert row_counts(db, *TABLES) == before


def test_a_lab_manager_cannot_add_managers(db, client, auth, facility):
    manager = make_user(db, roles=(Role.LAB_MANAGER,))
    db.add(FacilityManager(facility_id=facility.id, user_id=manager.id))
    db.flush()
    other = make_user(db)
    auth.login(manager.email, PASSWORD)
    response = client.post(f"/admin/facilities/{facility.id}/managers",
                           data={"email": other.email, "csrf_token": csrf(auth, "/")})
    assert response.status_code == 403
    assert db.get(FacilityManager, (facility.id, other.id)) is None


# --- API -------------------------------------------------------------------------------------------------

@pytest.fixture
def admin_token(db, admin) -> str:
    return make_token(db, admin)[1]


def api_body(owner) -> dict:
    return {"name_zh": "测试平台", "name_en": "Test platform", "owner_id": owner.id, "city": "510100",
            "timezone": "Asia/Shanghai", "opening_hours": {"mon": "08:00-12:00"}}


def test_the_api_creates_updates_and_lists_a_facility(db, client, admin_token, owner):
    response = client.post("/api/v1/facilities", json=api_body(owner), headers=bearer(admin_token))
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.json
    assert body["name_en"] == "Test platform"
    assert body["opening_hours"] == {"mon": "08:00-12:00"}
    assert body["manager_ids"] == []
    facility_id = body["id"]

    response = client.patch(f"/api/v1/facilities/{facility_id}", json={"city": "511300", "address_en": "Nanchong"},
                            headers=bearer(admin_token))
    assert response.status_code == 200
    assert (response.json["city"], response.json["address_en"]) == ("511300", "Nanchong")

    listed = client.get("/api/v1/facilities?per_page=100", headers=bearer(admin_token)).json
    assert facility_id in [item["id"] for item in listed["items"]]


def test_the_api_assigns_and_removes_managers(db, client, admin_token, facility):
    user = make_user(db)
    path = f"/api/v1/facilities/{facility.id}/managers/{user.id}"
    response = client.post(path, headers=bearer(admin_token))
    assert response.status_code == 200
    assert response.json["manager_ids"] == [user.id]
    assert client.post(path, headers=bearer(admin_token)).json["manager_ids"] == [user.id]  # idempotent
    assert client.delete(path, headers=bearer(admin_token)).status_code == 204
    assert client.get(f"/api/v1/facilities/{facility.id}", headers=bearer(admin_token)).json["manager_ids"] == []
    assert client.delete(path, headers=bearer(admin_token)).status_code == 204


def test_the_api_answers_404_for_an_unknown_user_or_facility(db, client, admin_token, facility):
    assert_error(client.post(f"/api/v1/facilities/{facility.id}/managers/999999", headers=bearer(admin_token)),
                 404, "not_found")
    assert_error(client.patch("/api/v1/facilities/999999", json={"city": "510100"}, headers=bearer(admin_token)),
                 404, "not_found")


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.LAB_MANAGER, Role.FINANCE])
def test_the_api_refuses_non_admins_with_403(db, client, owner, facility, role):
    user = make_user(db, roles=(role,))
    token = make_token(db, user)[1]
    before = row_counts(db, *TABLES)
    assert_error(client.post("/api/v1/facilities", json=api_body(owner), headers=bearer(token)), 403, "forbidden",
                 "您无权执行此操作。")
    assert_error(client.patch(f"/api/v1/facilities/{facility.id}", json={"city": "510300"}, headers=bearer(token)),
                 403, "forbidden")
    assert_error(client.post(f"/api/v1/facilities/{facility.id}/managers/{user.id}", headers=bearer(token)),
                 403, "forbidden")
    assert_error(client.delete(f"/api/v1/facilities/{facility.id}/managers/{user.id}", headers=bearer(token)),
                 403, "forbidden")
    assert row_counts(db, *TABLES) == before


@pytest.mark.parametrize(("change", "field"), [
    ({"city": "999999"}, "city"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"opening_hours": {"mon": "late"}}, "opening_hours"),
    ({"owner_id": 999999}, "owner_id"),
    ({"owner_id": 0}, "owner_id"),
    ({"name_zh": ""}, "name_zh"),
    ({"name_en": None}, "name_en"),
    ({"colour": "red"}, "colour"),
])
def test_the_api_answers_422_naming_the_field_and_writes_nothing(db, client, admin_token, owner, change, field):
    before = row_counts(db, *TABLES)
    details = assert_error(client.post("/api/v1/facilities", json={**api_body(owner), **change},
                                       headers=bearer(admin_token)), 422, "invalid_input", "部分填写内容无效。")
    assert field in details["fields"]
    assert row_counts(db, *TABLES) == before


def test_a_patch_with_a_bad_field_changes_nothing(db, client, admin_token, facility):
    name = facility.name_en
    details = assert_error(client.patch(f"/api/v1/facilities/{facility.id}",
                                        json={"name_en": "Renamed", "timezone": "Nowhere"},
                                        headers=bearer(admin_token)), 422, "invalid_input")
    assert set(details["fields"]) == {"timezone"}
    db.expire_all()
    assert db.get(Facility, facility.id).name_en == name
