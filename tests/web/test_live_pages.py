"""The live pages: who may open the board, its polled fragment, a device's day and the dead letters; what they
show (states, counts, current bookings, the timeline and power charts, a notice when the time-series store is
down, truncated sessions, reasons explained in Chinese); and /metrics for loopback clients only."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from html import unescape
from urllib.parse import quote

import pytest
from prometheus_client import CollectorRegistry, Counter

from core.accounts.models import Role, User
from core.timeutil import utcnow
from devices.ingest import datetime_to_ns
from devices.models import DeadLetter, Device, DeviceEvent, LiveState, StateCause, StateObservation
from telemetry.points import metric_point
from telemetry.tsdb import SqlStore, StoreUnavailable
from tests.devices.test_live import add_session
from tests.factories import PASSWORD, make_device, make_facility, make_reservation, make_resource, make_user

ROLES = ("anonymous", "researcher", "finance", "other_manager", "lab_manager", "admin")
SIGN_IN = "sign in"
#   page                                 anonymous researcher finance other_manager lab_manager admin
EXPECTED = {
    "/manage/live":                     (SIGN_IN, 403, 403, 200, 200, 200),
    "/manage/live/board":               (SIGN_IN, 403, 403, 200, 200, 200),
    "/manage/live?facility={A}":        (SIGN_IN, 403, 403, 403, 200, 200),
    "/manage/devices/{DEV}/live":       (SIGN_IN, 403, 403, 403, 200, 200),
    "/manage/dead-letters":             (SIGN_IN, 403, 403, 200, 200, 200),
}
CASES = [(role, path, EXPECTED[path][i]) for path in EXPECTED for i, role in enumerate(ROLES)]


@dataclass
class World:
    users: dict[str, User]
    facility_a: int
    facility_b: int
    device: Device  # in facility A
    other_device: Device  # in facility B

    def path(self, template: str) -> str:
        return template.format(A=self.facility_a, DEV=self.device.id)


@pytest.fixture
def world(db) -> World:
    users = {role: make_user(db, roles=(Role.LAB_MANAGER if "manager" in role else role,))
             for role in ROLES if role != "anonymous"}
    facility_a = make_facility(db, managers=(users["lab_manager"],), name_zh="科创岛甲楼")
    facility_b = make_facility(db, managers=(users["other_manager"],), name_zh="宜宾分岛")
    device = make_device(db, resource=make_resource(db, facility=facility_a, name_zh="场发射扫描电镜"),
                         device_id="sem-a-1")
    other = make_device(db, resource=make_resource(db, facility=facility_b), device_id="reactor-b-1")
    return World(users, facility_a.id, facility_b.id, device, other)


def sign_in(auth, world: World, role: str) -> None:
    if role != "anonymous":
        assert auth.login(world.users[role].email, PASSWORD).status_code == 302


@pytest.mark.parametrize(("role", "page_path", "expected"), CASES, ids=[f"{r}-{p}" for r, p, _ in CASES])
def test_role_may_open_live_page(client, auth, world, role, page_path, expected):
    sign_in(auth, world, role)

    response = client.get(world.path(page_path))

    if expected == SIGN_IN:
        assert response.status_code == 302
        path = world.path(page_path).split("?")[0]
        assert response.headers["Location"].startswith(f"/login?next={quote(path, safe='')}")
    else:
        assert response.status_code == expected
        if expected == 403:
            assert "您无权查看此页面。" in response.get_data(as_text=True)


def test_a_missing_device_is_404(client, auth, world):
    sign_in(auth, world, "admin")

    assert client.get(f"/manage/devices/{world.other_device.id + 10_000}/live").status_code == 404


def test_the_navbar_offers_the_live_board_to_managers_and_admins_only(client, auth, world):
    for role, shown in (("researcher", False), ("finance", False), ("lab_manager", True), ("admin", True)):
        sign_in(auth, world, role)
        assert ('href="/manage/live"' in client.get("/").get_data(as_text=True)) is shown, role
        auth.logout()


# --- the board ------------------------------------------------------------------------------------------

def test_the_board_shows_state_counts_last_message_and_current_booking_and_polls_itself(db, client, auth, world):
    booker = make_user(db, name_zh="李工程师")
    now = utcnow()
    make_reservation(db, resource=world.device.resource, user=booker, starts_at=now - timedelta(minutes=30),
                     ends_at=now + timedelta(minutes=90))
    world.device.state, world.device.last_seen_ns = LiveState.RUNNING, datetime_to_ns(now - timedelta(seconds=7))
    db.flush()
    sign_in(auth, world, "lab_manager")

    page = client.get("/manage/live").get_data(as_text=True)

    assert "实时看板" in page or "Live board" in page
    assert 'hx-get="/manage/live/board"' in page
    assert 'hx-trigger="every 1s"' in page
    row = re.search(r'<tr data-testid="live-row" data-device-id="sem-a-1".*?</tr>', page, re.S).group(0)
    assert 'data-state="running"' in row
    assert "text-bg-success" in row
    assert "李工程师" in row
    assert re.search(r"\d+ (秒前|s ago)", row)
    assert 'data-testid="count-running" data-count="1"' in page
    assert "reactor-b-1" not in page  # another facility's device


def test_the_fragment_is_the_table_alone_and_follows_the_facility_filter(db, client, auth, world):
    sign_in(auth, world, "admin")

    fragment = client.get(f"/manage/live/board?facility={world.facility_b}").get_data(as_text=True)

    assert "<html" not in fragment
    assert 'data-testid="live-table"' in fragment
    assert "reactor-b-1" in fragment
    assert "sem-a-1" not in fragment
    world.other_device.state = LiveState.FAULT
    db.flush()
    fragment = client.get(f"/manage/live/board?facility={world.facility_b}").get_data(as_text=True)
    assert 'data-device-id="reactor-b-1" data-state="fault"' in fragment


def test_a_poll_after_the_session_ended_is_sent_to_sign_in_instead_of_swapping_the_login_page_in(client):
    response = client.get("/manage/live/board", headers={"HX-Request": "true"})

    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login?next=/manage/live"


# --- a device's day -------------------------------------------------------------------------------------

def chart_options(page: str) -> list[dict]:
    return [json.loads(unescape(m)) for m in re.findall(r'data-chart="([^"]*)"', page)]


def test_the_device_page_shows_timeline_power_sessions_and_events(app, db, connection, client, auth, world):
    device, now = world.device, utcnow()
    db.add(StateObservation(device_pk=device.id, ts_ns=datetime_to_ns(now - timedelta(hours=30)),
                            state=LiveState.IDLE, cause=StateCause.STATUS))
    db.add(StateObservation(device_pk=device.id, ts_ns=datetime_to_ns(now - timedelta(seconds=5)),
                            state=LiveState.RUNNING, cause=StateCause.STATUS))
    start = now - timedelta(hours=2)
    add_session(db, device, start, now, truncated=True, run_id="RUN-7", operator="zhang", samples=4)
    db.add(DeviceEvent(device_pk=device.id, event_id="e1", ts_ns=datetime_to_ns(now), type="run_started",
                       run_id="RUN-7"))
    db.flush()
    store = SqlStore(connection)
    store.write([metric_point("sem-a-1", datetime_to_ns(now - timedelta(seconds=s)), {"power_w": 800.0 + s})
                 for s in range(0, 120, 10)])
    app.extensions["labshare.tsdb"] = store
    sign_in(auth, world, "lab_manager")

    page = client.get(f"/manage/devices/{device.id}/live").get_data(as_text=True)

    timeline, power = chart_options(page)
    assert timeline["useUTC"] is True
    assert len(timeline["series"]) == len(LiveState)
    running = next(s for s in timeline["series"] if s["color"] == "#198754")
    assert running["data"], "the running segment is drawn"
    assert power["series"][0]["data"]
    assert all(v >= 800 for _, v in power["series"][0]["data"])
    assert 'data-testid="truncated"' in page
    assert "RUN-7" in page
    assert "zhang" in page
    assert "run_started" in page
    assert "Asia/Shanghai" in page


class DownStore:
    def query(self, *args, **kwargs):
        raise StoreUnavailable("InfluxDB query: connection refused")


def test_the_power_chart_gives_way_to_a_notice_when_the_store_is_down(app, client, auth, world):
    app.extensions["labshare.tsdb"] = DownStore()
    sign_in(auth, world, "admin")

    response = client.get(f"/manage/devices/{world.device.id}/live")

    assert response.status_code == 200
    assert 'data-testid="power-unavailable"' in response.get_data(as_text=True)


def test_an_unparsable_date_shows_today(client, auth, world):
    sign_in(auth, world, "admin")

    assert client.get(f"/manage/devices/{world.device.id}/live?date=tomorrow").status_code == 200
    assert client.get(f"/manage/devices/{world.device.id}/live?date=2026-02-30").status_code == 200


# --- dead letters ---------------------------------------------------------------------------------------

def add_dead_letter(db, reason: str, device_id: str | None) -> None:
    db.add(DeadLetter(received_at=utcnow(), reason=reason, topic=f"labshare/v1/{device_id}/status",
                      device_id=device_id, detail="state: one of …", payload_head='{"state":"exploded"}',
                      payload_size=20))
    db.flush()


def test_dead_letters_are_explained_filtered_and_scoped(db, client, auth, world):
    add_dead_letter(db, "bad_state", "sem-a-1")
    add_dead_letter(db, "bad_json", "sem-a-1")
    add_dead_letter(db, "bad_state", "reactor-b-1")
    add_dead_letter(db, "unknown_device", "ghost-9")
    sign_in(auth, world, "lab_manager")

    page = client.get("/manage/dead-letters").get_data(as_text=True)
    assert page.count('data-testid="dead-letter-row"') == 2
    assert "ghost-9" not in page
    assert "reactor-b-1" not in page
    assert "<code" in page
    assert "exploded" in page
    filtered = client.get("/manage/dead-letters?reason=bad_json").get_data(as_text=True)
    assert filtered.count('data-testid="dead-letter-row"') == 1
    auth.logout()

    sign_in(auth, world, "admin")
    page = client.get("/manage/dead-letters").get_data(as_text=True)
    assert "ghost-9" in page
    assert 'data-reason="unknown_device"' in page


# --- /metrics -------------------------------------------------------------------------------------------

def test_metrics_are_served_to_loopback_with_database_gauges_and_the_ingest_registry(app, db, client, world):
    world.device.state = LiveState.RUNNING
    add_dead_letter(db, "bad_json", "sem-a-1")
    registry = CollectorRegistry()
    Counter("labshare_ingest_messages", "MQTT messages received", registry=registry).inc(3)
    app.extensions["labshare.ingest_registry"] = registry

    response = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})

    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    assert re.search(r'^labshare_devices\{state="running"\} [1-9]', text, re.M)
    assert re.search(r'^labshare_dead_letters\{reason="bad_json"\} [1-9]', text, re.M)
    assert re.search(r"^labshare_usage_sessions_open \d", text, re.M)
    assert "labshare_ingest_messages_total 3.0" in text
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


@pytest.mark.parametrize("address", ["10.0.0.7", "192.168.1.20", "2001:db8::1"])
def test_metrics_are_refused_to_other_clients(client, address):
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": address}).status_code == 403
