"""The device registry API: who may list, add, read, change and re-key devices; the broker password appears once
(only its hash is stored); bad input is a 422 with field messages and writes nothing; the OpenAPI document."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from booking.models import Resource
from core.accounts.models import Role, User
from core.audit import AuditEntry
from devices.credentials import verify
from devices.models import Device
from devices.registry import DeviceData, add_device
from tests.factories import make_facility, make_resource, make_token, make_user, row_counts

WRITTEN = (Device, AuditEntry)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def assert_error(response, status: int, code: str) -> dict:
    """The project's error format with this status and code; returns its details."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.json
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]["details"]


@dataclass
class World:
    db: Session
    users: dict[str, User]
    secrets: dict[str, str]
    facility_id: int
    other_facility_id: int
    resource: Resource  # facility A, managed by "manager"
    second_resource: Resource  # facility A too
    other_resource: Resource  # facility B, managed by "other_manager"
    device: Device  # on resource
    other_device: Device  # on other_resource

    def h(self, who: str) -> dict[str, str]:
        return bearer(self.secrets[who]) if who != "anonymous" else {}


@pytest.fixture
def world(db) -> World:
    users = {role: make_user(db, roles=roles) for role, roles in (
        ("researcher", (Role.RESEARCHER,)), ("finance", (Role.FINANCE,)), ("manager", (Role.LAB_MANAGER,)),
        ("other_manager", (Role.LAB_MANAGER,)), ("admin", (Role.ADMIN,)))}
    facility = make_facility(db, managers=(users["manager"],))
    other = make_facility(db, managers=(users["other_manager"],))
    resource = make_resource(db, facility=facility)
    second = make_resource(db, facility=facility)
    other_resource = make_resource(db, facility=other)
    device, _ = add_device(db, None, DeviceData("sem-a-01", resource.id, "status"))
    other_device, _ = add_device(db, None, DeviceData("vna-b-01", other_resource.id, "power", power_threshold_w="80"))
    secrets = {role: make_token(db, user)[1] for role, user in users.items()}
    return World(db, users, secrets, facility.id, other.id, resource, second, other_resource, device, other_device)


def counts(db: Session) -> dict[str, int]:
    db.expire_all()
    return row_counts(db, *WRITTEN)


def body_for(world: World, **overrides) -> dict:
    return {"resource_id": world.resource.id, "device_id": "sem-a-02", "usage_source": "power",
            "power_threshold_w": 250.5, "debounce_s": 45, "heartbeat_timeout_s": 120, "description": "机柜二",
            **overrides}


DEVICE_FIELDS = {"id", "device_id", "resource_id", "facility_id", "description", "usage_source", "power_threshold_w",
                 "debounce_s", "heartbeat_timeout_s", "enabled", "created_at"}


# --- adding -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["manager", "admin"])
def test_adding_a_device_returns_it_with_its_password_once(client, world, role):
    response = client.post("/api/v1/devices", json=body_for(world), headers=world.h(role))

    assert response.status_code == 201, response.json
    data = response.json
    assert set(data) == DEVICE_FIELDS | {"password", "broker_username", "topic_prefix"}
    assert data["device_id"] == data["broker_username"] == "sem-a-02"
    assert data["topic_prefix"] == "labshare/v1/sem-a-02/"
    assert (data["resource_id"], data["facility_id"], data["usage_source"], data["power_threshold_w"],
            data["debounce_s"], data["heartbeat_timeout_s"], data["enabled"], data["description"]) == (
        world.resource.id, world.facility_id, "power", 250.5, 45, 120, True, "机柜二")
    device = world.db.get(Device, data["id"])
    assert verify(data["password"], device.credential_hash)
    assert data["password"] not in device.credential_hash
    audit = world.db.scalar(select(AuditEntry).where(AuditEntry.action == "device.created",
                                                     AuditEntry.target_id == str(device.id)))
    assert audit.actor_id == world.users[role].id
    # never again: neither the device nor the list shows it
    again = client.get(f"/api/v1/devices/{device.id}", headers=world.h(role)).json
    assert set(again) == DEVICE_FIELDS
    assert data["password"] not in client.get("/api/v1/devices", headers=world.h(role)).get_data(as_text=True)


def test_defaults_apply_to_what_is_left_out(client, world):
    response = client.post("/api/v1/devices", json={"resource_id": world.resource.id, "device_id": "sem-a-03",
                                                    "usage_source": "events"}, headers=world.h("manager"))

    assert response.status_code == 201
    assert (response.json["debounce_s"], response.json["heartbeat_timeout_s"], response.json["power_threshold_w"],
            response.json["description"]) == (60, 300, None, "")


INVALID = [
    ({"device_id": "bad id"}, "device_id"),
    ({"device_id": ""}, "device_id"),
    ({"device_id": "x" * 65}, "device_id"),
    ({"device_id": "sem-a-02\n"}, "device_id"),
    ({"device_id": "sem-a-01"}, "device_id"),  # already registered
    ({"device_id": "vna-b-01"}, "device_id"),  # in another facility: ids are global
    ({"power_threshold_w": None}, "power_threshold_w"),
    ({"power_threshold_w": -1}, "power_threshold_w"),
    ({"power_threshold_w": "NaN"}, "power_threshold_w"),
    ({"power_threshold_w": 1e12}, "power_threshold_w"),
    ({"debounce_s": 3601}, "debounce_s"),
    ({"debounce_s": -1}, "debounce_s"),
    ({"debounce_s": "soon"}, "debounce_s"),
    ({"heartbeat_timeout_s": 9}, "heartbeat_timeout_s"),
    ({"heartbeat_timeout_s": 86401}, "heartbeat_timeout_s"),
    ({"usage_source": "vibes"}, "usage_source"),
    ({"description": "长" * 2001}, "description"),
    ({"device_id": "nul\x00"}, "device_id"),
    ({"resource_id": 0}, "resource_id"),
    ({"colour": "red"}, "colour"),
]


@pytest.mark.parametrize(("overrides", "field"), INVALID, ids=[f"{f}-{i}" for i, (_, f) in enumerate(INVALID)])
def test_invalid_input_is_a_422_naming_the_field_and_writes_nothing(client, world, overrides, field):
    before = counts(world.db)

    response = client.post("/api/v1/devices", json=body_for(world, **overrides), headers=world.h("manager"))

    details = assert_error(response, 422, "invalid_input")
    assert field in details["fields"], details
    assert all(isinstance(m, str) and m for m in details["fields"][field])
    assert counts(world.db) == before


def test_every_mistake_is_reported_at_once(client, world):
    response = client.post("/api/v1/devices", json=body_for(world, device_id="sem-a-01", power_threshold_w=None,
                                                             debounce_s=9999), headers=world.h("manager"))

    details = assert_error(response, 422, "invalid_input")
    assert set(details["fields"]) == {"device_id", "power_threshold_w", "debounce_s"}


def test_adding_to_an_unknown_resource_is_404(client, world):
    before = counts(world.db)

    response = client.post("/api/v1/devices", json=body_for(world, resource_id=world.other_resource.id + 1000),
                           headers=world.h("manager"))

    assert assert_error(response, 404, "not_found") == {"kind": "resource",
                                                        "id": str(world.other_resource.id + 1000)}
    assert counts(world.db) == before


# --- who may do what --------------------------------------------------------------------------------------------

#          operation                 anonymous researcher finance other_manager manager admin
MATRIX = {
    "list":                          (401, 403, 403, 200, 200, 200),
    "add":                           (401, 403, 403, 403, 201, 201),
    "get":                           (401, 403, 403, 403, 200, 200),
    "patch":                         (401, 403, 403, 403, 200, 200),
    "rotate":                        (401, 403, 403, 403, 200, 200),
}
ROLES = ("anonymous", "researcher", "finance", "other_manager", "manager", "admin")
CASES = [(role, op, expected[i]) for op, expected in MATRIX.items() for i, role in enumerate(ROLES)]


def call(client, world: World, role: str, operation: str):
    path, headers = f"/api/v1/devices/{world.device.id}", world.h(role)
    if operation == "list":
        return client.get("/api/v1/devices", headers=headers)
    if operation == "add":
        return client.post("/api/v1/devices", json=body_for(world), headers=headers)
    if operation == "get":
        return client.get(path, headers=headers)
    if operation == "patch":
        return client.patch(path, json={"enabled": False}, headers=headers)
    return client.post(f"{path}/credential", headers=headers)


@pytest.mark.parametrize(("role", "operation", "expected"), CASES, ids=[f"{r}-{o}" for r, o, _ in CASES])
def test_role_may_use_the_devices_api(client, world, role, operation, expected):
    hash_before = world.device.credential_hash
    before = counts(world.db)

    response = call(client, world, role, operation)

    if expected >= 400:
        assert_error(response, expected, {401: "unauthorized", 403: "forbidden"}[expected])
        assert counts(world.db) == before
        assert world.device.credential_hash == hash_before
        assert world.device.enabled is True
    else:
        assert response.status_code == expected, response.json


def test_an_unknown_device_is_404(client, world):
    missing = world.other_device.id + 1000
    for response in (client.get(f"/api/v1/devices/{missing}", headers=world.h("admin")),
                     client.patch(f"/api/v1/devices/{missing}", json={"enabled": True}, headers=world.h("admin")),
                     client.post(f"/api/v1/devices/{missing}/credential", headers=world.h("admin"))):
        assert assert_error(response, 404, "not_found")["kind"] == "device"


# --- the list -----------------------------------------------------------------------------------------------------

def listed(client, world: World, who: str, **query) -> list[str]:
    response = client.get("/api/v1/devices", headers=world.h(who), query_string=query)
    assert response.status_code == 200, response.json
    return [item["device_id"] for item in response.json["items"]]


def test_the_list_holds_the_devices_of_managed_facilities(client, world):
    add_device(world.db, None, DeviceData("sem-a-00", world.second_resource.id, "events"))
    world.db.flush()

    assert listed(client, world, "manager") == ["sem-a-00", "sem-a-01"]
    assert listed(client, world, "other_manager") == ["vna-b-01"]
    assert listed(client, world, "admin") == ["sem-a-00", "sem-a-01", "vna-b-01"]


def test_the_list_filters_by_facility_resource_and_enabled(client, world):
    add_device(world.db, None, DeviceData("sem-a-00", world.second_resource.id, "events"))
    world.other_device.enabled = False
    world.db.flush()

    assert listed(client, world, "admin", facility_id=world.other_facility_id) == ["vna-b-01"]
    assert listed(client, world, "admin", resource_id=world.second_resource.id) == ["sem-a-00"]
    assert listed(client, world, "admin", enabled="false") == ["vna-b-01"]
    assert listed(client, world, "admin", enabled="true") == ["sem-a-00", "sem-a-01"]
    # another facility's devices stay out of a lab manager's list, filter or not
    assert listed(client, world, "manager", facility_id=world.other_facility_id) == []


def test_the_list_is_paginated_with_a_total(client, world):
    for n in range(3):
        add_device(world.db, None, DeviceData(f"sem-a-1{n}", world.resource.id, "status"))
    world.db.flush()

    response = client.get("/api/v1/devices", headers=world.h("manager"), query_string={"page": 2, "per_page": 2})

    assert response.json["total"] == 4
    assert (response.json["page"], response.json["per_page"]) == (2, 2)
    assert [item["device_id"] for item in response.json["items"]] == ["sem-a-11", "sem-a-12"]
    assert set(response.json["items"][0]) == DEVICE_FIELDS


def test_bad_filters_are_a_422(client, world):
    response = client.get("/api/v1/devices", headers=world.h("admin"), query_string={"enabled": "maybe"})

    assert "enabled" in assert_error(response, 422, "invalid_input")["fields"]


# --- changing and re-keying ---------------------------------------------------------------------------------------

def test_patch_disables_enables_and_describes(client, world):
    path = f"/api/v1/devices/{world.device.id}"

    off = client.patch(path, json={"enabled": False}, headers=world.h("manager"))
    assert off.status_code == 200
    assert off.json["enabled"] is False
    described = client.patch(path, json={"description": "  二号楼 B201  ", "enabled": True},
                             headers=world.h("manager"))

    assert described.json["description"] == "二号楼 B201"
    assert described.json["enabled"] is True
    world.db.expire_all()
    assert (world.device.enabled, world.device.description) == (True, "二号楼 B201")
    actions = world.db.scalars(select(AuditEntry.action).where(AuditEntry.target_type == "device",
                                                               AuditEntry.target_id == str(world.device.id))
                               .order_by(AuditEntry.id)).all()
    assert actions[-3:] == ["device.disabled", "device.updated", "device.enabled"]


@pytest.mark.parametrize(("body", "field"), [({}, "_schema"), ({"enabled": "perhaps"}, "enabled"),
                                             ({"description": "长" * 2001}, "description"),
                                             ({"device_id": "renamed"}, "device_id")])
def test_a_bad_patch_is_a_422_and_changes_nothing(client, world, body, field):
    before = counts(world.db)

    response = client.patch(f"/api/v1/devices/{world.device.id}", json=body, headers=world.h("manager"))

    assert field in assert_error(response, 422, "invalid_input")["fields"]
    assert counts(world.db) == before
    assert world.device.description == ""


def test_rotating_returns_a_new_password_and_replaces_the_hash(client, world):
    old_hash = world.device.credential_hash

    response = client.post(f"/api/v1/devices/{world.device.id}/credential", headers=world.h("manager"))

    assert response.status_code == 200
    assert set(response.json) == {"id", "device_id", "broker_username", "password", "topic_prefix"}
    assert response.json["topic_prefix"] == "labshare/v1/sem-a-01/"
    world.db.expire_all()
    assert world.device.credential_hash != old_hash
    assert verify(response.json["password"], world.device.credential_hash)
    second = client.post(f"/api/v1/devices/{world.device.id}/credential", headers=world.h("admin")).json
    world.db.expire_all()
    assert second["password"] != response.json["password"]
    assert not verify(response.json["password"], world.device.credential_hash)


# --- the OpenAPI document -------------------------------------------------------------------------------------------

def test_the_openapi_document_describes_the_device_api(client):
    doc = client.get("/api/v1/openapi.json").json

    paths = doc["paths"]
    assert set(paths["/api/v1/devices"]) >= {"get", "post"}
    assert set(paths["/api/v1/devices/{device_pk}"]) >= {"get", "patch"}
    assert "post" in paths["/api/v1/devices/{device_pk}/credential"]
    query = {p["name"] for p in paths["/api/v1/devices"]["get"]["parameters"] if p["in"] == "query"}
    assert {"page", "per_page", "facility_id", "resource_id", "enabled"} <= query
    assert "201" in paths["/api/v1/devices"]["post"]["responses"]
    create = doc["components"]["schemas"]["DeviceCreate"]["properties"]
    assert create["debounce_s"]["maximum"] == 3600
    assert create["heartbeat_timeout_s"]["minimum"] == 10
    assert create["usage_source"]["enum"] == ["events", "status", "power"]
    param = next(p for p in paths["/api/v1/devices/{device_pk}"]["parameters"] if p["name"] == "device_pk")
    assert param["schema"]["type"] == "integer"
