"""The telemetry read API: usage sessions, a device's live state and day timeline, dead letters and their counts;
who may call them (lab managers their facilities, admins all), the error format, and the OpenAPI listing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.accounts.models import Role, User
from core.timeutil import utcnow
from devices.ingest import datetime_to_ns
from devices.models import DeadLetter, Device, LiveState, StateCause, StateObservation
from tests.devices.test_live import add_session
from tests.factories import make_device, make_facility, make_reservation, make_resource, make_token, make_user

SHANGHAI = ZoneInfo("Asia/Shanghai")
ROLES = ("anonymous", "researcher", "finance", "other_manager", "lab_manager", "admin")


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert set(response.json) == {"error"}
    assert set(response.json["error"]) == {"code", "message", "details"}
    assert response.json["error"]["code"] == code
    return response.json["error"]["details"]


@dataclass
class World:
    users: dict[str, User]
    tokens: dict[str, str]
    facility_a: int
    facility_b: int
    device: Device
    other_device: Device

    def get(self, client, role: str, path: str):
        headers = bearer(self.tokens[role]) if role != "anonymous" else {}
        return client.get(path.format(DEV=self.device.id, A=self.facility_a), headers=headers)


@pytest.fixture
def world(db) -> World:
    users = {role: make_user(db, roles=(Role.LAB_MANAGER if "manager" in role else role,))
             for role in ROLES if role != "anonymous"}
    facility_a = make_facility(db, managers=(users["lab_manager"],))
    facility_b = make_facility(db, managers=(users["other_manager"],))
    device = make_device(db, resource=make_resource(db, facility=facility_a), device_id="api-sem-1")
    other = make_device(db, resource=make_resource(db, facility=facility_b), device_id="api-reactor-1")
    tokens = {role: make_token(db, user)[1] for role, user in users.items()}
    return World(users, tokens, facility_a.id, facility_b.id, device, other)


ENDPOINTS = ("/api/v1/usage-sessions", "/api/v1/devices/{DEV}/state", "/api/v1/devices/{DEV}/timeline",
             "/api/v1/dead-letters", "/api/v1/dead-letters/counts", "/api/v1/usage-sessions?facility_id={A}")
#   endpoint                                   anonymous researcher finance other_manager lab_manager admin
EXPECTED = {
    "/api/v1/usage-sessions":                  (401, 403, 403, 200, 200, 200),
    "/api/v1/usage-sessions?facility_id={A}":  (401, 403, 403, 403, 200, 200),
    "/api/v1/devices/{DEV}/state":             (401, 403, 403, 403, 200, 200),
    "/api/v1/devices/{DEV}/timeline":          (401, 403, 403, 403, 200, 200),
    "/api/v1/dead-letters":                    (401, 403, 403, 200, 200, 200),
    "/api/v1/dead-letters/counts":             (401, 403, 403, 200, 200, 200),
}
CASES = [(role, path, EXPECTED[path][i]) for path in EXPECTED for i, role in enumerate(ROLES)]


@pytest.mark.parametrize(("role", "path", "expected"), CASES, ids=[f"{r}-{p}" for r, p, _ in CASES])
def test_role_may_call_endpoint(client, world, role, path, expected):
    response = world.get(client, role, path)

    if expected == 200:
        assert response.status_code == 200, response.get_data(as_text=True)
    else:
        assert_error(response, expected, {401: "unauthorized", 403: "forbidden"}[expected])


def test_an_unknown_device_is_404_and_a_huge_id_does_not_match(client, world):
    assert_error(world.get(client, "admin", f"/api/v1/devices/{world.other_device.id + 10_000}/state"), 404,
                 "not_found")
    assert_error(world.get(client, "admin", "/api/v1/devices/99999999999/timeline"), 404, "not_found")


def test_the_state_has_the_last_message_and_the_current_reservation(db, client, world):
    now = utcnow()
    booker = make_user(db, name_zh="赵研究员", name_en="Zhao")
    reservation = make_reservation(db, resource=world.device.resource, user=booker,
                                   starts_at=now - timedelta(minutes=10), ends_at=now + timedelta(minutes=50))
    world.device.state, world.device.state_cause = LiveState.FAULT, StateCause.ALARM
    world.device.state_ts_ns = world.device.last_seen_ns = datetime_to_ns(now - timedelta(seconds=3))
    world.device.state_detail = "vacuum lost"
    db.flush()

    body = world.get(client, "lab_manager", "/api/v1/devices/{DEV}/state").json

    assert body["id"] == world.device.id
    assert body["device_id"] == "api-sem-1"
    assert (body["state"], body["state_cause"], body["state_detail"]) == ("fault", "alarm", "vacuum lost")
    assert 0 <= body["seconds_since_last_message"] < 60
    assert datetime.fromisoformat(body["last_message_at"]) == datetime.fromisoformat(body["state_since"])
    assert body["current_reservation"]["id"] == reservation.id
    assert body["current_reservation"]["user_name_zh"] == "赵研究员"
    assert body["facility_id"] == world.facility_a


def test_the_timeline_of_a_day_in_shanghai(db, client, world):
    def at(h, m=0, day=11):
        return datetime_to_ns(datetime(2026, 3, day, h, m, tzinfo=SHANGHAI))

    for ts, state, cause in ((at(22, day=10), "running", "status"), (at(2), "idle", "status"),
                             (at(9), "offline", "heartbeat")):
        db.add(StateObservation(device_pk=world.device.id, ts_ns=ts, state=LiveState(state), cause=StateCause(cause)))
    db.flush()

    body = world.get(client, "admin", "/api/v1/devices/{DEV}/timeline?date=2026-03-11").json

    assert body["timezone"] == "Asia/Shanghai"
    assert body["date"] == "2026-03-11"
    assert datetime.fromisoformat(body["start"]) == datetime(2026, 3, 10, 16, 0, tzinfo=UTC)
    assert [(s["state"], s["cause"], s["duration_s"]) for s in body["segments"]] == [
        ("running", "status", 2 * 3600), ("idle", "status", 7 * 3600), ("offline", "heartbeat", 15 * 3600)]
    assert_error(world.get(client, "admin", "/api/v1/devices/{DEV}/timeline?date=2026-13-01"), 422, "invalid_input")
    assert_error(world.get(client, "admin", "/api/v1/devices/{DEV}/timeline?date=9999-12-31"), 422, "invalid_input")


def test_usage_sessions_filter_page_and_show_open_ones(db, client, world):
    t = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)
    for hours, end, device in ((0, 1, world.device), (5, None, world.device), (1, 2, world.other_device)):
        start = t + timedelta(hours=hours)
        stop = t + timedelta(hours=end) if end is not None else None
        add_session(db, device, start, stop, truncated=end == 1, run_id="R")

    mine = world.get(client, "lab_manager", "/api/v1/usage-sessions").json
    assert mine["total"] == 2
    assert {s["device_id"] for s in mine["items"]} == {"api-sem-1"}
    newest = mine["items"][0]
    assert newest["open"] is True
    assert newest["ended_at"] is None
    assert newest["duration_s"] > 0
    assert mine["items"][1]["truncated"] is True
    assert mine["items"][1]["duration_s"] == 3600
    window = world.get(client, "lab_manager",
                       "/api/v1/usage-sessions?from=2026-03-10T02:00:00%2B00:00&to=2026-03-10T06:00:00Z").json
    assert [s["open"] for s in window["items"]] == [True]
    same = world.get(client, "lab_manager",
                     "/api/v1/usage-sessions?start=2026-03-10T02:00:00%2B00:00&end=2026-03-10T06:00:00Z").json
    assert same["items"] == window["items"]
    paged = world.get(client, "admin", "/api/v1/usage-sessions?per_page=1&page=2&device_id=api-sem-1").json
    assert (paged["total"], paged["page"], paged["per_page"], len(paged["items"])) == (2, 2, 1, 1)
    assert_error(world.get(client, "lab_manager", "/api/v1/usage-sessions?device_id=api-reactor-1"), 403, "forbidden")
    assert_error(world.get(client, "admin", "/api/v1/usage-sessions?device_id=nope-1"), 404, "not_found")
    details = assert_error(world.get(client, "admin", "/api/v1/usage-sessions?from=2026-03-10T06:00:00Z"
                                                      "&to=2026-03-10T02:00:00Z"), 422, "invalid_input")
    assert "to" in details["fields"]
    assert_error(world.get(client, "admin", "/api/v1/usage-sessions?from=yesterday"), 422, "invalid_input")


def test_dead_letters_and_their_counts(db, client, world):
    for reason, device_id in (("bad_json", "api-sem-1"), ("bad_json", "api-sem-1"), ("bad_state", "api-sem-1"),
                              ("bad_json", "api-reactor-1"), ("unknown_device", "ghost-1")):
        db.add(DeadLetter(received_at=utcnow(), reason=reason, topic=f"labshare/v1/{device_id}/status",
                          device_id=device_id, detail="", payload_head="{oops", payload_size=5))
    db.flush()

    mine = world.get(client, "lab_manager", "/api/v1/dead-letters").json
    assert mine["total"] == 3
    assert set(mine["items"][0]) == {
        "id", "received_at", "reason", "topic", "device_id", "detail", "payload_head", "payload_size"}
    assert world.get(client, "lab_manager", "/api/v1/dead-letters?reason=bad_state").json["total"] == 1
    assert world.get(client, "lab_manager", "/api/v1/dead-letters/counts").json == {
        "total": 3, "by_reason": [{"reason": "bad_json", "count": 2}, {"reason": "bad_state", "count": 1}]}
    everything = world.get(client, "admin", "/api/v1/dead-letters?device_id=ghost-1").json
    assert everything["total"] == 1
    assert everything["items"][0]["reason"] == "unknown_device"
    assert_error(world.get(client, "admin", "/api/v1/dead-letters?reason=typo"), 422, "invalid_input")


def test_the_endpoints_are_in_the_openapi_document(client):
    spec = client.get("/api/v1/openapi.json").json
    paths = spec["paths"]

    for path in ("/api/v1/usage-sessions", "/api/v1/devices/{device_pk}/state", "/api/v1/devices/{device_pk}/timeline",
                 "/api/v1/dead-letters", "/api/v1/dead-letters/counts"):
        assert "get" in paths[path], path
    parameters = {p["name"] for p in paths["/api/v1/usage-sessions"]["get"]["parameters"]}
    assert {"device_id", "resource_id", "facility_id", "from", "to", "page", "per_page"} <= parameters
    assert {p["name"] for p in paths["/api/v1/dead-letters"]["get"]["parameters"]} >= {"reason", "page", "per_page"}
