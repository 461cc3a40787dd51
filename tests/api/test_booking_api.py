"""The booking REST API through the Flask test client, on both backends: every endpoint's happy path and its
error format, and that a failed request writes nothing (rows are counted before and after)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from booking.catalog import search_text_of
from booking.models import (
    Blackout,
    BlackoutKind,
    CalendarFeed,
    Facility,
    OperationMode,
    Qualification,
    Reservation,
    ReservationSeries,
    ReservationState,
    Resource,
    ResourceKind,
    ResourceStatus,
    SampleRequest,
    WaitlistEntry,
)
from core.accounts.models import Role, User
from core.audit import AuditEntry
from core.mail import OutboundEmail
from tests.factories import make_facility, make_resource, make_token, make_user, row_counts

SH = ZoneInfo("Asia/Shanghai")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
OFFICE_HOURS = dict.fromkeys(WEEKDAYS, "08:00-18:00")
# Everything a booking request may write; a failed request must leave every count as it was.
WRITTEN = (Reservation, ReservationSeries, Blackout, Qualification, WaitlistEntry, SampleRequest, CalendarFeed,
           AuditEntry, OutboundEmail)


def _first_wednesday_from(day: date) -> date:
    return day + timedelta(days=(2 - day.weekday()) % 7)


# The API uses the real clock: tests book a Wednesday 3 to 9 days ahead (past the lead time and the default
# 24 h cancellation deadline, well inside the 90-day horizon).
DAY = _first_wednesday_from(datetime.now(SH).date() + timedelta(days=3))


def at(hour: int, minute: int = 0, *, days: int = 0) -> datetime:
    """A time on DAY (+ days) in Shanghai."""
    return datetime.combine(DAY + timedelta(days=days), time(0), tzinfo=SH) + timedelta(hours=hour, minutes=minute)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def same_instant(text: str, moment: datetime) -> bool:
    return datetime.fromisoformat(text) == moment


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def assert_error(response, status: int, code: str) -> dict:
    """The response is the project's error format with this status and code; returns its details."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.json
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]["details"]


@contextmanager
def writes_nothing(db: Session) -> Iterator[None]:
    before = row_counts(db, *WRITTEN)
    yield
    db.expire_all()
    assert row_counts(db, *WRITTEN) == before


def counts(db: Session) -> dict[str, int]:
    db.expire_all()
    return row_counts(db, *WRITTEN)


@dataclass
class World:
    """Facility A (office hours Mon–Fri 08:00–18:00) with `resource`, managed by `manager`; facility B with
    `other_resource`, managed by `other_manager`; researchers alice and bob, an admin and a finance user."""

    db: Session
    facility: Facility
    other_facility: Facility
    resource: Resource
    other_resource: Resource
    manager: User
    other_manager: User
    alice: User
    bob: User
    admin: User
    finance: User
    secrets: dict[str, str]

    def h(self, who: str) -> dict[str, str]:
        return bearer(self.secrets[who])

    def resource_in_a(self, **overrides) -> Resource:
        resource = make_resource(self.db, facility=self.facility, **overrides)
        resource.search_text = search_text_of(resource)
        self.db.flush()
        return resource

    def book(self, resource: Resource, user: User, start: datetime, end: datetime,
             state: ReservationState = ReservationState.CONFIRMED) -> Reservation:
        """A reservation written straight to the database (arrangement, not the thing under test)."""
        reservation = Reservation(resource_id=resource.id, user_id=user.id, billed_org_id=user.organisation_id,
                                  starts_at=start, ends_at=end, state=state, purpose="arranged")
        self.db.add(reservation)
        self.db.flush()
        return reservation


@pytest.fixture
def world(db) -> World:
    manager = make_user(db, roles=(Role.LAB_MANAGER,))
    other_manager = make_user(db, roles=(Role.LAB_MANAGER,))
    facility = make_facility(db, managers=(manager,), opening_hours=OFFICE_HOURS, city="510100")
    other_facility = make_facility(db, managers=(other_manager,), opening_hours=OFFICE_HOURS, city="510300")
    users = {"manager": manager, "other_manager": other_manager, "alice": make_user(db), "bob": make_user(db),
             "admin": make_user(db, roles=(Role.ADMIN,)), "finance": make_user(db, roles=(Role.FINANCE,))}
    resource = make_resource(db, facility=facility)
    other_resource = make_resource(db, facility=other_facility)
    for r in (resource, other_resource):
        r.search_text = search_text_of(r)
    db.flush()
    secrets = {name: make_token(db, user)[1] for name, user in users.items()}
    return World(db, facility, other_facility, resource, other_resource, secrets=secrets, **users)


def reservation_body(resource_id: int, start: datetime, end: datetime, **extra) -> dict:
    return {"resource_id": resource_id, "starts_at": iso(start), "ends_at": iso(end), **extra}


# --- catalog --------------------------------------------------------------------------------------------------

@pytest.fixture
def catalog(world) -> dict[str, int]:
    """Five resources in A and B with distinct names, kinds, categories and flags, and one retired."""
    db = world.db
    made = {
        "nmr": world.resource_in_a(name_zh="核磁共振波谱仪", name_en="NMR spectrometer", model="AVANCE NEO 600",
                                   manufacturer="Bruker", operation_mode=OperationMode.TECHNICIAN),
        "pilot": world.resource_in_a(name_zh="锂电池中试线", name_en="Li-ion pilot line", model="PL-1",
                                     kind=ResourceKind.PILOT_LINE, category="pilot_scale", granularity_min=1440,
                                     min_duration_min=1440, max_duration_min=43200,
                                     operation_mode=OperationMode.SELF_SERVICE),
        "xrd": world.resource_in_a(name_zh="X射线衍射仪", name_en="X-ray diffractometer", model="D8",
                                   manufacturer="Bruker", operation_mode=OperationMode.SELF_SERVICE),
        "retired": world.resource_in_a(name_zh="旧核磁共振仪", name_en="Old NMR", model="AV-300",
                                       status=ResourceStatus.RETIRED),
    }
    sem = make_resource(db, facility=world.other_facility, name_zh="扫描电子显微镜", name_en="Scanning electron "
                        "microscope", model="GeminiSEM 500", category="research_development", voucher_eligible=False)
    sem.search_text = search_text_of(sem)
    db.flush()
    made["sem"] = sem
    made["a_default"], made["b_default"] = world.resource, world.other_resource
    return {name: r.id for name, r in made.items()}


def search(client, world, **query):
    response = client.get("/api/v1/resources", headers=world.h("alice"), query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json


@pytest.mark.parametrize(("query", "expected"), [
    ({"q": "nmr"}, ["nmr"]),  # an abbreviation of 核磁共振 (the retired one is left out)
    ({"q": "电镜"}, ["sem", "a_default", "b_default"]),  # 扫描电子显微镜 via its short form; the others' names
    ({"q": "显微镜"}, ["sem"]),
    ({"q": "bruker"}, ["nmr", "xrd"]),
    ({"q": "bruker d8"}, ["xrd"]),  # every word must match
    ({"q": "no-such-instrument"}, []),
    ({"category": "pilot_scale"}, ["pilot"]),
    ({"category": "research_development"}, ["sem"]),
    ({"kind": "pilot_line"}, ["pilot"]),
    ({"city": "510300"}, ["sem", "b_default"]),
    ({"voucher_eligible": "false"}, ["sem"]),
    ({"operation_mode": "technician", "q": "bruker"}, ["nmr"]),  # technician or both
    ({"operation_mode": "self_service", "q": "bruker"}, ["xrd"]),
])
def test_catalog_search_by_text_and_filters(client, world, catalog, query, expected):
    body = search(client, world, per_page=100, **query)

    assert sorted(item["id"] for item in body["items"]) == sorted(catalog[name] for name in expected)
    assert body["total"] == len(expected)


def test_catalog_filter_by_facility_and_pagination(client, world, catalog):
    in_a = sorted(catalog[n] for n in ("nmr", "pilot", "xrd", "a_default"))

    pages = [search(client, world, facility_id=world.facility.id, per_page=3, page=page) for page in (1, 2, 3)]

    assert [(p["page"], p["per_page"], p["total"]) for p in pages] == [(1, 3, 4), (2, 3, 4), (3, 3, 4)]
    assert [len(p["items"]) for p in pages] == [3, 1, 0]
    assert sorted(item["id"] for p in pages for item in p["items"]) == in_a


def test_catalog_item_shape(client, world, catalog):
    item = search(client, world, q="nmr")["items"][0]

    assert set(item) >= {"id", "kind", "name_zh", "name_en", "model", "manufacturer", "original_value", "category",
                         "operation_mode", "voucher_eligible", "status", "specs", "facility", "rules"}
    assert item["name_en"] == "NMR spectrometer"
    assert item["original_value"] == "1500000.00"
    assert item["facility"]["id"] == world.facility.id
    assert item["rules"]["bookable_hours"] == {}
    assert item["rules"]["granularity_min"] == 30


def test_time_first_search_keeps_only_resources_bookable_in_the_window(client, world, catalog):
    db = world.db
    world.book(db.get(Resource, catalog["nmr"]), world.bob, at(10), at(12))
    db.add(Blackout(resource_id=catalog["sem"], starts_at=at(9), ends_at=at(11), kind=BlackoutKind.MAINTENANCE))
    # a cancelled booking does not hold its slot
    world.book(db.get(Resource, catalog["xrd"]), world.bob, at(10), at(11), state=ReservationState.CANCELLED)
    db.flush()

    busy_hour = search(client, world, free_from=iso(at(10)), free_to=iso(at(11)), per_page=100)
    later = search(client, world, free_from=iso(at(13)), free_to=iso(at(14)), per_page=100)
    evening = search(client, world, free_from=iso(at(19)), free_to=iso(at(20)), per_page=100)
    whole_day = search(client, world, free_from=iso(at(0)), free_to=iso(at(0, days=1)), per_page=100)

    # nmr is booked, sem blacked out, the pilot line books whole days only
    assert sorted(i["id"] for i in busy_hour["items"]) == sorted(catalog[n] for n in ("xrd", "a_default", "b_default"))
    assert busy_hour["total"] == 3
    assert sorted(i["id"] for i in later["items"]) == sorted(
        catalog[n] for n in ("nmr", "xrd", "sem", "a_default", "b_default"))
    assert evening["items"] == []  # outside everyone's hours; the pilot line still wants whole days
    assert [i["id"] for i in whole_day["items"]] == [catalog["pilot"]]

    paged = search(client, world, free_from=iso(at(13)), free_to=iso(at(14)), per_page=2, page=3)
    assert (paged["total"], len(paged["items"])) == (5, 1)


@pytest.mark.parametrize(("query", "field"), [
    ({"free_from": iso(at(10))}, "free_to"),
    ({"free_to": iso(at(10))}, "free_to"),
    ({"free_from": iso(at(11)), "free_to": iso(at(10))}, "free_to"),
    ({"free_from": iso(at(10)), "free_to": iso(at(10))}, "free_to"),
    ({"free_from": "2026-12-02T10:00:00", "free_to": "2026-12-02T11:00:00+08:00"}, "free_from"),
    ({"free_from": "tomorrow", "free_to": iso(at(10))}, "free_from"),
    ({"category": "astrology"}, "category"),
    ({"kind": "spaceship"}, "kind"),
    ({"city": "Chengdu"}, "city"),
    ({"per_page": "0"}, "per_page"),
    ({"per_page": "101"}, "per_page"),
    ({"page": "0"}, "page"),
    ({"sort": "random"}, "sort"),
    ({"facility_id": "0"}, "facility_id"),
    ({"q": "x" * 101}, "q"),
])
def test_bad_catalog_queries_are_422_naming_the_field(client, world, query, field):
    response = client.get("/api/v1/resources", headers=world.h("alice"), query_string=query)

    details = assert_error(response, 422, "invalid_input")
    assert list(details["fields"]) == [field]
    assert all(isinstance(m, str) and m for m in details["fields"][field])


def test_catalog_needs_a_token(client):
    assert_error(client.get("/api/v1/resources"), 401, "unauthorized")


def test_one_resource_and_404_for_an_unknown_one(client, world):
    found = client.get(f"/api/v1/resources/{world.resource.id}", headers=world.h("alice"))
    missing = client.get("/api/v1/resources/999999", headers=world.h("alice"))

    assert found.status_code == 200
    assert found.json["id"] == world.resource.id
    assert found.json["facility"]["timezone"] == "Asia/Shanghai"
    assert assert_error(missing, 404, "not_found") == {"kind": "resource", "id": "999999"}


# --- availability ---------------------------------------------------------------------------------------------

def availability(client, world, resource_id, start, end, who="alice"):
    return client.get(f"/api/v1/resources/{resource_id}/availability", headers=world.h(who),
                      query_string={"start": iso(start), "end": iso(end)})


def test_availability_spans_cover_the_window_without_gaps(client, world):
    db = world.db
    booked = world.book(world.resource, world.bob, at(10), at(12))
    pending = world.book(world.resource, world.alice, at(14), at(15), state=ReservationState.PENDING)
    world.book(world.resource, world.alice, at(15), at(16), state=ReservationState.CANCELLED)
    db.add(Blackout(resource_id=world.resource.id, starts_at=at(9, days=1), ends_at=at(12, days=1),
                    kind=BlackoutKind.CALIBRATION))
    db.flush()
    start, end = at(0), at(0, days=7)

    response = availability(client, world, world.resource.id, start, end)

    assert response.status_code == 200
    body = response.json
    assert body["resource_id"] == world.resource.id
    assert body["timezone"] == "Asia/Shanghai"
    spans = body["spans"]
    assert same_instant(spans[0]["start"], start)
    assert same_instant(spans[-1]["end"], end)
    for before, after in itertools.pairwise(spans):
        assert before["end"] == after["start"]
        assert datetime.fromisoformat(before["start"]) < datetime.fromisoformat(before["end"])
    by_status = {}
    for span in spans:
        by_status.setdefault(span["status"], []).append(
            (datetime.fromisoformat(span["start"]), datetime.fromisoformat(span["end"]), span["kind"]))
    assert (booked.starts_at, booked.ends_at, "confirmed") in by_status["busy"]
    assert (pending.starts_at, pending.ends_at, "pending") in by_status["busy"]
    assert len(by_status["busy"]) == 2  # the cancelled one frees its hour
    assert by_status["blackout"] == [(at(9, days=1), at(12, days=1), "calibration")]
    assert (at(8), at(10), "") in by_status["free"]
    assert (at(0), at(8), "") in by_status["closed"]
    # Saturday and Sunday are closed all day
    assert (at(18, days=2), at(8, days=5), "") in by_status["closed"]


@pytest.mark.parametrize(("query", "field"), [
    ({"start": iso(at(0))}, "end"),
    ({}, "start"),
    ({"start": iso(at(0)), "end": iso(at(0, days=63))}, "end"),
    ({"start": iso(at(1)), "end": iso(at(0))}, "end"),
    ({"start": "2026-12-02T00:00:00", "end": iso(at(0, days=1))}, "start"),
])
def test_bad_availability_windows_are_422(client, world, query, field):
    response = client.get(f"/api/v1/resources/{world.resource.id}/availability", headers=world.h("alice"),
                          query_string=query)

    details = assert_error(response, 422, "invalid_input")
    assert field in details["fields"]


def test_availability_of_62_days_is_fine_and_unknown_resource_is_404(client, world):
    assert availability(client, world, world.resource.id, at(0), at(0, days=62)).status_code == 200
    details = assert_error(availability(client, world, 999999, at(0), at(0, days=1)), 404, "not_found")
    assert details == {"kind": "resource", "id": "999999"}


# --- creating reservations ---------------------------------------------------------------------------------------

def test_booking_a_free_slot_is_201_and_writes_the_reservation_its_audit_and_mail(client, world):
    db = world.db
    before = counts(db)

    response = client.post("/api/v1/reservations", headers=world.h("alice"),
                           json=reservation_body(world.resource.id, at(10), at(11, 30), purpose="XRD of powders",
                                                 sample_count=3))

    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.json
    assert set(body) == {"id", "resource_id", "user_id", "billed_org_id", "starts_at", "ends_at", "state", "kind",
                         "purpose", "sample_count", "series_id", "late_cancellation", "decision_note", "created_at"}
    assert (body["resource_id"], body["user_id"], body["billed_org_id"]) == (
        world.resource.id, world.alice.id, world.alice.organisation_id)
    assert same_instant(body["starts_at"], at(10))
    assert same_instant(body["ends_at"], at(11, 30))
    assert (body["state"], body["kind"], body["purpose"], body["sample_count"]) == (
        "confirmed", "self_service", "XRD of powders", 3)
    after = counts(db)
    assert after["reservation"] == before["reservation"] + 1
    assert after["audit_entry"] > before["audit_entry"]
    assert after["outbound_email"] == before["outbound_email"] + 1
    stored = db.get(Reservation, body["id"])
    assert (stored.starts_at, stored.ends_at, stored.state) == (at(10), at(11, 30), ReservationState.CONFIRMED)


def test_back_to_back_bookings_do_not_clash(client, world):
    first = client.post("/api/v1/reservations", headers=world.h("alice"),
                        json=reservation_body(world.resource.id, at(10), at(11)))
    second = client.post("/api/v1/reservations", headers=world.h("bob"),
                         json=reservation_body(world.resource.id, at(11), at(12)))

    assert (first.status_code, second.status_code) == (201, 201)


def test_a_resource_needing_approval_gives_a_pending_reservation(client, world):
    resource = world.resource_in_a(approval_required=True)

    response = client.post("/api/v1/reservations", headers=world.h("alice"),
                           json=reservation_body(resource.id, at(10), at(11)))

    assert response.status_code == 201
    assert response.json["state"] == "pending"


@pytest.mark.parametrize(("start", "end", "state"), [
    (at(10), at(12), ReservationState.CONFIRMED),  # the same slot
    (at(9), at(10, 30), ReservationState.CONFIRMED),  # overlapping its start
    (at(11, 30), at(13), ReservationState.CONFIRMED),  # overlapping its end
    (at(10, 30), at(11), ReservationState.CONFIRMED),  # inside
    (at(8), at(14), ReservationState.CONFIRMED),  # around
    (at(10), at(12), ReservationState.PENDING),  # pending bookings hold their slot too
])
def test_an_overlap_is_409_reservation_conflict_naming_the_clash(client, world, start, end, state):
    taken = world.book(world.resource, world.bob, at(10), at(12), state=state)

    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations", headers=world.h("alice"),
                               json=reservation_body(world.resource.id, start, end))

    details = assert_error(response, 409, "reservation_conflict")
    assert len(details["clashes"]) == 1
    clash = details["clashes"][0]
    assert (clash["type"], clash["id"], clash["state"]) == ("reservation", taken.id, state.value)
    assert same_instant(clash["starts_at"], at(10))
    assert same_instant(clash["ends_at"], at(12))
    assert "2" in response.json["error"]["message"]  # names the clash's local time


def test_a_blackout_is_409_with_the_blackout_as_clash(client, world):
    blackout = Blackout(resource_id=world.resource.id, starts_at=at(9), ends_at=at(17), kind=BlackoutKind.HOLIDAY)
    world.db.add(blackout)
    world.db.flush()

    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations", headers=world.h("alice"),
                               json=reservation_body(world.resource.id, at(10), at(11)))

    details = assert_error(response, 409, "reservation_conflict")
    assert [(c["type"], c["id"], c["state"]) for c in details["clashes"]] == [("blackout", blackout.id, "holiday")]


@pytest.mark.parametrize(("start", "end", "rules", "code"), [
    (at(19), at(20), {}, "outside_bookable_hours"),
    (at(17), at(19), {}, "outside_bookable_hours"),
    (at(10, days=3), at(11, days=3), {}, "outside_bookable_hours"),  # Saturday
    (at(10, 10), at(11, 10), {}, "granularity"),
    (at(10), at(10, 30), {"min_duration_min": 60}, "too_short"),
    (at(8), at(17), {}, "too_long"),
    (at(10, days=-30), at(11, days=-30), {}, "starts_in_past"),
    (at(10, days=120), at(11, days=120), {}, "beyond_horizon"),
    (at(10), at(11), {"granularity_min": 1440, "min_duration_min": 1440, "max_duration_min": 43200}, "whole_days"),
])
def test_rule_violations_are_422_with_the_rule_as_code_and_messages(client, world, start, end, rules, code):
    resource = world.resource_in_a(**rules) if rules else world.resource

    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations", headers=world.h("alice"),
                               json=reservation_body(resource.id, start, end))

    details = assert_error(response, 422, code)
    violations = details["violations"]
    assert violations[0]["code"] == code
    assert all(isinstance(v["message"], str) and v["message"] for v in violations)
    assert response.json["error"]["message"] == violations[0]["message"]


def test_several_broken_rules_are_all_listed(client, world):
    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations", headers=world.h("alice"),
                               json=reservation_body(world.resource.id, at(19, 10), at(19, 20)))

    details = assert_error(response, 422, "granularity")
    assert {v["code"] for v in details["violations"]} == {"granularity", "too_short", "outside_bookable_hours"}


def test_lead_time_applies_to_researchers_not_to_the_facilitys_manager(client, world):
    resource = world.resource_in_a(lead_time_min=60 * 24 * 30, bookable_hours=dict.fromkeys(
        (*WEEKDAYS, "sat", "sun"), "00:00-24:00"))

    with writes_nothing(world.db):
        refused = client.post("/api/v1/reservations", headers=world.h("alice"),
                              json=reservation_body(resource.id, at(10), at(11)))
    allowed = client.post("/api/v1/reservations", headers=world.h("manager"),
                          json=reservation_body(resource.id, at(10), at(11)))

    assert [v["code"] for v in assert_error(refused, 422, "lead_time")["violations"]] == ["lead_time"]
    assert allowed.status_code == 201


def test_booking_a_retired_or_technician_only_resource_is_422(client, world):
    retired = world.resource_in_a(status=ResourceStatus.RETIRED)
    technician_only = world.resource_in_a(operation_mode=OperationMode.TECHNICIAN)

    with writes_nothing(world.db):
        first = client.post("/api/v1/reservations", headers=world.h("alice"),
                            json=reservation_body(retired.id, at(10), at(11)))
        second = client.post("/api/v1/reservations", headers=world.h("alice"),
                             json=reservation_body(technician_only.id, at(10), at(11)))

    assert_error(first, 422, "resource_unavailable")
    assert_error(second, 422, "self_service_not_offered")


def test_a_limit_of_active_bookings_per_user(client, world):
    resource = world.resource_in_a(max_active_per_user=1)
    assert client.post("/api/v1/reservations", headers=world.h("alice"),
                       json=reservation_body(resource.id, at(10), at(11))).status_code == 201

    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations", headers=world.h("alice"),
                               json=reservation_body(resource.id, at(14), at(15)))

    details = assert_error(response, 422, "too_many_active")
    assert details["violations"][0]["limit"] == 1


def test_billing_another_organisation_is_refused_for_researchers(client, world):
    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations", headers=world.h("alice"),
                               json=reservation_body(world.resource.id, at(10), at(11),
                                                     billed_org_id=world.bob.organisation_id))

    assert_error(response, 422, "billed_org_not_allowed")


def test_booking_an_unknown_resource_is_404(client, world):
    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations", headers=world.h("alice"),
                               json=reservation_body(999999, at(10), at(11)))

    assert assert_error(response, 404, "not_found") == {"kind": "resource", "id": "999999"}


@pytest.mark.parametrize(("change", "field"), [
    ({"starts_at": "2026-12-02T10:00:00"}, "starts_at"),  # no offset: its meaning would be a guess
    ({"ends_at": "2026-12-02T11:00:00"}, "ends_at"),
    ({"starts_at": "next tuesday"}, "starts_at"),
    ({"starts_at": iso(at(11)), "ends_at": iso(at(10))}, "ends_at"),  # ends before it starts
    ({"starts_at": iso(at(10)), "ends_at": iso(at(10))}, "ends_at"),
    ({"resource_id": "one"}, "resource_id"),
    ({"resource_id": 0}, "resource_id"),
    ({"resource_id": None}, "resource_id"),
    ({"sample_count": 0}, "sample_count"),
    ({"purpose": "x" * 2001}, "purpose"),
    ({"colour": "blue"}, "colour"),  # unknown fields are refused
])
def test_malformed_reservations_are_422_invalid_input_naming_the_field(client, world, change, field):
    body = {**reservation_body(world.resource.id, at(10), at(11)), **change}

    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations", headers=world.h("alice"), json=body)

    details = assert_error(response, 422, "invalid_input")
    assert field in details["fields"], details


@pytest.mark.parametrize("missing", ["resource_id", "starts_at", "ends_at"])
def test_a_reservation_without_a_required_field_is_422(client, world, missing):
    body = reservation_body(world.resource.id, at(10), at(11))
    del body[missing]

    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations", headers=world.h("alice"), json=body)

    assert missing in assert_error(response, 422, "invalid_input")["fields"]


def test_booking_without_a_token_is_401_and_writes_nothing(client, world):
    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations", json=reservation_body(world.resource.id, at(10), at(11)))

    assert_error(response, 401, "unauthorized")


def test_a_body_that_is_not_json_is_read_as_no_fields(client, world):
    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations", headers={**world.h("alice"), "Content-Type": "text/plain"},
                               data="resource_id=1")

    details = assert_error(response, 422, "invalid_input")
    assert set(details["fields"]) == {"resource_id", "starts_at", "ends_at"}


# --- reading, visibility and scopes ----------------------------------------------------------------------------

def test_a_reservation_is_visible_to_its_owner_managers_admins_and_finance_only(client, world):
    reservation = world.book(world.resource, world.alice, at(10), at(11))
    path = f"/api/v1/reservations/{reservation.id}"

    for who in ("alice", "manager", "admin", "finance"):
        response = client.get(path, headers=world.h(who))
        assert response.status_code == 200, who
        assert response.json["id"] == reservation.id
    for who in ("bob", "other_manager"):
        details = assert_error(client.get(path, headers=world.h(who)), 404, "not_found")
        assert details == {"kind": "reservation", "id": str(reservation.id)}
    assert_error(client.get("/api/v1/reservations/999999", headers=world.h("alice")), 404, "not_found")


def ids(response) -> list[int]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [item["id"] for item in response.json["items"]]


def test_listing_reservations_by_scope(client, world):
    a1 = world.book(world.resource, world.alice, at(10), at(11))
    a2 = world.book(world.other_resource, world.alice, at(10), at(11))
    b1 = world.book(world.resource, world.bob, at(12), at(13), state=ReservationState.PENDING)
    b2 = world.book(world.other_resource, world.bob, at(12), at(13))

    def listing(who, **query):
        return client.get("/api/v1/reservations", headers=world.h(who), query_string={"per_page": 100, **query})

    assert ids(listing("alice")) == [a1.id, a2.id]
    assert ids(listing("alice", scope="mine")) == [a1.id, a2.id]
    assert ids(listing("bob")) == [b1.id, b2.id]
    assert ids(listing("manager", scope="managed")) == [a1.id, b1.id]
    assert ids(listing("other_manager", scope="managed")) == [a2.id, b2.id]
    assert ids(listing("alice", scope="managed")) == []
    assert ids(listing("admin", scope="managed")) == [a1.id, a2.id, b1.id, b2.id]
    assert ids(listing("admin", scope="all")) == [a1.id, a2.id, b1.id, b2.id]
    assert ids(listing("finance", scope="all")) == [a1.id, a2.id, b1.id, b2.id]
    assert ids(listing("manager", scope="managed", state="pending")) == [b1.id]
    assert ids(listing("admin", scope="all", resource_id=world.other_resource.id)) == [a2.id, b2.id]
    assert ids(listing("admin", scope="all", start=iso(at(11, 30)), end=iso(at(14)))) == [b1.id, b2.id]
    page = listing("admin", scope="all", per_page=3, page=2)
    assert (ids(page), page.json["total"], page.json["page"], page.json["per_page"]) == ([b2.id], 4, 2, 3)
    for who in ("alice", "manager"):
        assert_error(listing(who, scope="all"), 403, "forbidden")


@pytest.mark.parametrize(("query", "field"), [
    ({"scope": "everything"}, "scope"),
    ({"state": "maybe"}, "state"),
    ({"start": iso(at(10))}, "end"),
    ({"start": iso(at(10)), "end": iso(at(9))}, "end"),
    ({"start": "2026-12-02T10:00:00", "end": iso(at(11))}, "start"),
])
def test_bad_reservation_listing_queries_are_422(client, world, query, field):
    response = client.get("/api/v1/reservations", headers=world.h("admin"), query_string=query)

    assert field in assert_error(response, 422, "invalid_input")["fields"]


# --- changing and cancelling ---------------------------------------------------------------------------------

def test_the_owner_moves_a_reservation(client, world):
    reservation = world.book(world.resource, world.alice, at(10), at(11))

    response = client.patch(f"/api/v1/reservations/{reservation.id}", headers=world.h("alice"),
                             json={"starts_at": iso(at(14)), "ends_at": iso(at(15, 30)), "purpose": "moved"})

    assert response.status_code == 200, response.get_data(as_text=True)
    assert same_instant(response.json["starts_at"], at(14))
    assert response.json["purpose"] == "moved"
    world.db.expire_all()
    stored = world.db.get(Reservation, reservation.id)
    assert (stored.starts_at, stored.ends_at, stored.purpose) == (at(14), at(15, 30), "moved")


def test_a_manager_may_change_the_purpose_only(client, world):
    reservation = world.book(world.resource, world.alice, at(10), at(11))

    response = client.patch(f"/api/v1/reservations/{reservation.id}", headers=world.h("manager"),
                            json={"purpose": "re-described"})

    assert response.status_code == 200
    assert response.json["purpose"] == "re-described"
    assert same_instant(response.json["starts_at"], at(10))


def test_moving_onto_another_booking_is_409_and_changes_nothing(client, world):
    mine = world.book(world.resource, world.alice, at(10), at(11))
    theirs = world.book(world.resource, world.bob, at(14), at(15))

    with writes_nothing(world.db):
        response = client.patch(f"/api/v1/reservations/{mine.id}", headers=world.h("alice"),
                                json={"starts_at": iso(at(14, 30)), "ends_at": iso(at(15, 30))})

    details = assert_error(response, 409, "reservation_conflict")
    assert [c["id"] for c in details["clashes"]] == [theirs.id]
    world.db.expire_all()
    assert (world.db.get(Reservation, mine.id).starts_at, world.db.get(Reservation, mine.id).ends_at) == (
        at(10), at(11))


def test_moving_within_itself_does_not_clash_with_itself(client, world):
    mine = world.book(world.resource, world.alice, at(10), at(12))

    response = client.patch(f"/api/v1/reservations/{mine.id}", headers=world.h("alice"),
                            json={"starts_at": iso(at(11)), "ends_at": iso(at(13))})

    assert response.status_code == 200


@pytest.mark.parametrize(("body", "status", "code"), [
    ({}, 422, "invalid_input"),
    ({"starts_at": iso(at(14))}, 422, "invalid_input"),  # both ends or neither
    ({"starts_at": iso(at(19)), "ends_at": iso(at(20))}, 422, "outside_bookable_hours"),
    ({"starts_at": "2026-12-02T14:00:00", "ends_at": iso(at(15))}, 422, "invalid_input"),
    ({"starts_at": iso(at(15)), "ends_at": iso(at(14))}, 422, "invalid_input"),
])
def test_bad_changes_are_refused_and_change_nothing(client, world, body, status, code):
    mine = world.book(world.resource, world.alice, at(10), at(11))

    with writes_nothing(world.db):
        response = client.patch(f"/api/v1/reservations/{mine.id}", headers=world.h("alice"), json=body)

    assert_error(response, status, code)
    world.db.expire_all()
    assert world.db.get(Reservation, mine.id).starts_at == at(10)


def test_changing_someone_elses_reservation_is_404(client, world):
    theirs = world.book(world.resource, world.bob, at(10), at(11))

    with writes_nothing(world.db):
        patched = client.patch(f"/api/v1/reservations/{theirs.id}", headers=world.h("alice"),
                               json={"purpose": "mine now"})
        deleted = client.delete(f"/api/v1/reservations/{theirs.id}", headers=world.h("alice"))

    assert_error(patched, 404, "not_found")
    assert_error(deleted, 404, "not_found")
    world.db.expire_all()
    stored = world.db.get(Reservation, theirs.id)
    assert (stored.purpose, stored.state) == ("arranged", ReservationState.CONFIRMED)


def test_changing_a_cancelled_reservation_is_409(client, world):
    gone = world.book(world.resource, world.alice, at(10), at(11), state=ReservationState.CANCELLED)

    with writes_nothing(world.db):
        response = client.patch(f"/api/v1/reservations/{gone.id}", headers=world.h("alice"),
                                json={"purpose": "revive"})

    assert_error(response, 409, "invalid_state_transition")


def test_delete_cancels_in_time_without_a_late_flag(client, world):
    mine = world.book(world.resource, world.alice, at(10), at(11))

    response = client.delete(f"/api/v1/reservations/{mine.id}", headers=world.h("alice"))

    assert response.status_code == 200
    assert (response.json["state"], response.json["late_cancellation"]) == ("cancelled", False)
    world.db.expire_all()
    assert world.db.get(Reservation, mine.id).state == ReservationState.CANCELLED
    # the slot is free again
    again = client.post("/api/v1/reservations", headers=world.h("bob"),
                        json=reservation_body(world.resource.id, at(10), at(11)))
    assert again.status_code == 201


def test_delete_inside_the_cancellation_deadline_is_a_late_cancellation(client, world):
    strict = world.resource_in_a(cancellation_deadline_h=24 * 60)
    mine = world.book(strict, world.alice, at(10), at(11))
    theirs = world.book(strict, world.bob, at(14), at(15))

    by_owner = client.delete(f"/api/v1/reservations/{mine.id}", headers=world.h("alice"))
    by_manager = client.delete(f"/api/v1/reservations/{theirs.id}", headers=world.h("manager"))

    assert (by_owner.status_code, by_owner.json["late_cancellation"]) == (200, True)
    assert (by_manager.status_code, by_manager.json["late_cancellation"]) == (200, False)  # not the user's doing


def test_cancelling_twice_is_409_invalid_state_transition(client, world):
    mine = world.book(world.resource, world.alice, at(10), at(11))
    assert client.delete(f"/api/v1/reservations/{mine.id}", headers=world.h("alice")).status_code == 200

    with writes_nothing(world.db):
        response = client.delete(f"/api/v1/reservations/{mine.id}", headers=world.h("alice"))

    details = assert_error(response, 409, "invalid_state_transition")
    assert (details["state"], details["target"]) == ("cancelled", "cancelled")


# --- approval -------------------------------------------------------------------------------------------------

@pytest.fixture
def pending(world) -> Reservation:
    gated = world.resource_in_a(approval_required=True)
    return world.book(gated, world.alice, at(10), at(11), state=ReservationState.PENDING)


@pytest.mark.parametrize(("action", "state"), [("approve", "confirmed"), ("reject", "rejected")])
@pytest.mark.parametrize("who", ["manager", "admin"])
def test_the_facilitys_manager_approves_or_rejects(client, world, pending, action, state, who):
    response = client.post(f"/api/v1/reservations/{pending.id}/{action}", headers=world.h(who),
                           json={"note": "ok by me"})

    assert response.status_code == 200, response.get_data(as_text=True)
    assert (response.json["state"], response.json["decision_note"]) == (state, "ok by me")
    world.db.expire_all()
    stored = world.db.get(Reservation, pending.id)
    assert stored.state == ReservationState(state)
    assert stored.decided_by_id == getattr(world, who).id
    topics = world.db.scalars(select(OutboundEmail.topic).where(OutboundEmail.user_id == world.alice.id)).all()
    assert f"reservation.{'approved' if action == 'approve' else 'rejected'}" in topics


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_a_researcher_cannot_decide_on_their_own_booking(client, world, pending, action):
    with writes_nothing(world.db):
        response = client.post(f"/api/v1/reservations/{pending.id}/{action}", headers=world.h("alice"), json={})

    assert_error(response, 403, "forbidden")
    world.db.expire_all()
    assert world.db.get(Reservation, pending.id).state == ReservationState.PENDING


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_a_manager_of_another_facility_cannot_decide(client, world, action):
    """Their own booking on facility A's gated resource (they can see it) is a 403; another user's is not
    even visible to them (404)."""
    gated = world.resource_in_a(approval_required=True)
    own = world.book(gated, world.other_manager, at(10), at(11), state=ReservationState.PENDING)
    foreign = world.book(gated, world.bob, at(14), at(15), state=ReservationState.PENDING)

    with writes_nothing(world.db):
        on_own = client.post(f"/api/v1/reservations/{own.id}/{action}", headers=world.h("other_manager"), json={})
        on_foreign = client.post(f"/api/v1/reservations/{foreign.id}/{action}", headers=world.h("other_manager"),
                                 json={})
        by_bob = client.post(f"/api/v1/reservations/{own.id}/{action}", headers=world.h("bob"), json={})

    assert_error(on_own, 403, "forbidden")
    assert_error(on_foreign, 404, "not_found")
    assert_error(by_bob, 404, "not_found")
    world.db.expire_all()
    assert {world.db.get(Reservation, r.id).state for r in (own, foreign)} == {ReservationState.PENDING}


def test_approving_a_confirmed_reservation_is_409(client, world):
    confirmed = world.book(world.resource, world.alice, at(10), at(11))

    with writes_nothing(world.db):
        response = client.post(f"/api/v1/reservations/{confirmed.id}/approve", headers=world.h("manager"), json={})

    details = assert_error(response, 409, "invalid_state_transition")
    assert (details["state"], details["target"]) == ("confirmed", "confirmed")


def test_deciding_on_an_unknown_reservation_is_404(client, world):
    assert_error(client.post("/api/v1/reservations/999999/approve", headers=world.h("manager"), json={}),
                 404, "not_found")


# --- preview and series -----------------------------------------------------------------------------------------

def test_preview_says_what_stands_in_the_way_without_writing(client, world):
    taken = world.book(world.resource, world.bob, at(10), at(11))

    with writes_nothing(world.db):
        free = client.post("/api/v1/reservations/preview", headers=world.h("alice"),
                           json=reservation_body(world.resource.id, at(14), at(15)))
        clash = client.post("/api/v1/reservations/preview", headers=world.h("alice"),
                            json=reservation_body(world.resource.id, at(10, 30), at(11, 30)))
        broken = client.post("/api/v1/reservations/preview", headers=world.h("alice"),
                             json=reservation_body(world.resource.id, at(19), at(20)))
        unknown = client.post("/api/v1/reservations/preview", headers=world.h("alice"),
                              json=reservation_body(999999, at(10), at(11)))

    assert free.status_code == 200
    assert free.json == {"bookable": True, "violations": [], "clashes": []}
    assert clash.json["bookable"] is False
    assert [c["id"] for c in clash.json["clashes"]] == [taken.id]
    assert clash.json["violations"] == []
    assert broken.json["bookable"] is False
    assert [v["code"] for v in broken.json["violations"]] == ["outside_bookable_hours"]
    assert broken.json["violations"][0]["message"]
    assert_error(unknown, 404, "not_found")


def series_body(resource_id, start, end, **extra):
    return {**reservation_body(resource_id, start, end), "frequency": "weekly", "occurrences": 4, **extra}


def test_a_series_dry_run_lists_every_occurrence_and_its_clashes(client, world):
    taken = world.book(world.resource, world.bob, at(10, days=7), at(11, days=7))

    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations/series", headers=world.h("alice"),
                               json=series_body(world.resource.id, at(10), at(11), dry_run=True))

    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.json
    assert (body["series_id"], body["created"]) == (None, [])
    assert [same_instant(o["starts_at"], at(10, days=7 * i)) for i, o in enumerate(body["occurrences"])] == [True] * 4
    assert [o["bookable"] for o in body["occurrences"]] == [True, False, True, True]
    assert [c["id"] for c in body["occurrences"][1]["clashes"]] == [taken.id]


def test_a_series_is_all_or_nothing(client, world):
    taken = world.book(world.resource, world.bob, at(10, days=14), at(11, days=14))

    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations/series", headers=world.h("alice"),
                               json=series_body(world.resource.id, at(10), at(11)))

    details = assert_error(response, 409, "reservation_conflict")
    assert [c["id"] for c in details["clashes"]] == [taken.id]


def test_a_daily_series_over_a_weekend_breaks_the_hours_rule_and_writes_nothing(client, world):
    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations/series", headers=world.h("alice"),
                               json=series_body(world.resource.id, at(10), at(11), frequency="daily",
                                                occurrences=5))

    assert_error(response, 422, "outside_bookable_hours")


def test_a_series_skipping_conflicts_books_the_rest(client, world):
    taken = world.book(world.resource, world.bob, at(10, days=7), at(11, days=7))
    before = counts(world.db)

    response = client.post("/api/v1/reservations/series", headers=world.h("alice"),
                           json=series_body(world.resource.id, at(10), at(11), skip_conflicts=True))

    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.json
    assert body["series_id"]
    assert [same_instant(r["starts_at"], at(10, days=d)) for r, d in zip(body["created"], (0, 14, 21),
                                                                          strict=True)] == [True] * 3
    assert {r["series_id"] for r in body["created"]} == {body["series_id"]}
    assert len(body["occurrences"]) == 1
    assert [c["id"] for c in body["occurrences"][0]["clashes"]] == [taken.id]
    after = counts(world.db)
    assert (after["reservation"], after["reservation_series"]) == (
        before["reservation"] + 3, before["reservation_series"] + 1)


def test_a_series_of_nothing_bookable_creates_no_series(client, world):
    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations/series", headers=world.h("alice"),
                               json=series_body(world.resource.id, at(19), at(20), skip_conflicts=True))

    assert response.status_code == 201
    assert (response.json["series_id"], response.json["created"], len(response.json["occurrences"])) == (None, [], 4)


@pytest.mark.parametrize(("change", "field"), [
    ({"occurrences": 0}, "occurrences"),
    ({"occurrences": 53}, "occurrences"),
    ({"frequency": "monthly"}, "frequency"),
    ({"starts_at": "2026-12-02T10:00:00"}, "starts_at"),
])
def test_bad_series_are_422(client, world, change, field):
    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations/series", headers=world.h("alice"),
                               json={**series_body(world.resource.id, at(10), at(11)), **change})

    assert field in assert_error(response, 422, "invalid_input")["fields"]


# --- blackouts -----------------------------------------------------------------------------------------------

def blackout_body(start, end, **extra):
    return {"starts_at": iso(start), "ends_at": iso(end), "kind": "maintenance", "reason": "pump service", **extra}


def test_a_manager_blacks_out_a_window_and_removes_it(client, world):
    path = f"/api/v1/resources/{world.resource.id}/blackouts"

    created = client.post(path, headers=world.h("manager"), json=blackout_body(at(9), at(12)))

    assert created.status_code == 201, created.get_data(as_text=True)
    assert (created.json["kind"], created.json["reason"], created.json["resource_id"]) == (
        "maintenance", "pump service", world.resource.id)
    listed = client.get(path, headers=world.h("alice"))
    assert [b["id"] for b in listed.json] == [created.json["id"]]
    assert_error(client.post("/api/v1/reservations", headers=world.h("alice"),
                             json=reservation_body(world.resource.id, at(10), at(11))), 409, "reservation_conflict")

    deleted = client.delete(f"/api/v1/blackouts/{created.json['id']}", headers=world.h("manager"))

    assert deleted.status_code == 204
    assert client.get(path, headers=world.h("alice")).json == []
    assert client.post("/api/v1/reservations", headers=world.h("alice"),
                       json=reservation_body(world.resource.id, at(10), at(11))).status_code == 201


@pytest.mark.parametrize("who", ["alice", "other_manager"])
def test_only_the_facilitys_managers_handle_blackouts(client, world, who):
    existing = Blackout(resource_id=world.resource.id, starts_at=at(9), ends_at=at(10), kind=BlackoutKind.HOLIDAY)
    world.db.add(existing)
    world.db.flush()

    with writes_nothing(world.db):
        created = client.post(f"/api/v1/resources/{world.resource.id}/blackouts", headers=world.h(who),
                              json=blackout_body(at(14), at(15)))
        deleted = client.delete(f"/api/v1/blackouts/{existing.id}", headers=world.h(who))

    assert_error(created, 403, "forbidden")
    assert_error(deleted, 403, "forbidden")


def test_a_blackout_over_live_bookings_is_409_unless_they_are_cancelled(client, world):
    taken = world.book(world.resource, world.alice, at(10), at(11))
    path = f"/api/v1/resources/{world.resource.id}/blackouts"

    with writes_nothing(world.db):
        refused = client.post(path, headers=world.h("manager"), json=blackout_body(at(9), at(12)))
    details = assert_error(refused, 409, "reservation_conflict")
    assert [c["id"] for c in details["clashes"]] == [taken.id]

    forced = client.post(path, headers=world.h("manager"), json=blackout_body(at(9), at(12), cancel_conflicting=True))

    assert forced.status_code == 201
    world.db.expire_all()
    assert world.db.get(Reservation, taken.id).state == ReservationState.CANCELLED


@pytest.mark.parametrize(("body", "field"), [
    (blackout_body(at(12), at(9)), "ends_at"),
    (blackout_body(at(9), at(12), kind="party"), "kind"),
    ({"starts_at": iso(at(9)), "ends_at": iso(at(12))}, "kind"),
])
def test_bad_blackouts_are_422(client, world, body, field):
    with writes_nothing(world.db):
        response = client.post(f"/api/v1/resources/{world.resource.id}/blackouts", headers=world.h("manager"),
                               json=body)

    assert field in assert_error(response, 422, "invalid_input")["fields"]


def test_blackouts_of_unknown_things_are_404(client, world):
    assert_error(client.get("/api/v1/resources/999999/blackouts", headers=world.h("alice")), 404, "not_found")
    assert_error(client.post("/api/v1/resources/999999/blackouts", headers=world.h("manager"),
                             json=blackout_body(at(9), at(12))), 404, "not_found")
    assert_error(client.delete("/api/v1/blackouts/999999", headers=world.h("manager")), 404, "not_found")


# --- qualifications ----------------------------------------------------------------------------------------------

def test_qualifications_gate_self_service_bookings(client, world):
    gated = world.resource_in_a(qualification_required=True)
    path = f"/api/v1/resources/{gated.id}/qualifications"
    booking = reservation_body(gated.id, at(10), at(11))

    with writes_nothing(world.db):
        refused = client.post("/api/v1/reservations", headers=world.h("alice"), json=booking)
    assert_error(refused, 422, "not_qualified")

    granted = client.post(path, headers=world.h("manager"), json={"user_id": world.alice.id})
    assert granted.status_code == 201, granted.get_data(as_text=True)
    assert (granted.json["user_id"], granted.json["resource_id"], granted.json["revoked_at"]) == (
        world.alice.id, gated.id, None)
    assert [q["user_id"] for q in client.get(path, headers=world.h("manager")).json] == [world.alice.id]
    booked = client.post("/api/v1/reservations", headers=world.h("alice"), json=booking)
    assert booked.status_code == 201

    revoked = client.delete(f"/api/v1/qualifications/{granted.json['id']}", headers=world.h("manager"))
    assert revoked.status_code == 200
    assert revoked.json["revoked_at"] is not None
    with writes_nothing(world.db):
        again = client.post("/api/v1/reservations", headers=world.h("alice"),
                            json=reservation_body(gated.id, at(14), at(15)))
    assert_error(again, 422, "not_qualified")


def test_qualifications_are_for_the_facilitys_managers(client, world):
    path = f"/api/v1/resources/{world.resource.id}/qualifications"
    granted = Qualification(user_id=world.bob.id, resource_id=world.resource.id)
    world.db.add(granted)
    world.db.flush()

    with writes_nothing(world.db):
        for who in ("alice", "other_manager"):
            assert_error(client.get(path, headers=world.h(who)), 403, "forbidden")
            assert_error(client.post(path, headers=world.h(who), json={"user_id": world.alice.id}), 403, "forbidden")
            assert_error(client.delete(f"/api/v1/qualifications/{granted.id}", headers=world.h(who)), 403,
                         "forbidden")


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"user_id": 999999}, 404, "not_found"),
    ({}, 422, "invalid_input"),
    ({"user_id": "alice"}, 422, "invalid_input"),
    ({"user_id": "{alice}", "expires_at": "2020-01-01T00:00:00+08:00"}, 422, "invalid_input"),
    ({"user_id": "{alice}", "expires_at": "2030-01-01T00:00:00"}, 422, "invalid_input"),
])
def test_bad_qualification_grants(client, world, body, status, code):
    body = {k: world.alice.id if v == "{alice}" else v for k, v in body.items()}

    with writes_nothing(world.db):
        response = client.post(f"/api/v1/resources/{world.resource.id}/qualifications", headers=world.h("manager"),
                               json=body)

    assert_error(response, status, code)


def test_revoking_an_unknown_qualification_is_404(client, world):
    assert_error(client.delete("/api/v1/qualifications/999999", headers=world.h("manager")), 404, "not_found")


# --- waitlist ---------------------------------------------------------------------------------------------------

def test_waitlist_for_a_busy_window_and_the_mail_when_it_frees_up(client, world):
    taken = world.book(world.resource, world.bob, at(10), at(12))
    window = {"resource_id": world.resource.id, "starts_at": iso(at(10)), "ends_at": iso(at(11))}

    joined = client.post("/api/v1/waitlist", headers=world.h("alice"), json=window)

    assert joined.status_code == 201, joined.get_data(as_text=True)
    assert joined.json["notified_at"] is None
    assert [e["id"] for e in client.get("/api/v1/waitlist", headers=world.h("alice")).json] == [joined.json["id"]]
    assert client.get("/api/v1/waitlist", headers=world.h("bob")).json == []
    with writes_nothing(world.db):
        assert_error(client.post("/api/v1/waitlist", headers=world.h("alice"), json=window), 409, "already_waiting")

    assert client.delete(f"/api/v1/reservations/{taken.id}", headers=world.h("bob")).status_code == 200

    world.db.expire_all()
    assert world.db.get(WaitlistEntry, joined.json["id"]).notified_at is not None
    topics = world.db.scalars(select(OutboundEmail.topic).where(OutboundEmail.user_id == world.alice.id)).all()
    assert "waitlist.freed" in topics


def test_waitlist_for_a_free_window_is_409_waitlist_not_needed(client, world):
    with writes_nothing(world.db):
        response = client.post("/api/v1/waitlist", headers=world.h("alice"),
                               json={"resource_id": world.resource.id, "starts_at": iso(at(10)),
                                     "ends_at": iso(at(11))})

    assert_error(response, 409, "waitlist_not_needed")


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"resource_id": 999999, "starts_at": iso(at(10)), "ends_at": iso(at(11))}, 404, "not_found"),
    ({"resource_id": "{r}", "starts_at": iso(at(11)), "ends_at": iso(at(10))}, 422, "invalid_input"),
    ({"resource_id": "{r}", "starts_at": "2026-12-02T10:00:00", "ends_at": iso(at(11))}, 422, "invalid_input"),
    ({"resource_id": "{r}", "starts_at": iso(at(10, days=-30)), "ends_at": iso(at(11, days=-30))}, 422,
     "starts_in_past"),
])
def test_bad_waitlist_entries(client, world, body, status, code):
    body = {k: world.resource.id if v == "{r}" else v for k, v in body.items()}

    with writes_nothing(world.db):
        response = client.post("/api/v1/waitlist", headers=world.h("alice"), json=body)

    assert_error(response, status, code)


def test_leaving_the_waitlist_and_someone_elses_entry_is_404(client, world):
    entry = WaitlistEntry(resource_id=world.resource.id, user_id=world.alice.id, starts_at=at(10), ends_at=at(11))
    world.db.add(entry)
    world.db.flush()

    with writes_nothing(world.db):
        assert_error(client.delete(f"/api/v1/waitlist/{entry.id}", headers=world.h("bob")), 404, "not_found")
    left = client.delete(f"/api/v1/waitlist/{entry.id}", headers=world.h("alice"))

    assert left.status_code == 204
    assert client.get("/api/v1/waitlist", headers=world.h("alice")).json == []


# --- sample requests (送样) ------------------------------------------------------------------------------------

def sample_body(resource_id, **extra):
    return {"resource_id": resource_id, "sample_count": 4, "description": "4 steel coupons, SEM of fractures",
            "hazards": "", **extra}


def test_a_sample_request_is_scheduled_by_the_facilitys_manager(client, world):
    created = client.post("/api/v1/sample-requests", headers=world.h("alice"), json=sample_body(world.resource.id))

    assert created.status_code == 201, created.get_data(as_text=True)
    request_id = created.json["id"]
    assert (created.json["state"], created.json["user_id"], created.json["reservation_id"]) == (
        "requested", world.alice.id, None)
    assert [r["id"] for r in client.get("/api/v1/sample-requests", headers=world.h("alice")).json] == [request_id]
    assert [r["id"] for r in client.get("/api/v1/sample-requests", headers=world.h("manager")).json] == [request_id]
    assert client.get("/api/v1/sample-requests", headers=world.h("other_manager")).json == []
    assert client.get("/api/v1/sample-requests", headers=world.h("bob")).json == []

    scheduled = client.post(f"/api/v1/sample-requests/{request_id}/schedule", headers=world.h("manager"),
                            json={"starts_at": iso(at(14)), "ends_at": iso(at(16))})

    assert scheduled.status_code == 201, scheduled.get_data(as_text=True)
    assert (scheduled.json["kind"], scheduled.json["user_id"], scheduled.json["state"],
            scheduled.json["sample_count"]) == ("technician", world.alice.id, "confirmed", 4)
    world.db.expire_all()
    stored = world.db.get(SampleRequest, request_id)
    assert (stored.state.value, stored.reservation_id) == ("scheduled", scheduled.json["id"])
    with writes_nothing(world.db):
        assert_error(client.delete(f"/api/v1/sample-requests/{request_id}", headers=world.h("alice")), 409,
                     "invalid_state_transition")


def test_scheduling_is_refused_for_others_and_over_a_clash(client, world):
    request = SampleRequest(resource_id=world.resource.id, user_id=world.alice.id,
                            billed_org_id=world.alice.organisation_id, sample_count=2, description="two vials")
    world.db.add(request)
    taken = world.book(world.resource, world.bob, at(14), at(15))
    path = f"/api/v1/sample-requests/{request.id}/schedule"
    window = {"starts_at": iso(at(14)), "ends_at": iso(at(16))}

    with writes_nothing(world.db):
        by_owner = client.post(path, headers=world.h("alice"), json=window)
        by_stranger = client.post(path, headers=world.h("other_manager"), json=window)
        clash = client.post(path, headers=world.h("manager"), json=window)
        unknown = client.post("/api/v1/sample-requests/999999/schedule", headers=world.h("manager"), json=window)
        backwards = client.post(path, headers=world.h("manager"),
                                json={"starts_at": iso(at(16)), "ends_at": iso(at(14))})

    assert_error(by_owner, 403, "forbidden")
    assert_error(by_stranger, 403, "forbidden")
    assert [c["id"] for c in assert_error(clash, 409, "reservation_conflict")["clashes"]] == [taken.id]
    assert_error(unknown, 404, "not_found")
    assert "ends_at" in assert_error(backwards, 422, "invalid_input")["fields"]


def test_sample_requests_need_a_technician_service_and_a_description(client, world):
    self_only = world.resource_in_a(operation_mode=OperationMode.SELF_SERVICE)

    with writes_nothing(world.db):
        not_offered = client.post("/api/v1/sample-requests", headers=world.h("alice"), json=sample_body(self_only.id))
        no_text = client.post("/api/v1/sample-requests", headers=world.h("alice"),
                              json=sample_body(world.resource.id, description=""))
        too_many = client.post("/api/v1/sample-requests", headers=world.h("alice"),
                               json=sample_body(world.resource.id, sample_count=10001))
        unknown = client.post("/api/v1/sample-requests", headers=world.h("alice"), json=sample_body(999999))

    assert_error(not_offered, 422, "technician_service_not_offered")
    assert "description" in assert_error(no_text, 422, "invalid_input")["fields"]
    assert "sample_count" in assert_error(too_many, 422, "invalid_input")["fields"]
    assert_error(unknown, 404, "not_found")


def test_withdrawing_a_sample_request(client, world):
    created = client.post("/api/v1/sample-requests", headers=world.h("alice"), json=sample_body(world.resource.id))
    path = f"/api/v1/sample-requests/{created.json['id']}"

    with writes_nothing(world.db):
        assert_error(client.delete(path, headers=world.h("bob")), 404, "not_found")
    withdrawn = client.delete(path, headers=world.h("alice"))

    assert withdrawn.status_code == 200
    assert withdrawn.json["state"] == "cancelled"


# --- calendar feeds ---------------------------------------------------------------------------------------------

def feed_path(response) -> str:
    assert response.status_code == 201, response.get_data(as_text=True)
    url = response.json["url"]
    path = urlsplit(url).path
    assert path.startswith("/ical/")
    assert path.endswith(".ics")
    return path


def test_a_users_calendar_feed_and_regenerating_it(client, world):
    mine = world.book(world.resource, world.alice, at(10), at(11))
    world.book(world.resource, world.bob, at(14), at(15))

    first = feed_path(client.post("/api/v1/calendar-feeds", headers=world.h("alice"), json={}))
    feed = client.get(first)

    assert feed.status_code == 200
    assert feed.mimetype == "text/calendar"
    text = feed.get_data(as_text=True)
    assert text.startswith("BEGIN:VCALENDAR")
    assert f"UID:reservation-{mine.id}@labshare" in text
    assert text.count("BEGIN:VEVENT") == 1  # only alice's

    second = feed_path(client.post("/api/v1/calendar-feeds", headers=world.h("alice"), json={}))

    assert second != first
    assert client.get(first).status_code == 404
    assert client.get(second).status_code == 200
    assert client.get("/ical/not-a-secret.ics").status_code == 404


def test_a_resources_calendar_feed_is_for_its_managers(client, world):
    world.book(world.resource, world.alice, at(10), at(11))
    world.book(world.resource, world.bob, at(14), at(15))
    world.db.add(Blackout(resource_id=world.resource.id, starts_at=at(9, days=1), ends_at=at(10, days=1),
                          kind=BlackoutKind.MAINTENANCE))
    world.db.flush()

    path = feed_path(client.post("/api/v1/calendar-feeds", headers=world.h("manager"),
                                 json={"resource_id": world.resource.id}))
    text = client.get(path).get_data(as_text=True)

    assert text.count("BEGIN:VEVENT") == 3
    with writes_nothing(world.db):
        assert_error(client.post("/api/v1/calendar-feeds", headers=world.h("alice"),
                                 json={"resource_id": world.resource.id}), 403, "forbidden")
        assert_error(client.post("/api/v1/calendar-feeds", headers=world.h("manager"),
                                 json={"resource_id": 999999}), 404, "not_found")
        assert_error(client.post("/api/v1/calendar-feeds", headers=world.h("manager"),
                                 json={"resource_id": "x"}), 422, "invalid_input")


# --- inputs that used to be server errors (found by tests/api/test_openapi_schemathesis.py) -----------------------

def test_a_body_that_is_not_json_is_400_in_the_error_format(client, world):
    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations", data=b"{\"resource_id\": \xf7", headers={
            **world.h("alice"), "Content-Type": "application/json"})

    details = assert_error(response, 400, "bad_request")
    assert list(details["fields"]) == ["json"]


@pytest.mark.parametrize("path", [
    "/api/v1/reservations/2147483648",  # past PostgreSQL's integer
    "/api/v1/reservations/9223372036854775808",  # past SQLite's integer
    "/api/v1/resources/100000000000000000000000000000",
    "/api/v1/resources/0",
])
def test_ids_no_row_can_have_are_404(client, world, path):
    with writes_nothing(world.db):
        assert_error(client.get(path, headers=world.h("admin")), 404, "not_found")
        assert_error(client.patch(path, headers=world.h("admin"), json={"purpose": "x"}), 404, "not_found")


@pytest.mark.parametrize("resource_id", [2**31, 2**63, 10**30])
def test_ids_no_row_can_have_in_a_body_are_422(client, world, resource_id):
    with writes_nothing(world.db):
        response = client.post("/api/v1/reservations", headers=world.h("alice"),
                               json=reservation_body(resource_id, at(10), at(11)))

    assert list(assert_error(response, 422, "invalid_input")["fields"]) == ["resource_id"]


def test_text_with_nul_characters_is_422(client, world):
    with writes_nothing(world.db):
        booking = client.post("/api/v1/reservations", headers=world.h("alice"),
                              json=reservation_body(world.resource.id, at(10), at(11), purpose="a\x00b"))
        searched = client.get("/api/v1/resources", headers=world.h("alice"), query_string={"q": "x\x00"})
        token = client.post("/api/v1/tokens", headers=world.h("alice"), json={"name": "\x00"})

    assert list(assert_error(booking, 422, "invalid_input")["fields"]) == ["purpose"]
    assert list(assert_error(searched, 422, "invalid_input")["fields"]) == ["q"]
    assert list(assert_error(token, 422, "invalid_input")["fields"]) == ["name"]


@pytest.mark.parametrize(("start", "end"), [
    ("0001-01-01T00:00:00+00:00", "0001-01-01T01:00:00+00:00"),
    ("0001-01-01T00:00:00+14:00", "0001-01-01T05:00:00+14:00"),
    ("9999-12-31T20:00:00+00:00", "9999-12-31T21:00:00+00:00"),
    ("0001-01-01T00:00:00+00:00", "9999-12-31T21:00:00+00:00"),
])
def test_times_outside_the_years_1900_to_2999_are_422(client, world, start, end):
    window = {"resource_id": world.resource.id, "starts_at": start, "ends_at": end}
    with writes_nothing(world.db):
        responses = [
            client.post("/api/v1/reservations", headers=world.h("alice"), json=window),
            client.post("/api/v1/reservations/preview", headers=world.h("alice"), json=window),
            client.post("/api/v1/waitlist", headers=world.h("alice"), json=window),
            client.get("/api/v1/resources", headers=world.h("alice"),
                       query_string={"free_from": start, "free_to": end}),
            client.get(f"/api/v1/resources/{world.resource.id}/availability", headers=world.h("alice"),
                       query_string={"start": start, "end": end}),
            client.get("/api/v1/reservations", headers=world.h("admin"),
                       query_string={"scope": "all", "start": start, "end": end}),
        ]

    for response in responses:
        assert_error(response, 422, "invalid_input")


def test_a_window_of_centuries_is_answered_at_once(client, world):
    """Checking open hours used to walk every day of the window: a window of 900 years took seconds per resource."""
    import time as clock

    for _ in range(20):
        world.resource_in_a()
    start, end = iso(at(9)), iso(at(10).replace(year=at(10).year + 900))
    began = clock.perf_counter()

    with writes_nothing(world.db):
        booking = client.post("/api/v1/reservations", headers=world.h("alice"),
                              json={"resource_id": world.resource.id, "starts_at": start, "ends_at": end})
    searched = client.get("/api/v1/resources", headers=world.h("alice"), query_string={"free_from": start,
                                                                                       "free_to": end})

    assert clock.perf_counter() - began < 2
    assert {v["code"] for v in assert_error(booking, 422, "too_long")["violations"]} == {"too_long",
                                                                                          "outside_bookable_hours"}
    assert searched.json["total"] == 0


def test_the_openapi_document_gives_numeric_bounds(client):
    doc = client.get("/api/v1/openapi.json").json
    value = doc["components"]["schemas"]["ResourceWrite"]["properties"]["original_value"]

    assert (value["minimum"], value["maximum"]) == (0, 10**11)
    path_id = next(p for p in doc["paths"]["/api/v1/reservations/{reservation_id}"]["parameters"]
                   if p["name"] == "reservation_id")
    assert path_id["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
