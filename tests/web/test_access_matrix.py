"""Who may open which page: one row per (role, page) with the expected answer, and the dashboard per role."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import pytest

from booking.models import ResourceStatus
from core.accounts.models import User
from tests.factories import PASSWORD, make_facility, make_resource, make_token, make_user

ROLES = ("anonymous", "researcher", "lab_manager", "finance", "admin")
PAGES = (
    "/",
    "/account/profile",
    "/account/tokens",
    "/admin/users",
    "/admin/organisations",
    "/manage/facilities",
    "/manage/facilities/{A}",
    "/manage/facilities/{B}",
    "/api/v1/me",
    "/imports",
    "/imports/templates/resources.xlsx",
    "/imports/templates/resources.csv",
    "/imports/templates/organisations.xlsx",
    "/imports/templates/users.csv",
    "/resources",
    "/register",
    "/register/done",
    "/admin/organisations#registrations",
    "/reports/sharing",
    "/reports/sharing?facility={B}",
    "/reports/dashboard",
    "/reports/sharing.csv",
    "/reports/sharing/resources/{RB}/sessions",
    "/reports/sharing/resources/{RB}/charges",
)

SIGN_IN = "sign in"  # anonymous visitors are sent to /login?next=<the page>
CATALOG = "catalog"  # anonymous visitors of the home page are sent to the public catalog
REGISTER = "register"  # the confirmation page without a registration just made sends to the form
#        page                       anonymous  researcher lab_manager finance admin
EXPECTED = {
    "/":                           (CATALOG, 200, 200, 200, 200),
    "/account/profile":            (SIGN_IN, 200, 200, 200, 200),
    "/account/tokens":             (SIGN_IN, 200, 200, 200, 200),
    "/admin/users":                (SIGN_IN, 403, 403, 403, 200),
    "/admin/organisations":        (SIGN_IN, 403, 403, 403, 200),
    "/manage/facilities":          (SIGN_IN, 403, 200, 403, 200),
    "/manage/facilities/{A}":      (SIGN_IN, 403, 200, 403, 200),
    "/manage/facilities/{B}":      (SIGN_IN, 403, 403, 403, 200),
    "/api/v1/me":                  (401, 200, 200, 200, 200),
    "/imports":                    (SIGN_IN, 403, 200, 403, 200),
    "/imports/templates/resources.xlsx":     (SIGN_IN, 403, 200, 403, 200),
    "/imports/templates/resources.csv":      (SIGN_IN, 403, 200, 403, 200),
    "/imports/templates/organisations.xlsx": (SIGN_IN, 403, 403, 403, 200),
    "/imports/templates/users.csv":          (SIGN_IN, 403, 403, 403, 200),
    "/resources":                  (200, 200, 200, 200, 200),  # the public catalog
    "/register":                   (200, 200, 200, 200, 200),  # organisation self-registration
    "/register/done":              (REGISTER, REGISTER, REGISTER, REGISTER, REGISTER),  # only after registering
    "/admin/organisations#registrations": (SIGN_IN, 403, 403, 403, 200),  # the approval queue
    "/reports/sharing":            (SIGN_IN, 403, 200, 200, 200),
    "/reports/sharing?facility={B}": (SIGN_IN, 403, 403, 200, 200),  # B is not the lab manager's
    "/reports/dashboard":          (SIGN_IN, 403, 200, 200, 200),
    "/reports/sharing.csv":        (SIGN_IN, 403, 200, 200, 200),
    "/reports/sharing/resources/{RB}/sessions": (SIGN_IN, 403, 403, 200, 200),
    "/reports/sharing/resources/{RB}/charges":  (SIGN_IN, 403, 403, 200, 200),
}
assert set(EXPECTED) == set(PAGES)

# "page_path", not "page": pytest-playwright owns a fixture called page
CASES = [(role, page_path, EXPECTED[page_path][i]) for page_path in PAGES for i, role in enumerate(ROLES)]


@dataclass
class World:
    facility_a: int
    facility_b: int
    users: dict[str, User]
    tokens: dict[str, str]
    resource_b: int = 0  # an instrument of facility B

    def path(self, page: str) -> str:
        return page.format(A=self.facility_a, B=self.facility_b, RB=self.resource_b)


@pytest.fixture
def world(db) -> World:
    """One user per role; the lab manager runs facility A and not facility B."""
    users = {role: make_user(db, roles=(role,)) for role in ROLES if role != "anonymous"}
    facility_a = make_facility(db, managers=(users["lab_manager"],))
    facility_b = make_facility(db)
    tokens = {role: make_token(db, user)[1] for role, user in users.items()}
    # retired, so that the home page's featured instruments do not name facility B; its figures stay reportable
    resource_b = make_resource(db, facility=facility_b, status=ResourceStatus.RETIRED)
    return World(facility_a.id, facility_b.id, users, tokens, resource_b.id)


def open_page(client, auth, world: World, role: str, page_path: str):
    path = world.path(page_path)
    if page_path.startswith("/api/"):
        headers = {} if role == "anonymous" else {"Authorization": f"Bearer {world.tokens[role]}"}
        return client.get(path, headers=headers)
    if role != "anonymous":
        assert auth.login(world.users[role].email, PASSWORD).status_code == 302
    return client.get(path)


@pytest.mark.parametrize(("role", "page_path", "expected"), CASES, ids=[f"{r}-{p}" for r, p, _ in CASES])
def test_role_may_open_page(client, auth, world, role, page_path, expected):
    response = open_page(client, auth, world, role, page_path)

    path = world.path(page_path)
    if expected == SIGN_IN:
        assert response.status_code == 302
        assert response.headers["Location"] == f"/login?next={quote(path.split('#')[0], safe='')}"
    elif expected in (CATALOG, REGISTER):
        assert response.status_code == 302
        assert response.headers["Location"] == {CATALOG: "/resources", REGISTER: "/register"}[expected]
    elif page_path.startswith("/api/") and expected == 401:
        assert response.status_code == 401
        assert response.json["error"]["code"] == "unauthorized"
        assert set(response.json["error"]) == {"code", "message", "details"}
    else:
        assert response.status_code == expected
        if expected == 403:
            assert "您无权查看此页面。" in response.get_data(as_text=True)


def test_api_me_answers_for_the_tokens_owner(client, world):
    for role, secret in world.tokens.items():
        response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
        assert response.json["email"] == world.users[role].email
        assert response.json["roles"] == [role]


def test_a_missing_facility_is_404_even_for_admins(client, auth, world):
    auth.login(world.users["admin"].email, PASSWORD)

    assert client.get(f"/manage/facilities/{world.facility_b + 1000}").status_code == 404


SECTIONS = ("section-catalog", "section-facilities", "section-finance", "section-admin")
#              role          catalog facilities finance admin
DASHBOARD = [("researcher",  (True, False, False, False)),
             ("lab_manager", (True, True, False, False)),
             ("finance",     (True, False, True, False)),
             ("admin",       (True, True, True, True))]


@pytest.mark.parametrize(("role", "shown"), DASHBOARD, ids=[row[0] for row in DASHBOARD])
def test_dashboard_shows_the_sections_of_the_users_roles(client, auth, world, role, shown):
    auth.login(world.users[role].email, PASSWORD)

    page = client.get("/").get_data(as_text=True)

    assert {section: f'data-testid="{section}"' in page for section in SECTIONS} == dict(zip(SECTIONS, shown,
                                                                                             strict=True))


def test_lab_managers_dashboard_and_list_show_only_their_facilities(db, client, auth, world):
    from booking.models import Facility

    auth.login(world.users["lab_manager"].email, PASSWORD)
    managed = db.get(Facility, world.facility_a)
    other = db.get(Facility, world.facility_b)

    for path in ("/", "/manage/facilities"):
        page = client.get(path).get_data(as_text=True)
        assert f"/manage/facilities/{world.facility_a}" in page
        assert managed.name_zh in page
        assert f"/manage/facilities/{world.facility_b}" not in page
        assert other.name_zh not in page


def test_navigation_offers_only_the_pages_a_role_may_open(client, auth, world):
    everything = {"/manage/facilities", "/admin/users", "/admin/organisations"}
    for role, allowed in [("researcher", set()), ("lab_manager", {"/manage/facilities"}), ("finance", set()),
                          ("admin", everything)]:
        auth.login(world.users[role].email, PASSWORD)
        page = client.get("/").get_data(as_text=True)
        for path in ("/manage/facilities", "/admin/users", "/admin/organisations"):
            assert (f'href="{path}"' in page) == (path in allowed), (role, path)
        auth.logout()
