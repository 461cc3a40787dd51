"""The booking pages: catalog, resource page (calendar, preview, booking, repeats, waitlist, samples), my
reservations, approvals, facility calendar and resource management — who may open them, what they show,
that their forms check input next to the fields and write nothing on error, and the flows through them."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from booking.catalog import search_text_of
from booking.models import (
    Blackout,
    BlackoutKind,
    OperationMode,
    Qualification,
    Reservation,
    ReservationSeries,
    ReservationState,
    Resource,
    ResourceKind,
    SampleRequest,
    SampleRequestState,
    WaitlistEntry,
)
from core.accounts.models import User
from core.audit import AuditEntry
from core.i18n import gettext_for
from core.timeutil import utcnow
from tests.factories import PASSWORD, make_facility, make_resource, make_user, row_counts

TZ = ZoneInfo("Asia/Shanghai")
ALL_WEEK = dict.fromkeys(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "08:00-20:00")
BOOKING_TABLES = (Reservation, ReservationSeries, WaitlistEntry, SampleRequest, Blackout, Qualification, AuditEntry)
# what the pages say in the default language (zh_CN): a message as the catalog translates it
zh = gettext_for("zh_CN")


# --- reading pages ---------------------------------------------------------------------------------------------------

def text_of(response) -> str:
    return response.get_data(as_text=True)


def field_errors(page: str, field_id: str) -> list[str]:
    """The messages shown under one form field (the field macro puts them right after its input)."""
    start = page.index(f'id="{field_id}"')
    ends = [i for i in (page.find('<div class="mb-3">', start), page.find("</form>", start),
                        page.find("<td>", start)) if i != -1]
    block = page[start:min(ends)]
    return [html.unescape(m) for m in re.findall(r'<div class="invalid-feedback d-block">(.*?)</div>', block)]


def flashes(page: str) -> list[str]:
    alerts = re.findall(r'<div class="alert alert-\w+ alert-dismissible[^>]*>(.*?)<button', page, re.S)
    return [html.unescape(" ".join(message.split())) for message in alerts]


def count_marked(page: str, testid: str) -> int:
    return page.count(f'data-testid="{testid}"')


def block(page: str, testid: str) -> str:
    """The element marked with `testid`, roughly: from its tag to the next element with a data-testid."""
    start = page.index(f'data-testid="{testid}"')
    return page[start:start + 3000]


# --- the world: one facility with its resources, users in every role -------------------------------------------------

@dataclass
class World:
    users: dict[str, User]
    facility_id: int
    other_facility_id: int
    instrument: Resource  # self-service, confirmed at once
    approval: Resource  # needs a lab manager's approval
    pilot: Resource  # whole days, batches of 2
    technician: Resource  # technician-run only: sample requests
    other: Resource  # in the other facility

    def login(self, auth, role: str) -> None:
        assert auth.login(self.users[role].email, PASSWORD).status_code == 302


@pytest.fixture
def world(db) -> World:
    users = {role: make_user(db, roles=roles) for role, roles in (
        ("researcher", ("researcher",)), ("manager", ("lab_manager",)), ("other_manager", ("lab_manager",)),
        ("admin", ("admin",)), ("stranger", ("researcher",)))}
    facility = make_facility(db, managers=(users["manager"],), opening_hours=ALL_WEEK)
    other = make_facility(db, managers=(users["other_manager"],), opening_hours=ALL_WEEK)
    instrument = make_resource(db, facility=facility, name_zh="场发射扫描电子显微镜", name_en="Field-emission SEM",
                               model="GeminiSEM 560", operation_mode=OperationMode.BOTH)
    approval = make_resource(db, facility=facility, name_zh="透射电镜", name_en="TEM", approval_required=True,
                             operation_mode=OperationMode.SELF_SERVICE)
    pilot = make_resource(db, facility=facility, kind=ResourceKind.PILOT_LINE, name_zh="发酵中试线",
                          name_en="Fermentation line", granularity_min=1440, min_duration_min=1440,
                          max_duration_min=14 * 1440, lead_time_min=0, batch_days=2, horizon_days=365,
                          operation_mode=OperationMode.SELF_SERVICE)
    technician = make_resource(db, facility=facility, name_zh="液相色谱质谱联用仪", name_en="LC-MS/MS",
                               operation_mode=OperationMode.TECHNICIAN)
    elsewhere = make_resource(db, facility=other, name_zh="矢量网络分析仪", name_en="VNA")
    for resource in (instrument, approval, pilot, technician, elsewhere):
        resource.search_text = search_text_of(resource)  # as booking.catalog keeps it
    db.flush()
    return World(users, facility.id, other.id, instrument, approval, pilot, technician, elsewhere)


def day_ahead(days: int = 8) -> date:
    return utcnow().astimezone(TZ).date() + timedelta(days=days)


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=TZ)


def add_reservation(db, resource: Resource, user: User, start: datetime, end: datetime,
                    state: ReservationState = ReservationState.CONFIRMED, purpose: str = "测试") -> Reservation:
    reservation = Reservation(resource_id=resource.id, user_id=user.id, billed_org_id=user.organisation_id,
                              starts_at=start, ends_at=end, state=state, purpose=purpose)
    db.add(reservation)
    db.flush()
    return reservation


def booking_data(auth, resource: Resource, day: date, start: str = "10:00", end: str = "11:00", **extra) -> dict:
    return {"csrf_token": auth.csrf_token(f"/resources/{resource.id}"), "date": day.isoformat(), "time_from": start,
            "time_to": end, "purpose": "表面形貌观察", **extra}


def reservations_of(db, resource: Resource) -> list[Reservation]:
    db.expire_all()
    return list(db.scalars(select(Reservation).where(Reservation.resource_id == resource.id)
                           .order_by(Reservation.starts_at)))


# --- who may open which page -----------------------------------------------------------------------------------------

ROLES = ("anonymous", "researcher", "manager", "other_manager", "admin")
SIGN_IN = "sign in"
#   page                                          anonymous researcher manager other_manager admin
PAGES = {
    "/resources":                                 (200, 200, 200, 200, 200),  # public
    "/resources?q=电镜&date={day}&time_from=10:00&time_to=11:00": (200, 200, 200, 200, 200),
    "/resources/{instrument}":                    (200, 200, 200, 200, 200),
    "/resources/{pilot}?view=month":              (200, 200, 200, 200, 200),
    "/resources/{instrument}/calendar?view=week&start={day}": (200, 200, 200, 200, 200),
    "/resources/{missing}":                       (404, 404, 404, 404, 404),
    "/reservations":                              (SIGN_IN, 200, 200, 200, 200),
    "/reservations/{reservation}":                (SIGN_IN, 200, 200, 404, 200),
    "/reservations/{reservation}/edit":           (SIGN_IN, 200, 200, 404, 200),
    "/manage/approvals":                          (SIGN_IN, 403, 200, 200, 200),
    "/manage/facilities/{facility}":              (SIGN_IN, 403, 200, 403, 200),
    "/manage/facilities/{facility}/calendar":     (SIGN_IN, 403, 200, 403, 200),
    "/manage/facilities/{facility}/calendar?view=week": (SIGN_IN, 403, 200, 403, 200),
    "/manage/facilities/{facility}/resources/new": (SIGN_IN, 403, 200, 403, 200),
    "/manage/resources/{instrument}/edit":        (SIGN_IN, 403, 200, 403, 200),
    "/manage/resources/{instrument}/blackouts":   (SIGN_IN, 403, 200, 403, 200),
    "/manage/resources/{instrument}/qualifications": (SIGN_IN, 403, 200, 403, 200),
    "/manage/resources/{other}/edit":             (SIGN_IN, 403, 403, 200, 200),
}
CASES = [(role, path, PAGES[path][i]) for path in PAGES for i, role in enumerate(ROLES)]


@pytest.mark.parametrize(("role", "page_path", "expected"), CASES, ids=[f"{r}-{p}" for r, p, _ in CASES])
def test_role_may_open_booking_page(db, client, auth, world, role, page_path, expected):
    reservation = add_reservation(db, world.instrument, world.users["researcher"], local(day_ahead(), 10),
                                  local(day_ahead(), 11))
    path = page_path.format(day=day_ahead().isoformat(), instrument=world.instrument.id, pilot=world.pilot.id,
                            missing=world.other.id + 1000, reservation=reservation.id, facility=world.facility_id,
                            other=world.other.id)
    if role != "anonymous":
        world.login(auth, role)

    response = client.get(path)

    if expected == SIGN_IN:
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")
    else:
        assert response.status_code == expected, text_of(response)[:2000]
        if expected == 403:
            assert "您无权查看此页面。" in text_of(response)


@pytest.mark.parametrize(("role", "shown"), [("researcher", False), ("manager", True), ("admin", True)])
def test_navigation_offers_catalog_and_my_reservations_to_all_and_approvals_to_managers(client, auth, world, role,
                                                                                          shown):
    world.login(auth, role)

    page = text_of(client.get("/"))

    assert 'href="/resources"' in page
    assert 'href="/reservations"' in page
    assert ('href="/manage/approvals"' in page) == shown


# --- catalog ---------------------------------------------------------------------------------------------------------

def test_catalog_lists_resources_with_their_facility_and_badges(client, auth, world):
    world.login(auth, "researcher")

    page = text_of(client.get("/resources?q=电镜"))

    assert "场发射扫描电子显微镜" in page
    assert "透射电镜" in page
    assert "矢量网络分析仪" not in page
    assert count_marked(page, "resource-card") == 2
    assert f'href="/resources/{world.instrument.id}"' in page
    assert count_marked(page, "free-badge") == 0


def test_catalog_filters_by_type_and_operation(client, auth, world):
    world.login(auth, "researcher")

    pilots = text_of(client.get("/resources?kind=pilot_line"))
    technician = text_of(client.get(f"/resources?mode=technician&facility={world.facility_id}"))

    assert "发酵中试线" in pilots
    assert "场发射扫描电子显微镜" not in pilots
    assert "液相色谱质谱联用仪" in technician
    assert "场发射扫描电子显微镜" in technician  # offers both
    assert "透射电镜" not in technician  # self-service only


def test_time_first_search_keeps_only_resources_free_in_the_window(db, client, auth, world):
    day = day_ahead()
    add_reservation(db, world.approval, world.users["stranger"], local(day, 9), local(day, 12))
    world.login(auth, "researcher")

    page = text_of(client.get(f"/resources?facility={world.facility_id}&date={day}&time_from=10:00&time_to=11:00"))

    assert "场发射扫描电子显微镜" in page
    assert "透射电镜" not in page  # booked then
    assert "发酵中试线" not in page  # books whole days only
    assert count_marked(page, "free-badge") == count_marked(page, "resource-card") >= 1
    assert count_marked(page, "window-summary") == 1
    # the card carries the window on to the booking form
    assert f'/resources/{world.instrument.id}?date={day}&amp;time_from=10:00&amp;time_to=11:00' in page


def test_time_first_search_with_half_a_window_says_what_is_missing(client, auth, world):
    world.login(auth, "researcher")

    page = text_of(client.get(f"/resources?date={day_ahead()}&time_from=10:00"))

    assert field_errors(page, "time_to") == [zh("For a time-first search give a date, a start and an end.")]
    assert count_marked(page, "free-badge") == 0


def test_catalog_pages_through_many_results(db, client, auth, world):
    facility = make_facility(db)
    for n in range(14):
        make_resource(db, facility=facility, name_zh=f"批量仪器{n:02d}")
    world.login(auth, "researcher")

    first = text_of(client.get(f"/resources?facility={facility.id}"))
    second = text_of(client.get(f"/resources?facility={facility.id}&page=2"))

    assert count_marked(first, "resource-card") == 12
    assert count_marked(second, "resource-card") == 2
    assert f"facility={facility.id}" in re.search(r'class="pagination.*?</ul>', first, re.S).group(0)


# --- resource page ---------------------------------------------------------------------------------------------------

def test_resource_page_shows_specs_rules_calendar_and_booking_form(db, client, auth, world):
    day = day_ahead()
    add_reservation(db, world.instrument, world.users["stranger"], local(day, 10), local(day, 12))
    db.add(Blackout(resource_id=world.instrument.id, starts_at=local(day, 14), ends_at=local(day, 16),
                    kind=BlackoutKind.CALIBRATION, reason="年度校准"))
    db.flush()
    world.login(auth, "researcher")

    page = text_of(client.get(f"/resources/{world.instrument.id}?start={day}"))

    assert "场发射扫描电子显微镜" in page
    assert "分辨率" in block(page, "specs")
    assert "1 nm" in block(page, "specs")
    assert count_marked(page, "rules") == 1
    calendar = page[page.index('data-testid="calendar"'):page.index('data-testid="booking-form"')]
    day_column = calendar[calendar.index(f'data-date="{day}"'):]
    day_column = day_column[:day_column.index('</div>\n      </div>')]
    assert 'data-testid="block-busy"' in day_column
    assert 'data-testid="block-blackout"' in day_column
    assert f'data-slot-date="{day}" data-slot-from="12:00"' in day_column
    assert f'data-slot-date="{day}" data-slot-from="10:00"' not in day_column
    assert count_marked(page, "booking-form") == 1
    assert count_marked(page, "sample-form") == 1  # it offers both


def test_the_month_view_and_paging_of_the_calendar(client, auth, world):
    world.login(auth, "researcher")
    day = day_ahead(40)

    month = text_of(client.get(f"/resources/{world.instrument.id}/calendar?view=month&start={day}"))
    week = text_of(client.get(f"/resources/{world.instrument.id}/calendar?view=week&start={day}"))

    assert 'data-view="month"' in month
    assert f'data-start="{day.replace(day=1)}"' in month
    assert month.count("ls-month-cell") >= 28
    monday = day - timedelta(days=day.weekday())
    assert f'data-start="{monday}"' in week
    next_week = monday + timedelta(days=7)
    assert f'hx-get="/resources/{world.instrument.id}/calendar?view=week&amp;start={next_week}"' in week


def test_a_pilot_line_books_start_date_and_batches_with_free_days_to_pick(client, auth, world):
    world.login(auth, "researcher")

    page = text_of(client.get(f"/resources/{world.pilot.id}"))
    next_month = text_of(client.get(f"/resources/{world.pilot.id}?start={day_ahead(40)}"))

    assert 'data-view="month"' in page
    assert 'id="days"' in page
    assert 'id="time_from"' not in page
    assert count_marked(next_month, "free-day") >= 28


def test_a_technician_only_resource_offers_sample_requests_and_no_booking_form(client, auth, world):
    world.login(auth, "researcher")

    page = text_of(client.get(f"/resources/{world.technician.id}"))

    assert count_marked(page, "booking-form") == 0
    assert count_marked(page, "technician-only") == 1
    assert count_marked(page, "sample-form") == 1


def test_managers_see_who_booked_in_the_calendar_and_researchers_do_not(db, client, auth, world):
    day = day_ahead()
    add_reservation(db, world.instrument, world.users["stranger"], local(day, 10), local(day, 12))
    name = world.users["stranger"].name_zh

    world.login(auth, "researcher")
    assert name not in text_of(client.get(f"/resources/{world.instrument.id}?start={day}"))
    auth.logout()
    world.login(auth, "manager")
    assert name in text_of(client.get(f"/resources/{world.instrument.id}?start={day}"))


# --- the live preview ------------------------------------------------------------------------------------------------

def preview(client, auth, resource, day, start="10:00", end="11:00", **extra) -> str:
    response = client.post(f"/resources/{resource.id}/preview", data=booking_data(auth, resource, day, start, end,
                                                                                   **extra))
    assert response.status_code == 200
    return text_of(response)


def test_preview_says_a_free_window_is_free_and_writes_nothing(db, client, auth, world):
    world.login(auth, "researcher")
    before = row_counts(db, *BOOKING_TABLES)

    page = preview(client, auth, world.instrument, day_ahead())

    assert count_marked(page, "preview-ok") == 1
    assert f"{day_ahead()} 10:00–11:00" in page
    assert row_counts(db, *BOOKING_TABLES) == before


def test_preview_shows_each_clash_with_local_times_and_offers_the_waitlist(db, client, auth, world):
    day = day_ahead()
    add_reservation(db, world.instrument, world.users["stranger"], local(day, 9, 30), local(day, 10, 30))
    db.add(Blackout(resource_id=world.instrument.id, starts_at=local(day, 10, 30), ends_at=local(day, 12),
                    kind=BlackoutKind.MAINTENANCE))
    db.flush()
    world.login(auth, "researcher")

    page = preview(client, auth, world.instrument, day, "10:00", "11:00")

    clashes = re.findall(r'data-testid="preview-clash">\s*(.*?)\s*</li>', page, re.S)
    assert len(clashes) == 2
    assert f"{day} 09:30–10:30" in clashes[0]
    assert f"{day} 10:30–12:00" in clashes[1]
    assert count_marked(page, "join-waitlist") == 1


def test_preview_shows_broken_rules_in_chinese(client, auth, world):
    world.login(auth, "researcher")

    page = preview(client, auth, world.instrument, day_ahead(), "19:00", "21:00")

    assert "所选时间不在该仪器的可预约时段内。" in page
    assert count_marked(page, "join-waitlist") == 0


def test_preview_of_an_incomplete_form_asks_for_the_missing_time(client, auth, world):
    world.login(auth, "researcher")

    page = preview(client, auth, world.instrument, day_ahead(), "10:00", "")

    assert count_marked(page, "preview-incomplete") == 1
    assert zh("Choose a time.") in page


def test_preview_of_a_weekly_repeat_lists_every_occurrence_with_its_conflicts(db, client, auth, world):
    day = day_ahead()
    add_reservation(db, world.instrument, world.users["stranger"], local(day + timedelta(days=7), 10),
                    local(day + timedelta(days=7), 11))
    world.login(auth, "researcher")

    page = preview(client, auth, world.instrument, day, repeat="weekly", occurrences="3")

    rows = re.findall(r'data-bookable="(yes|no)"', page)
    assert rows == ["yes", "no", "yes"]
    assert f"{day + timedelta(days=14)} 10:00–11:00" in page


# --- booking through the form ----------------------------------------------------------------------------------------

def test_booking_through_the_form_confirms_it_and_shows_it_in_my_reservations(db, client, auth, world):
    world.login(auth, "researcher")
    day = day_ahead()

    response = client.post(f"/resources/{world.instrument.id}/book",
                           data=booking_data(auth, world.instrument, day, sample_count="3"))

    assert response.status_code == 302
    assert response.headers["Location"] == "/reservations"
    [reservation] = reservations_of(db, world.instrument)
    assert reservation.state == ReservationState.CONFIRMED
    assert (reservation.starts_at, reservation.ends_at) == (local(day, 10), local(day, 11))
    assert (reservation.user_id, reservation.purpose, reservation.sample_count) == (
        world.users["researcher"].id, "表面形貌观察", 3)
    page = text_of(client.get("/reservations"))
    assert flashes(page) == [zh("Booked: %(resource)s on %(when)s. It is confirmed.") % {
        "resource": "场发射扫描电子显微镜", "when": f"{day} 10:00–11:00"}]
    upcoming = block(page, "upcoming")
    assert f"{day} 10:00–11:00" in upcoming
    assert 'data-state="confirmed"' in upcoming


def test_booking_a_resource_that_needs_approval_leaves_it_pending(db, client, auth, world):
    world.login(auth, "researcher")
    day = day_ahead()

    response = client.post(f"/resources/{world.approval.id}/book",
                           data=booking_data(auth, world.approval, day))

    assert response.status_code == 302
    assert [r.state for r in reservations_of(db, world.approval)] == [ReservationState.PENDING]
    waiting = zh("Your booking of %(resource)s on %(when)s is waiting for a lab manager's approval.") % {
        "resource": "透射电镜", "when": f"{day} 10:00–11:00"}
    assert flashes(text_of(client.get("/reservations")))[0] == waiting


def test_booking_a_pilot_line_by_batches(db, client, auth, world):
    world.login(auth, "researcher")
    day = day_ahead(10)

    response = client.post(f"/resources/{world.pilot.id}/book", data={
        "csrf_token": auth.csrf_token(f"/resources/{world.pilot.id}"), "date": day.isoformat(), "days": "2",
        "purpose": "发酵工艺放大"})

    assert response.status_code == 302
    [reservation] = reservations_of(db, world.pilot)
    assert (reservation.starts_at, reservation.ends_at) == (local(day, 0), local(day + timedelta(days=4), 0))


def test_a_conflicting_submit_shows_the_conflict_and_writes_nothing(db, client, auth, world):
    day = day_ahead()
    add_reservation(db, world.instrument, world.users["stranger"], local(day, 10, 30), local(day, 11, 30))
    world.login(auth, "researcher")
    before = row_counts(db, *BOOKING_TABLES)

    response = client.post(f"/resources/{world.instrument.id}/book", data=booking_data(auth, world.instrument, day))

    page = text_of(response)
    assert response.status_code == 409
    assert count_marked(page, "form-error") == 1
    assert f"{day} 10:30" in block(page, "form-error")
    assert f"{day} 10:30–11:30" in block(page, "preview-problems")
    assert 'value="10:00"' in page  # the form keeps what was entered
    assert row_counts(db, *BOOKING_TABLES) == before


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"date": ""}, "date", "Choose a date."),
    ({"date": "tomorrow"}, "date", "Enter a date."),
    ({"time_from": ""}, "time_from", "Choose a time."),
    ({"time_to": "25:00"}, "time_to", "Enter a time as HH:MM."),
    ({"time_from": "11:00", "time_to": "10:00"}, "time_to", "The end must be after the start."),
    ({"sample_count": "0"}, "sample_count", "Number must be between 1 and 10000."),
    ({"repeat": "weekly", "occurrences": "53"}, "occurrences", "Repeat between 2 and 52 times."),
])
def test_invalid_booking_input_is_shown_next_to_the_field_and_writes_nothing(db, client, auth, world, data, field,
                                                                            message):
    english = make_user(db, locale="en")
    auth.login(english.email, PASSWORD)
    before = row_counts(db, *BOOKING_TABLES)

    response = client.post(f"/resources/{world.instrument.id}/book",
                           data={**booking_data(auth, world.instrument, day_ahead()), **data})

    page = text_of(response)
    assert response.status_code == 422
    assert field_errors(page, field) == [message]
    assert row_counts(db, *BOOKING_TABLES) == before


def test_a_broken_rule_on_submit_is_explained_and_writes_nothing(db, client, auth, world):
    world.login(auth, "researcher")
    before = row_counts(db, *BOOKING_TABLES)

    response = client.post(f"/resources/{world.instrument.id}/book",
                           data=booking_data(auth, world.instrument, day_ahead(), "10:10", "11:00"))

    assert response.status_code == 422
    assert "开始和结束时间须对齐该仪器的 30 分钟时间格。" in block(text_of(response), "form-error")
    assert row_counts(db, *BOOKING_TABLES) == before


def test_a_weekly_repeat_is_all_or_nothing_unless_conflicts_are_skipped(db, client, auth, world):
    day = day_ahead()
    add_reservation(db, world.instrument, world.users["stranger"], local(day + timedelta(days=7), 10),
                    local(day + timedelta(days=7), 11))
    world.login(auth, "researcher")
    before = row_counts(db, *BOOKING_TABLES)

    refused = client.post(f"/resources/{world.instrument.id}/book", data=booking_data(
        auth, world.instrument, day, repeat="weekly", occurrences="3", conflicts="all"))

    assert refused.status_code == 409
    assert re.findall(r'data-bookable="(yes|no)"', text_of(refused)) == ["yes", "no", "yes"]
    assert row_counts(db, *BOOKING_TABLES) == before

    skipped = client.post(f"/resources/{world.instrument.id}/book", data=booking_data(
        auth, world.instrument, day, repeat="weekly", occurrences="3", conflicts="skip"))

    assert skipped.status_code == 302
    mine = [r for r in reservations_of(db, world.instrument) if r.user_id == world.users["researcher"].id]
    assert [r.starts_at for r in mine] == [local(day, 10), local(day + timedelta(days=14), 10)]
    assert len({r.series_id for r in mine}) == 1
    made = zh("%(n)s bookings of %(resource)s made, %(skipped)s times skipped.") % {
        "n": 2, "resource": "场发射扫描电子显微镜", "skipped": 1}
    assert flashes(text_of(client.get("/reservations")))[0] == f"{made} {zh('They are confirmed.')}"


def test_joining_the_waitlist_from_a_clash_and_leaving_it(db, client, auth, world):
    day = day_ahead()
    add_reservation(db, world.instrument, world.users["stranger"], local(day, 10), local(day, 11))
    world.login(auth, "researcher")

    response = client.post(f"/resources/{world.instrument.id}/waitlist", data=booking_data(auth, world.instrument,
                                                                                         day))

    assert response.status_code == 302
    db.expire_all()
    [entry] = db.scalars(select(WaitlistEntry)).all()
    assert (entry.user_id, entry.starts_at, entry.ends_at) == (world.users["researcher"].id, local(day, 10),
                                                              local(day, 11))
    page = text_of(client.get("/reservations"))
    assert f"{day} 10:00–11:00" in block(page, "waitlist")

    client.post(f"/waitlist/{entry.id}/leave", data={"csrf_token": auth.csrf_token("/reservations")})

    db.expire_all()
    assert db.get(WaitlistEntry, entry.id).cancelled_at is not None


def test_joining_the_waitlist_for_a_free_time_is_refused(db, client, auth, world):
    world.login(auth, "researcher")

    response = client.post(f"/resources/{world.instrument.id}/waitlist",
                           data=booking_data(auth, world.instrument, day_ahead()))

    assert response.headers["Location"] == f"/resources/{world.instrument.id}?date={day_ahead()}"
    assert flashes(text_of(client.get(response.headers["Location"]))) == ["该时段空闲，请直接预约，无需排队等候。"]
    db.expire_all()
    assert db.scalars(select(WaitlistEntry)).all() == []


# --- sample requests -------------------------------------------------------------------------------------------------

def send_samples(client, auth, resource, **data):
    return client.post(f"/resources/{resource.id}/sample-requests", data={
        "csrf_token": auth.csrf_token(f"/resources/{resource.id}"), "sr-sample_count": "6",
        "sr-description": "蛋白样品纯度检测", "sr-hazards": "含叠氮化钠", **data})


def test_a_sample_request_is_scheduled_by_the_lab_manager(db, client, auth, world):
    world.login(auth, "researcher")
    assert send_samples(client, auth, world.technician).status_code == 302
    db.expire_all()
    [request] = db.scalars(select(SampleRequest)).all()
    assert (request.sample_count, request.hazards, request.state) == (6, "含叠氮化钠", SampleRequestState.REQUESTED)
    auth.logout()
    world.login(auth, "manager")
    queue = text_of(client.get("/manage/approvals"))
    assert "蛋白样品纯度检测" in block(queue, "sample-table")
    day = day_ahead(3)

    response = client.post(f"/manage/sample-requests/{request.id}/schedule", data={
        "csrf_token": auth.csrf_token("/manage/approvals"), f"s{request.id}-date": day.isoformat(),
        f"s{request.id}-time_from": "14:00", f"s{request.id}-time_to": "16:00"})

    assert response.status_code == 302
    [reservation] = reservations_of(db, world.technician)
    assert (reservation.user_id, reservation.state, reservation.starts_at) == (
        world.users["researcher"].id, ReservationState.CONFIRMED, local(day, 14))
    assert db.get(SampleRequest, request.id).state == SampleRequestState.SCHEDULED


def test_an_invalid_sample_request_is_refused_next_to_the_fields(db, client, auth, world):
    world.login(auth, "researcher")
    before = row_counts(db, *BOOKING_TABLES)

    response = send_samples(client, auth, world.technician, **{"sr-sample_count": "", "sr-description": " "})

    page = text_of(response)
    assert response.status_code == 422
    assert field_errors(page, "sr-sample_count") == [zh("Give the number of samples.")]
    assert field_errors(page, "sr-description") == [zh("Describe the samples and the analysis wanted.")]
    assert row_counts(db, *BOOKING_TABLES) == before


def test_scheduling_samples_into_a_busy_slot_shows_the_clash_and_writes_nothing(db, client, auth, world):
    day = day_ahead(3)
    add_reservation(db, world.technician, world.users["stranger"], local(day, 14), local(day, 15))
    request = SampleRequest(resource_id=world.technician.id, user_id=world.users["researcher"].id,
                            billed_org_id=world.users["researcher"].organisation_id, sample_count=2,
                            description="XRD 物相")
    db.add(request)
    db.flush()
    world.login(auth, "manager")
    before = row_counts(db, *BOOKING_TABLES)

    response = client.post(f"/manage/sample-requests/{request.id}/schedule", data={
        "csrf_token": auth.csrf_token("/manage/approvals"), f"s{request.id}-date": day.isoformat(),
        f"s{request.id}-time_from": "14:00", f"s{request.id}-time_to": "16:00"})

    assert response.status_code == 409
    assert f"{day} 14:00" in block(text_of(response), "form-error")
    assert row_counts(db, *BOOKING_TABLES) == before


def test_a_lab_manager_rejects_a_sample_request_with_a_note(db, client, auth, world):
    request = SampleRequest(resource_id=world.technician.id, user_id=world.users["researcher"].id,
                            billed_org_id=world.users["researcher"].organisation_id, sample_count=2,
                            description="XRD 物相")
    db.add(request)
    db.flush()
    world.login(auth, "manager")

    client.post(f"/manage/sample-requests/{request.id}/reject",
                data={"csrf_token": auth.csrf_token("/manage/approvals"), "note": "样品需预先干燥"})

    db.expire_all()
    assert (db.get(SampleRequest, request.id).state, db.get(SampleRequest, request.id).note) == (
        SampleRequestState.REJECTED, "样品需预先干燥")


# --- my reservations: cancel, change ---------------------------------------------------------------------------------

def test_cancelling_inside_the_deadline_warns_first_and_records_a_late_cancellation(db, client, auth, world):
    soon = utcnow().astimezone(TZ).replace(minute=0, second=0, microsecond=0) + timedelta(hours=5)
    later = local(day_ahead(), 10)
    late = add_reservation(db, world.instrument, world.users["researcher"], soon, soon + timedelta(hours=1))
    in_time = add_reservation(db, world.instrument, world.users["researcher"], later, later + timedelta(hours=1))
    world.login(auth, "researcher")

    page = text_of(client.get("/reservations"))

    rows = {int(m.group(1)): m.group(0) for m in re.finditer(
        r'data-reservation-id="(\d+)">.*?</tr>', page, re.S)}
    assert 'data-testid="late-warning"' in rows[late.id]
    assert 'data-testid="late-warning"' not in rows[in_time.id]

    for reservation in (late, in_time):
        response = client.post(f"/reservations/{reservation.id}/cancel",
                               data={"csrf_token": auth.csrf_token("/reservations")})
        assert response.status_code == 302
    db.expire_all()
    assert (db.get(Reservation, late.id).state, db.get(Reservation, late.id).late_cancellation) == (
        ReservationState.CANCELLED, True)
    assert (db.get(Reservation, in_time.id).state, db.get(Reservation, in_time.id).late_cancellation) == (
        ReservationState.CANCELLED, False)


def test_nobody_else_cancels_my_booking(db, client, auth, world):
    reservation = add_reservation(db, world.instrument, world.users["researcher"], local(day_ahead(), 10),
                                  local(day_ahead(), 11))
    world.login(auth, "stranger")

    response = client.post(f"/reservations/{reservation.id}/cancel",
                           data={"csrf_token": auth.csrf_token("/reservations")})

    assert response.status_code == 404
    db.expire_all()
    assert db.get(Reservation, reservation.id).state == ReservationState.CONFIRMED


def test_changing_the_time_of_my_booking(db, client, auth, world):
    day = day_ahead()
    reservation = add_reservation(db, world.instrument, world.users["researcher"], local(day, 10), local(day, 11))
    world.login(auth, "researcher")
    form = text_of(client.get(f"/reservations/{reservation.id}/edit"))
    assert f'value="{day}T10:00"' in form

    response = client.post(f"/reservations/{reservation.id}/edit", data={
        "csrf_token": auth.csrf_token(f"/reservations/{reservation.id}/edit"), "starts_at": f"{day}T13:00",
        "ends_at": f"{day}T14:30", "purpose": "改到下午"})

    assert response.status_code == 302
    db.expire_all()
    changed = db.get(Reservation, reservation.id)
    assert (changed.starts_at, changed.ends_at, changed.purpose) == (local(day, 13), local(day, 14, 30), "改到下午")


def test_changing_into_a_taken_time_shows_the_conflict_and_keeps_the_booking(db, client, auth, world):
    day = day_ahead()
    reservation = add_reservation(db, world.instrument, world.users["researcher"], local(day, 10), local(day, 11))
    add_reservation(db, world.instrument, world.users["stranger"], local(day, 13), local(day, 14))
    world.login(auth, "researcher")

    response = client.post(f"/reservations/{reservation.id}/edit", data={
        "csrf_token": auth.csrf_token(f"/reservations/{reservation.id}/edit"), "starts_at": f"{day}T13:00",
        "ends_at": f"{day}T14:00"})

    assert response.status_code == 409
    assert f"{day} 13:00" in block(text_of(response), "form-error")
    db.expire_all()
    assert db.get(Reservation, reservation.id).starts_at == local(day, 10)


# --- approvals -------------------------------------------------------------------------------------------------------

def test_the_approvals_queue_shows_pending_bookings_of_my_facilities_only(db, client, auth, world):
    mine = add_reservation(db, world.approval, world.users["researcher"], local(day_ahead(), 10),
                           local(day_ahead(), 11), ReservationState.PENDING)
    other = add_reservation(db, world.other, world.users["researcher"], local(day_ahead(), 10),
                            local(day_ahead(), 11), ReservationState.PENDING)

    world.login(auth, "manager")
    page = text_of(client.get("/manage/approvals"))
    auth.logout()
    world.login(auth, "admin")
    everything = text_of(client.get("/manage/approvals"))

    assert f'data-reservation-id="{mine.id}"' in page
    assert f'data-reservation-id="{other.id}"' not in page
    assert f'data-reservation-id="{mine.id}"' in everything
    assert f'data-reservation-id="{other.id}"' in everything


def test_approving_and_rejecting_from_the_queue(db, client, auth, world):
    day = day_ahead()
    first = add_reservation(db, world.approval, world.users["researcher"], local(day, 10), local(day, 11),
                            ReservationState.PENDING)
    second = add_reservation(db, world.approval, world.users["researcher"], local(day, 12), local(day, 13),
                             ReservationState.PENDING)
    world.login(auth, "manager")
    token = auth.csrf_token("/manage/approvals")

    approved = client.post(f"/manage/reservations/{first.id}/approve", data={"csrf_token": token})
    rejected = client.post(f"/manage/reservations/{second.id}/reject", data={"csrf_token": token,
                                                                              "note": "样品未送达"})

    assert approved.status_code == rejected.status_code == 302
    db.expire_all()
    assert db.get(Reservation, first.id).state == ReservationState.CONFIRMED
    assert (db.get(Reservation, second.id).state, db.get(Reservation, second.id).decision_note) == (
        ReservationState.REJECTED, "样品未送达")
    assert count_marked(text_of(client.get("/manage/approvals")), "pending-row") == 0


def test_a_lab_manager_of_another_facility_cannot_approve(db, client, auth, world):
    pending = add_reservation(db, world.approval, world.users["researcher"], local(day_ahead(), 10),
                              local(day_ahead(), 11), ReservationState.PENDING)
    world.login(auth, "other_manager")

    response = client.post(f"/manage/reservations/{pending.id}/approve",
                           data={"csrf_token": auth.csrf_token("/manage/approvals")})

    assert response.status_code == 403
    db.expire_all()
    assert db.get(Reservation, pending.id).state == ReservationState.PENDING


def test_approving_a_confirmed_booking_says_why_not(db, client, auth, world):
    confirmed = add_reservation(db, world.approval, world.users["researcher"], local(day_ahead(), 10),
                              local(day_ahead(), 11), ReservationState.CONFIRMED)
    world.login(auth, "manager")

    response = client.post(f"/manage/reservations/{confirmed.id}/approve",
                           data={"csrf_token": auth.csrf_token("/manage/approvals")}, follow_redirects=True)

    assert len(flashes(text_of(response))) == 1
    assert 'alert-danger' in text_of(response)


# --- facility calendar -----------------------------------------------------------------------------------------------

def test_the_facility_calendar_shows_resources_side_by_side_with_their_bookings(db, client, auth, world):
    day = day_ahead()
    booked = add_reservation(db, world.instrument, world.users["researcher"], local(day, 10), local(day, 12))
    pending = add_reservation(db, world.approval, world.users["stranger"], local(day, 9), local(day, 10),
                              ReservationState.PENDING)
    world.login(auth, "manager")

    page = text_of(client.get(f"/manage/facilities/{world.facility_id}/calendar?date={day}"))

    assert count_marked(page, "calendar-row") == 4  # the facility's active resources
    assert f'href="/reservations/{booked.id}"' in page
    assert re.search(rf'class="ls-block ls-pending"[^>]*href="/reservations/{pending.id}"', page)
    assert world.users["researcher"].name_zh in page
    week = text_of(client.get(f"/manage/facilities/{world.facility_id}/calendar?date={day}&view=week"))
    assert f'href="/reservations/{booked.id}"' in week


def test_a_past_confirmed_booking_is_marked_completed_or_no_show_from_the_calendar(db, client, auth, world):
    yesterday = utcnow().astimezone(TZ).date() - timedelta(days=1)
    came = add_reservation(db, world.instrument, world.users["researcher"], local(yesterday, 10),
                           local(yesterday, 11))
    absent = add_reservation(db, world.instrument, world.users["stranger"], local(yesterday, 14),
                             local(yesterday, 15))
    world.login(auth, "manager")
    page = text_of(client.get(f"/manage/facilities/{world.facility_id}/calendar?date={yesterday}"))
    assert page.count('data-testid="complete"') == 2
    token = auth.csrf_token("/manage/approvals")

    client.post(f"/manage/reservations/{came.id}/complete", data={"csrf_token": token})
    client.post(f"/manage/reservations/{absent.id}/no-show", data={"csrf_token": token})

    db.expire_all()
    assert db.get(Reservation, came.id).state == ReservationState.COMPLETED
    assert db.get(Reservation, absent.id).state == ReservationState.NO_SHOW


# --- resource management ---------------------------------------------------------------------------------------------

def resource_form_data(auth, path: str, **overrides) -> dict:
    data = {"csrf_token": auth.csrf_token(path), "kind": "instrument", "name_zh": "原子力显微镜",
            "name_en": "Atomic force microscope", "description_zh": "表面形貌", "description_en": "Surface topography",
            "model": "Dimension Icon", "manufacturer": "Bruker", "original_value": "2980000.00",
            "category": "testing", "operation_mode": "both", "voucher_eligible": "y", "status": "active",
            "specs-0-key_zh": "扫描范围", "specs-0-key_en": "Scan range", "specs-0-value": "90 µm",
            "specs-1-key_zh": "", "specs-1-key_en": "", "specs-1-value": "",
            "granularity_min": "30", "min_duration_min": "60", "max_duration_min": "240", "lead_time_min": "120",
            "horizon_days": "60", "cancellation_deadline_h": "24", "max_active_per_user": "", "batch_days": "",
            "approval_required": "y", "hours_mon": "09:00-17:00", "hours_tue": "09:00-17:00"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_a_lab_manager_adds_a_resource_to_the_facility(db, client, auth, world):
    world.login(auth, "manager")
    path = f"/manage/facilities/{world.facility_id}/resources/new"
    assert count_marked(text_of(client.get(f"/manage/facilities/{world.facility_id}")), "add-instrument") == 1

    response = client.post(path, data=resource_form_data(auth, path))

    assert response.status_code == 302
    db.expire_all()
    resource = db.scalar(select(Resource).where(Resource.name_zh == "原子力显微镜"))
    assert resource.facility_id == world.facility_id
    assert resource.specs == [{"key_zh": "扫描范围", "key_en": "Scan range", "value": "90 µm"}]
    assert (resource.approval_required, resource.qualification_required, resource.lead_time_min) == (True, False, 120)
    assert resource.bookable_hours == {"mon": "09:00-17:00", "tue": "09:00-17:00"}
    assert response.headers["Location"] == f"/manage/resources/{resource.id}/edit"


def test_editing_a_resource_changes_its_rules_and_shows_on_its_page(db, client, auth, world):
    world.login(auth, "manager")
    path = f"/manage/resources/{world.instrument.id}/edit"
    page = text_of(client.get(path))
    assert 'value="场发射扫描电子显微镜"' in page
    assert 'value="分辨率"' in page

    response = client.post(path, data=resource_form_data(auth, path, name_zh="场发射扫描电镜（新）",
                                                          approval_required=None, qualification_required="y"))

    assert response.status_code == 302
    db.expire_all()
    resource = db.get(Resource, world.instrument.id)
    assert (resource.name_zh, resource.approval_required, resource.qualification_required) == (
        "场发射扫描电镜（新）", False, True)
    assert "场发射扫描电镜（新）" in text_of(client.get(f"/resources/{world.instrument.id}"))


@pytest.mark.parametrize(("overrides", "field", "message"), [
    ({"name_zh": ""}, "name_zh", "Enter a name."),
    ({"original_value": "-1"}, "original_value", "Enter an amount in CNY, 0 or more."),
    ({"hours_wed": "9-17"}, "hours_wed", "Write the hours as HH:MM-HH:MM, e.g. 08:30-17:30."),
    ({"granularity_min": "0"}, "granularity_min", "Enter a whole number from 1 to 1440."),
    ({"min_duration_min": "300"}, "max_duration_min", "The maximum length must not be below the minimum."),
    ({"granularity_min": "7"}, "granularity_min", "The grid must divide a day evenly (e.g. 15, 30, 60)."),
    ({"specs-1-key_zh": "功率"}, "specs-1-value", "Give a value."),
])
def test_invalid_resource_settings_are_shown_next_to_the_field_and_change_nothing(db, client, auth, world, overrides,
                                                                                 field, message):
    english = make_user(db, roles=("admin",), locale="en")
    auth.login(english.email, PASSWORD)
    path = f"/manage/resources/{world.instrument.id}/edit"
    before = row_counts(db, Resource, AuditEntry)

    response = client.post(path, data=resource_form_data(auth, path, **overrides))

    assert response.status_code == 422
    assert field_errors(text_of(response), field) == [message]
    db.expire_all()
    assert db.get(Resource, world.instrument.id).name_zh == "场发射扫描电子显微镜"
    assert row_counts(db, Resource, AuditEntry) == before


def test_a_lab_manager_of_another_facility_cannot_edit_the_resource(db, client, auth, world):
    world.login(auth, "other_manager")
    path = f"/manage/resources/{world.instrument.id}/edit"

    response = client.post(path, data=resource_form_data(auth, "/manage/approvals"))

    assert response.status_code == 403
    db.expire_all()
    assert db.get(Resource, world.instrument.id).name_zh == "场发射扫描电子显微镜"


def test_blackouts_are_added_refused_on_conflict_cancel_bookings_on_request_and_removed(db, client, auth, world):
    day = day_ahead()
    booked = add_reservation(db, world.instrument, world.users["researcher"], local(day, 10), local(day, 11))
    world.login(auth, "manager")
    path = f"/manage/resources/{world.instrument.id}/blackouts"
    data = {"kind": "maintenance", "starts_at": f"{day}T09:00", "ends_at": f"{day}T12:00", "reason": "更换灯丝"}

    refused = client.post(path, data={"csrf_token": auth.csrf_token(path), **data})

    assert refused.status_code == 409
    assert f"{day} 10:00–11:00" in block(text_of(refused), "blackout-clashes")
    db.expire_all()
    assert db.scalars(select(Blackout)).all() == []

    accepted = client.post(path, data={"csrf_token": auth.csrf_token(path), **data, "cancel_conflicting": "y"})

    assert accepted.status_code == 302
    db.expire_all()
    [blackout] = db.scalars(select(Blackout)).all()
    assert (blackout.kind, blackout.reason, blackout.starts_at) == (BlackoutKind.MAINTENANCE, "更换灯丝", local(day, 9))
    assert db.get(Reservation, booked.id).state == ReservationState.CANCELLED
    assert f"{day} 09:00–12:00" in block(text_of(client.get(path)), "blackout-table")

    client.post(f"/manage/blackouts/{blackout.id}/delete", data={"csrf_token": auth.csrf_token(path)})

    db.expire_all()
    assert db.scalars(select(Blackout)).all() == []


def test_an_invalid_blackout_is_refused_next_to_the_fields(db, client, auth, world):
    english = make_user(db, roles=("admin",), locale="en")
    auth.login(english.email, PASSWORD)
    path = f"/manage/resources/{world.instrument.id}/blackouts"

    response = client.post(path, data={"csrf_token": auth.csrf_token(path), "kind": "maintenance",
                                       "starts_at": f"{day_ahead()}T12:00", "ends_at": f"{day_ahead()}T09:00"})

    assert response.status_code == 422
    assert field_errors(text_of(response), "ends_at") == ["The end must be after the start."]
    assert db.scalars(select(Blackout)).all() == []


def test_qualifications_are_granted_by_e_mail_with_an_expiry_and_revoked(db, client, auth, world):
    world.login(auth, "manager")
    path = f"/manage/resources/{world.instrument.id}/qualifications"
    researcher = world.users["researcher"]
    until = day_ahead(30)

    unknown = client.post(path, data={"csrf_token": auth.csrf_token(path), "email": "nobody@example.test"})
    granted = client.post(path, data={"csrf_token": auth.csrf_token(path), "email": researcher.email.upper(),
                                      "expires_at": until.isoformat()})

    assert unknown.status_code == 422
    assert field_errors(text_of(unknown), "email") == [zh("No user has this e-mail address.")]
    assert granted.status_code == 302
    db.expire_all()
    [qualification] = db.scalars(select(Qualification)).all()
    assert qualification.user_id == researcher.id
    assert qualification.expires_at == local(until + timedelta(days=1), 0)
    page = text_of(client.get(path))
    assert str(until) in block(page, "qualification-table")

    client.post(f"/manage/qualifications/{qualification.id}/revoke", data={"csrf_token": auth.csrf_token(path)})

    db.expire_all()
    assert db.get(Qualification, qualification.id).revoked_at is not None


# --- calendar feeds --------------------------------------------------------------------------------------------------

def test_my_calendar_feed_url_is_shown_once_and_regenerating_replaces_it(db, client, auth, world):
    add_reservation(db, world.instrument, world.users["researcher"], local(day_ahead(), 10), local(day_ahead(), 11))
    world.login(auth, "researcher")

    first = re.search(r'data-testid="feed-url">([^<]+)<', text_of(client.post(
        "/reservations/feed", data={"csrf_token": auth.csrf_token("/reservations")}))).group(1)
    second_page = text_of(client.post("/reservations/feed", data={"csrf_token": auth.csrf_token("/reservations")},
                                      headers={"HX-Request": "true"}))
    second = re.search(r'data-testid="feed-url">([^<]+)<', second_page).group(1)

    assert "<html" not in second_page  # the htmx partial only
    assert first != second
    assert client.get(first.replace("http://localhost", "")).status_code == 404
    feed = client.get(second.replace("http://localhost", ""))
    assert feed.status_code == 200
    assert b"BEGIN:VEVENT" in feed.data
    assert count_marked(text_of(client.get("/reservations")), "feed-url") == 0


def test_a_resource_feed_is_for_its_lab_managers(client, auth, world):
    world.login(auth, "other_manager")
    path = f"/manage/resources/{world.instrument.id}/feed"
    assert client.post(path, data={"csrf_token": auth.csrf_token("/manage/approvals")}).status_code == 403
    auth.logout()
    world.login(auth, "manager")

    response = client.post(path, data={"csrf_token": auth.csrf_token("/manage/approvals")},
                           headers={"HX-Request": "true"})

    url = re.search(r'data-testid="feed-url">([^<]+)<', text_of(response)).group(1)
    assert client.get(url.replace("http://localhost", "")).mimetype == "text/calendar"

