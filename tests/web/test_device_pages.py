"""The device registry pages: who may open them and press their buttons, the list with its facility filter,
adding a device (its broker password shown once, only its hash stored), field errors that write nothing,
rotating the credential and enabling or disabling a device."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from sqlalchemy import select

from booking.models import Resource
from core.accounts.models import User
from core.audit import AuditEntry
from core.i18n import gettext_for
from devices.credentials import verify
from devices.models import Device
from devices.registry import DeviceData, add_device
from tests.factories import PASSWORD, make_facility, make_resource, make_user, row_counts

zh = gettext_for("zh_CN")  # what the pages say in the default language
ROLES = ("anonymous", "researcher", "finance", "other_manager", "manager", "admin")
SIGN_IN = "sign in"
FORBIDDEN_TEXT = "您无权查看此页面。"


@dataclass
class World:
    users: dict[str, User]
    facility_id: int
    other_facility_id: int
    resource: Resource  # in the manager's facility
    other_resource: Resource  # in the other manager's facility
    device: Device  # on `resource`
    other_device: Device  # on `other_resource`

    def login(self, auth, role: str) -> None:
        if role != "anonymous":
            assert auth.login(self.users[role].email, PASSWORD).status_code == 302


@pytest.fixture
def world(db) -> World:
    users = {role: make_user(db, roles=roles) for role, roles in (
        ("researcher", ("researcher",)), ("finance", ("finance",)), ("manager", ("lab_manager",)),
        ("other_manager", ("lab_manager",)), ("admin", ("admin",)))}
    facility = make_facility(db, managers=(users["manager"],))
    other = make_facility(db, managers=(users["other_manager"],))
    resource = make_resource(db, facility=facility, name_zh="场发射扫描电镜", name_en="Field-emission SEM")
    other_resource = make_resource(db, facility=other, name_zh="矢量网络分析仪", name_en="VNA")
    device, _ = add_device(db, None, DeviceData("sem-a-01", resource.id, "status"))
    other_device, _ = add_device(db, None, DeviceData("vna-b-01", other_resource.id, "power",
                                                      power_threshold_w="120", debounce_s=30))
    db.flush()
    return World(users, facility.id, other.id, resource, other_resource, device, other_device)


def text_of(response) -> str:
    return response.get_data(as_text=True)


def csrf(auth, path: str = "/manage/devices/new") -> str:
    return auth.csrf_token(path)


def field_errors(page: str, field_id: str) -> list[str]:
    """The messages under one form field (the field macro puts them right after its input)."""
    start = page.index(f'id="{field_id}"')
    end = page.find('<div class="mb-3">', start)
    block = page[start:end if end != -1 else page.index("</form>", start)]
    return [html.unescape(m) for m in re.findall(r'<div class="invalid-feedback d-block">(.*?)</div>', block)]


def marked_text(page: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}"[^>]*>(.*?)</', page, re.S)
    assert match, f"nothing marked {testid}"
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip()


def flashes(page: str) -> list[str]:
    alerts = re.findall(r'<div class="alert alert-\w+ alert-dismissible[^>]*>(.*?)<button', page, re.S)
    return [html.unescape(" ".join(message.split())) for message in alerts]


def device_count(db) -> int:
    db.expire_all()
    return len(db.scalars(select(Device.id)).all())


def form_data(auth, world: World, **overrides) -> dict[str, str]:
    data = {"csrf_token": csrf(auth), "resource_id": str(world.resource.id), "device_id": "sem-a-02",
            "description": "二号机柜电源", "usage_source": "power", "power_threshold_w": "250.5", "debounce_s": "45",
            "heartbeat_timeout_s": "120"}
    data.update(overrides)
    return data


# --- who may open what ----------------------------------------------------------------------------------------

#        page                                  anonymous researcher finance other_mgr manager admin
PAGES = {
    "/manage/devices":                         (SIGN_IN, 403, 403, 200, 200, 200),
    "/manage/devices?facility={A}":            (SIGN_IN, 403, 403, 403, 200, 200),
    "/manage/devices/new":                     (SIGN_IN, 403, 403, 200, 200, 200),
    "/manage/devices/new?facility={A}":        (SIGN_IN, 403, 403, 403, 200, 200),
    "/manage/devices/{device}/credential":     (SIGN_IN, 403, 403, 403, 200, 200),
}
CASES = [(role, path, expected[i]) for path, expected in PAGES.items() for i, role in enumerate(ROLES)]


@pytest.mark.parametrize(("role", "page_path", "expected"), CASES, ids=[f"{r}-{p}" for r, p, _ in CASES])
def test_role_may_open_device_page(client, auth, world, role, page_path, expected):
    world.login(auth, role)
    path = page_path.format(A=world.facility_id, device=world.device.id)

    response = client.get(path)

    if expected == SIGN_IN:
        assert response.status_code == 302
        assert response.headers["Location"] == f"/login?next={quote(path, safe='')}"
    else:
        assert response.status_code == expected
        if expected == 403:
            assert FORBIDDEN_TEXT in text_of(response)


@pytest.mark.parametrize("role", ["researcher", "finance", "other_manager"])
@pytest.mark.parametrize("action", ["credential", "disable"])
def test_others_cannot_rotate_or_disable_a_device_and_nothing_changes(db, client, auth, world, role, action):
    world.login(auth, role)
    token = auth.csrf_token("/")
    hash_before = world.device.credential_hash
    before = row_counts(db, AuditEntry)

    response = client.post(f"/manage/devices/{world.device.id}/{action}", data={"csrf_token": token})

    assert response.status_code == 403
    db.expire_all()
    assert world.device.credential_hash == hash_before
    assert world.device.enabled is True
    assert row_counts(db, AuditEntry) == before


def test_anonymous_posts_are_sent_to_sign_in_and_change_nothing(db, client, auth, world):
    token = auth.csrf_token("/login")
    hash_before = world.device.credential_hash

    for action in ("credential", "disable"):
        response = client.post(f"/manage/devices/{world.device.id}/{action}", data={"csrf_token": token})
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")
    db.expire_all()
    assert world.device.credential_hash == hash_before
    assert world.device.enabled is True


def test_an_unknown_device_is_404(client, auth, world):
    world.login(auth, "admin")
    missing = world.other_device.id + 1000

    assert client.get(f"/manage/devices/{missing}/credential").status_code == 404
    assert client.post(f"/manage/devices/{missing}/disable", data={"csrf_token": csrf(auth)}).status_code == 404
    assert client.get(f"/manage/devices?facility={world.other_facility_id + 1000}").status_code == 404
    assert client.get(f"/manage/devices/{2**63}/credential").status_code == 404
    assert client.get(f"/manage/devices?facility={2**63}").status_code == 404


def test_the_navbar_offers_devices_to_lab_managers_and_admins_only(client, auth, world):
    for role, shown in (("researcher", False), ("finance", False), ("manager", True), ("admin", True)):
        world.login(auth, role)
        assert ('href="/manage/devices"' in text_of(client.get("/"))) is shown, role
        auth.logout()


# --- the list -------------------------------------------------------------------------------------------------

def listed_ids(page: str) -> list[str]:
    return re.findall(r'data-testid="device-row"[^>]*data-device-id="([^"]+)"', page)


def test_a_lab_manager_sees_the_devices_of_their_facilities_only(client, auth, world):
    world.login(auth, "manager")

    page = text_of(client.get("/manage/devices"))

    assert listed_ids(page) == ["sem-a-01"]
    row = page[page.index('data-device-id="sem-a-01"'):]
    row = row[:row.index("</tr>")]
    assert "场发射扫描电镜" in row
    assert zh("Status “running”") in row
    assert "300 s" in row  # heartbeat timeout
    assert 'data-testid="device-enabled"' in row
    assert 'data-testid="device-state"' in row  # the slot for the live state
    assert world.device.credential_hash not in page


def test_admins_see_every_device_and_filter_by_facility(client, auth, world):
    world.login(auth, "admin")

    assert sorted(listed_ids(text_of(client.get("/manage/devices")))) == ["sem-a-01", "vna-b-01"]
    page = text_of(client.get(f"/manage/devices?facility={world.other_facility_id}"))
    assert listed_ids(page) == ["vna-b-01"]
    row = page[page.index('data-device-id="vna-b-01"'):]
    assert "≥ 120 W" in row[:row.index("</tr>")]
    assert zh("debounce %(s)s s") % {"s": 30} in row[:row.index("</tr>")]


def test_the_facility_page_links_to_its_devices(client, auth, world):
    world.login(auth, "manager")

    page = text_of(client.get(f"/manage/facilities/{world.facility_id}"))

    assert f'href="/manage/devices?facility={world.facility_id}"' in page


# --- adding a device ------------------------------------------------------------------------------------------

def test_the_form_offers_only_resources_of_managed_facilities(client, auth, world):
    world.login(auth, "manager")

    page = text_of(client.get("/manage/devices/new"))

    assert f'<option value="{world.resource.id}"' in page
    assert f'<option value="{world.other_resource.id}"' not in page


def test_a_lab_manager_adds_a_device_and_sees_its_password_once(db, client, auth, world):
    world.login(auth, "manager")

    response = client.post("/manage/devices/new", data=form_data(auth, world))

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    page = text_of(response)
    secret = marked_text(page, "broker-password")
    assert len(secret) >= 24
    assert marked_text(page, "broker-username") == "sem-a-02"
    assert marked_text(page, "topic-prefix") == "labshare/v1/sem-a-02/"
    example = marked_text(page, "example-command")
    assert example.startswith("mosquitto_pub -h 127.0.0.1 -p 1883 -u sem-a-02 -P ")
    assert secret in example
    assert "-t labshare/v1/sem-a-02/status" in example
    db.expire_all()
    device = db.scalar(select(Device).where(Device.device_id == "sem-a-02"))
    assert (device.resource_id, device.usage_source, str(device.power_threshold_w), device.debounce_s,
            device.heartbeat_timeout_s, device.description) == (world.resource.id, "power", "250.50", 45, 120,
                                                               "二号机柜电源")
    # only Mosquitto's hash of it is kept, and it is nowhere else
    assert verify(secret, device.credential_hash)
    assert secret not in device.credential_hash
    entry = db.scalar(select(AuditEntry).where(AuditEntry.action == "device.created",
                                               AuditEntry.target_id == str(device.id)))
    assert entry.actor_id == world.users["manager"].id
    assert secret not in str(entry.data)
    # ... and never shown again
    for path in ("/manage/devices", f"/manage/devices/{device.id}/credential"):
        assert secret not in text_of(client.get(path))


def test_the_resource_can_be_preselected(client, auth, world):
    world.login(auth, "manager")

    page = text_of(client.get(f"/manage/devices/new?resource={world.resource.id}"))

    assert f'<option selected value="{world.resource.id}"' in page


INVALID = [
    ({"device_id": "sem a/01"}, "device_id", "1 to 64 letters, digits, - or _."),
    ({"device_id": ""}, "device_id", "1 to 64 letters, digits, - or _."),
    ({"device_id": "x" * 65}, "device_id", "1 to 64 letters, digits, - or _."),
    ({"device_id": "sem-a-02\n"}, "device_id", "1 to 64 letters, digits, - or _."),
    ({"device_id": "sem-a-01"}, "device_id", "A device with this id is already registered."),
    ({"device_id": "vna-b-01"}, "device_id", "A device with this id is already registered."),  # ids are global
    ({"power_threshold_w": ""}, "power_threshold_w", "Power-measured devices need a threshold."),
    ({"power_threshold_w": "-1"}, "power_threshold_w", "Enter a power in watts, 0 or more."),
    ({"power_threshold_w": "many"}, "power_threshold_w", "Enter a power in watts, 0 or more."),
    ({"debounce_s": "3601"}, "debounce_s", "Between 0 and 3600 seconds."),
    ({"debounce_s": "-5"}, "debounce_s", "Between 0 and 3600 seconds."),
    ({"debounce_s": "half"}, "debounce_s", "Enter a whole number."),
    ({"heartbeat_timeout_s": "5"}, "heartbeat_timeout_s", "Between 10 and 86400 seconds."),
    ({"usage_source": "vibes"}, "usage_source", "Choose events, status or power."),
    ({"description": "长" * 2001}, "description", "At most 2000 characters."),
    ({"resource_id": ""}, "resource_id", "Choose a resource of a facility you manage."),
    ({"resource_id": "{other}"}, "resource_id", "Choose a resource of a facility you manage."),
]


@pytest.mark.parametrize(("overrides", "field", "message"), INVALID,
                         ids=[f"{field}-{i}" for i, (_, field, _) in enumerate(INVALID)])
def test_invalid_input_is_shown_next_to_the_field_and_writes_nothing(db, client, auth, world, overrides, field,
                                                                     message):
    world.login(auth, "manager")
    overrides = {k: v.format(other=world.other_resource.id) for k, v in overrides.items()}
    before = row_counts(db, Device, AuditEntry)

    response = client.post("/manage/devices/new", data=form_data(auth, world, **overrides))

    assert response.status_code == 422
    page = text_of(response)
    assert field_errors(page, field) == [zh(message)]
    assert 'data-testid="broker-password"' not in page
    db.expire_all()
    assert row_counts(db, Device, AuditEntry) == before


def test_several_mistakes_are_shown_together(client, auth, world):
    world.login(auth, "manager")

    page = text_of(client.post("/manage/devices/new", data=form_data(
        auth, world, device_id="sem-a-01", power_threshold_w="", debounce_s="4000")))

    assert field_errors(page, "device_id") == [zh("A device with this id is already registered.")]
    assert field_errors(page, "power_threshold_w") == [zh("Power-measured devices need a threshold.")]
    assert field_errors(page, "debounce_s") == [zh("Between 0 and 3600 seconds.")]


def test_the_form_keeps_what_was_typed_after_an_error(client, auth, world):
    world.login(auth, "manager")

    page = text_of(client.post("/manage/devices/new", data=form_data(auth, world, debounce_s="4000")))

    assert 'value="sem-a-02"' in page
    assert 'value="250.5"' in page
    assert "二号机柜电源" in page


def test_a_post_without_csrf_token_is_refused(db, client, auth, world):
    world.login(auth, "manager")
    before = device_count(db)

    response = client.post("/manage/devices/new", data={**form_data(auth, world), "csrf_token": "forged"})

    assert response.status_code == 400
    assert device_count(db) == before


# --- rotating the credential, enabling and disabling ------------------------------------------------------------

@pytest.mark.parametrize("role", ["manager", "admin"])
def test_rotating_shows_a_new_password_once_and_replaces_the_hash(db, client, auth, world, role):
    world.login(auth, role)
    old_hash = world.device.credential_hash
    confirm = text_of(client.get(f"/manage/devices/{world.device.id}/credential"))
    assert 'data-testid="rotate-form"' in confirm
    assert 'data-testid="broker-password"' not in confirm  # asking changes nothing
    db.expire_all()
    assert world.device.credential_hash == old_hash

    response = client.post(f"/manage/devices/{world.device.id}/credential",
                           data={"csrf_token": csrf(auth, f"/manage/devices/{world.device.id}/credential")})

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    secret = marked_text(text_of(response), "broker-password")
    db.expire_all()
    assert world.device.credential_hash != old_hash
    assert verify(secret, world.device.credential_hash)
    assert db.scalar(select(AuditEntry).where(AuditEntry.action == "device.credential_rotated",
                                              AuditEntry.target_id == str(world.device.id))) is not None
    assert secret not in text_of(client.get("/manage/devices"))


def test_a_lab_manager_disables_and_enables_a_device(db, client, auth, world):
    world.login(auth, "manager")
    back = f"/manage/devices?facility={world.facility_id}"

    response = client.post(f"/manage/devices/{world.device.id}/disable",
                           data={"csrf_token": csrf(auth), "next": back})

    assert response.status_code == 302
    assert response.headers["Location"] == back
    db.expire_all()
    assert world.device.enabled is False
    page = text_of(client.get(back))
    disabled = zh("Device %(device_id)s is disabled: its messages are dropped.") % {"device_id": "sem-a-01"}
    assert disabled in flashes(page)
    assert 'data-testid="device-disabled"' in page
    assert 'data-testid="enable"' in page

    client.post(f"/manage/devices/{world.device.id}/enable", data={"csrf_token": csrf(auth)})

    db.expire_all()
    assert world.device.enabled is True
    actions = db.scalars(select(AuditEntry.action).where(AuditEntry.target_id == str(world.device.id),
                                                         AuditEntry.target_type == "device")
                         .order_by(AuditEntry.id)).all()
    assert actions[-2:] == ["device.disabled", "device.enabled"]


def test_disabling_goes_back_only_to_a_page_of_this_site(client, auth, world):
    world.login(auth, "manager")

    response = client.post(f"/manage/devices/{world.device.id}/disable",
                           data={"csrf_token": csrf(auth), "next": "https://evil.example/"})

    assert response.headers["Location"] == "/manage/devices"
