"""The catalog (search, time-first search, editing resources) and iCal feeds at secret URLs.

NOW is Tuesday 1 December 2026, 08:00 in Shanghai; facilities are open on weekdays 08:00-18:00.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from decimal import Decimal

import pytest
from icalendar import Calendar
from sqlalchemy import select

from booking.catalog import ABBREVIATIONS, CatalogQuery, create_resource, search, update_resource
from booking.feeds import feed_for_secret, regenerate_feed, render_feed
from booking.models import CalendarFeed, Resource, ResourceKind, ResourceStatus
from core.audit import AuditEntry
from core.errors import Forbidden, InvalidInput, NotFound
from tests.booking.helpers import NOW, audit_actions, last_audit_id, sh
from tests.factories import make_blackout, make_facility, make_reservation, make_resource, make_user, row_counts

VALID = {"kind": "instrument", "name_zh": "拉曼光谱仪", "name_en": "Raman spectrometer", "original_value": "850000.00",
         "category": "testing", "operation_mode": "both"}


def last_audit(db) -> AuditEntry:
    return db.scalar(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1))


def names(result) -> list[str]:
    return [r.name_en for r in result["items"]]


# --- search ------------------------------------------------------------------------------------------------

@pytest.fixture
def catalog(db, manager, facility):
    """Resources created through the service (which keeps their search text), in one facility."""
    def add(**values):
        return create_resource(db, manager, facility.id, {**VALID, **values})

    return {
        "sem": add(name_zh="扫描电子显微镜", name_en="Scanning electron microscope", model="Sigma 300",
                   manufacturer="ZEISS", original_value="3200000", voucher_eligible=True,
                   specs=[{"key_zh": "分辨率", "key_en": "Resolution", "value": "0.8 nm @ 15 kV"}]),
        "nmr": add(name_zh="核磁共振波谱仪", name_en="NMR spectrometer", model="AVANCE NEO 600",
                   manufacturer="Bruker", original_value="5000000", operation_mode="technician",
                   voucher_eligible=False),
        "line": add(kind="pilot_line", name_zh="锂电池中试线", name_en="Li-ion battery pilot line",
                    manufacturer="先导智能", original_value="80000000", category="pilot_scale",
                    operation_mode="self_service", voucher_eligible=True),
        "purity": add(name_zh="纯度分析仪", name_en="Purity 100% analyser", model="AB_12", original_value="1000"),
        "decoy": add(name_zh="纯度分析仪二号", name_en="Purity 1000 analyser", model="ABX12", original_value="2000"),
        "retired": add(name_zh="旧扫描电子显微镜", name_en="Old SEM", status="retired", original_value="10"),
    }


def found(db, facility, **query) -> list[str]:
    return sorted(names(search(db, CatalogQuery(facility_id=facility.id, per_page=100, **query))))


@pytest.mark.parametrize(("q", "expected"), [
    ("电镜", ["Scanning electron microscope"]),                   # the short name of 扫描电子显微镜
    ("扫描电镜", ["Scanning electron microscope"]),
    ("SEM", ["Scanning electron microscope"]),                    # an abbreviation, in any case
    ("显微镜", ["Scanning electron microscope"]),
    ("electron", ["Scanning electron microscope"]),
    ("ELECTRON microscope", ["Scanning electron microscope"]),    # every word must match
    ("sigma", ["Scanning electron microscope"]),                  # model
    ("zeiss", ["Scanning electron microscope"]),                  # manufacturer
    ("0.8 nm", ["Scanning electron microscope"]),                 # a specification's value
    ("分辨率", ["Scanning electron microscope"]),                   # a specification's name
    ("核磁", ["NMR spectrometer"]),
    ("bruker", ["NMR spectrometer"]),
    ("先导", ["Li-ion battery pilot line"]),
    ("spectrometer", ["NMR spectrometer"]),
    ("zeiss bruker", []),
    ("microscopy", []),
])
def test_free_text_search(db, facility, catalog, q, expected):
    assert found(db, facility, q=q) == expected


def test_every_abbreviation_is_indexed(db, manager, facility):
    for term, short_names in ABBREVIATIONS.items():
        resource = create_resource(db, manager, facility.id, {**VALID, "name_zh": f"某型{term}仪"})
        for short in short_names:
            assert resource.id in [r.id for r in search(db, CatalogQuery(q=short, facility_id=facility.id,
                                                                          per_page=100))["items"]], (term, short)


@pytest.mark.parametrize(("q", "expected"), [
    ("100%", ["Purity 100% analyser"]),    # % is a literal percent sign, not "anything"
    ("ab_12", ["Purity 100% analyser"]),   # _ is a literal underscore, not "any one character"
    ("%", ["Purity 100% analyser"]),
    ("_", ["Purity 100% analyser"]),
    ("\\", []),
    ("purity", ["Purity 1000 analyser", "Purity 100% analyser"]),
])
def test_like_wildcards_are_literal(db, facility, catalog, q, expected):
    assert found(db, facility, q=q) == sorted(expected)


@pytest.mark.parametrize(("query", "expected"), [
    ({"category": "pilot_scale"}, ["Li-ion battery pilot line"]),
    ({"kind": "pilot_line"}, ["Li-ion battery pilot line"]),
    ({"kind": "instrument", "q": "纯度"}, ["Purity 1000 analyser", "Purity 100% analyser"]),
    ({"operation_mode": "technician"}, ["NMR spectrometer", "Purity 1000 analyser", "Purity 100% analyser",
                                        "Scanning electron microscope"]),
    ({"operation_mode": "self_service"}, ["Li-ion battery pilot line", "Purity 1000 analyser",
                                          "Purity 100% analyser", "Scanning electron microscope"]),
    ({"operation_mode": "both"}, ["Purity 1000 analyser", "Purity 100% analyser", "Scanning electron microscope"]),
    ({"voucher_eligible": False}, ["NMR spectrometer"]),
    ({"voucher_eligible": True, "category": "testing", "q": "电镜"}, ["Scanning electron microscope"]),
    ({"include_retired": True, "q": "电镜"}, ["Old SEM", "Scanning electron microscope"]),
])
def test_filters(db, facility, catalog, query, expected):
    assert found(db, facility, **query) == sorted(expected)


def test_city_and_facility_filters(db, manager):
    def place(city):
        facility = make_facility(db, managers=(manager,), city=city)
        create_resource(db, manager, facility.id, {**VALID, "name_en": f"Raman in {city}", "name_zh": "拉曼光谱仪城"})
        return facility

    mianyang, deyang = place("510700"), place("510600")
    assert names(search(db, CatalogQuery(q="拉曼光谱仪城", city="510700"))) == ["Raman in 510700"]
    assert names(search(db, CatalogQuery(q="拉曼光谱仪城", facility_id=deyang.id))) == ["Raman in 510600"]
    assert search(db, CatalogQuery(q="拉曼光谱仪城", city="510700", facility_id=deyang.id))["total"] == 0
    assert mianyang.id != deyang.id


@pytest.mark.parametrize(("sort", "expected"), [
    ("value_desc", ["line", "nmr", "sem", "decoy", "purity"]),
    ("value_asc", ["purity", "decoy", "sem", "nmr", "line"]),
])
def test_sort(db, facility, catalog, sort, expected):
    got = search(db, CatalogQuery(facility_id=facility.id, sort=sort))["items"]
    assert [r.id for r in got] == [catalog[key].id for key in expected]


def test_sort_by_name_and_newest(db, manager, facility):
    made = [create_resource(db, manager, facility.id, {**VALID, "name_zh": name})
            for name in ("B 仪器", "A 仪器", "C 仪器")]
    for age, resource in enumerate(made):
        resource.created_at = NOW - timedelta(days=age)
    assert [r.name_zh for r in search(db, CatalogQuery(facility_id=facility.id))["items"]] == [
        "A 仪器", "B 仪器", "C 仪器"]
    assert [r.name_zh for r in search(db, CatalogQuery(facility_id=facility.id, sort="newest"))["items"]] == [
        "B 仪器", "A 仪器", "C 仪器"]


def test_pagination(db, facility, catalog):
    pages = [search(db, CatalogQuery(facility_id=facility.id, sort="value_asc", page=page, per_page=2))
             for page in (1, 2, 3, 4)]
    assert [p["total"] for p in pages] == [5] * 4
    assert [len(p["items"]) for p in pages] == [2, 2, 1, 0]
    assert [r.id for p in pages for r in p["items"]] == [catalog[k].id for k in ("purity", "decoy", "sem", "nmr",
                                                                                 "line")]
    assert (pages[1]["page"], pages[1]["per_page"]) == (2, 2)


# --- time-first search -------------------------------------------------------------------------------------

@pytest.fixture
def fleet(db, manager, facility):
    def instrument(name, **rules):
        return make_resource(db, facility=facility, name_en=name, **rules)

    return {
        "free": instrument("free"),
        "booked": instrument("booked"),
        "pending": instrument("pending"),
        "cancelled": instrument("cancelled"),
        "back_to_back": instrument("back_to_back"),
        "blackout": instrument("blackout"),
        "afternoons": instrument("afternoons", bookable_hours=dict.fromkeys(("mon", "tue", "wed"), "13:00-18:00")),
        "long_only": instrument("long_only", min_duration_min=180),
        "hourly": instrument("hourly", granularity_min=60),
        "line": make_resource(db, facility=facility, name_en="line", kind=ResourceKind.PILOT_LINE,
                              granularity_min=1440, min_duration_min=1440, max_duration_min=10 * 1440, lead_time_min=0),
        "retired": instrument("retired", status=ResourceStatus.RETIRED),
    }


def bookable(db, facility, start, end) -> list[str]:
    result = search(db, CatalogQuery(facility_id=facility.id, free_from=start, free_to=end, per_page=100), now=NOW)
    assert result["total"] == len(result["items"])
    return sorted(names(result))


def test_time_first_search_keeps_resources_bookable_in_the_window(db, facility, fleet):
    start, end = sh(2, 10, 30), sh(2, 12)
    make_reservation(db, resource=fleet["booked"], starts_at=sh(2, 11), ends_at=sh(2, 13))
    make_reservation(db, resource=fleet["pending"], starts_at=sh(2, 9), ends_at=sh(2, 11), state="pending")
    make_reservation(db, resource=fleet["cancelled"], starts_at=start, ends_at=end, state="cancelled")
    make_reservation(db, resource=fleet["back_to_back"], starts_at=sh(2, 8), ends_at=start)
    make_reservation(db, resource=fleet["back_to_back"], starts_at=end, ends_at=sh(2, 14))
    make_blackout(db, resource=fleet["blackout"], starts_at=sh(2, 11, 30), ends_at=sh(2, 18))
    assert bookable(db, facility, start, end) == ["back_to_back", "cancelled", "free"]


def test_time_first_search_for_whole_days_finds_the_pilot_line(db, facility, fleet):
    assert bookable(db, facility, sh(7, 0), sh(9, 0)) == ["line"]
    make_reservation(db, resource=fleet["line"], starts_at=sh(8, 0), ends_at=sh(10, 0))
    assert bookable(db, facility, sh(7, 0), sh(9, 0)) == []


def test_time_first_search_pages_after_filtering(db, facility, fleet):
    result = search(db, CatalogQuery(facility_id=facility.id, free_from=sh(2, 14), free_to=sh(2, 15), per_page=3,
                                     page=2), now=NOW)
    everything = bookable(db, facility, sh(2, 14), sh(2, 15))
    assert result["total"] == len(everything) == 8
    assert len(result["items"]) == 3


# --- creating and editing resources ------------------------------------------------------------------------

def resources_and_audit(db) -> dict[str, int]:
    return row_counts(db, Resource, AuditEntry)


def test_create_resource(db, manager, facility):
    since = last_audit_id(db)
    resource = create_resource(db, manager, facility.id, {
        **VALID, "model": "LabRAM HR Evolution", "manufacturer": "HORIBA", "bookable_hours": {"mon": " 09:00-12:00 "},
        "specs": [{"key_zh": "波长", "key_en": "Wavelength", "value": "532 nm"}], "max_active_per_user": 3})
    assert (resource.facility_id, resource.original_value, resource.bookable_hours, resource.max_active_per_user) == (
        facility.id, Decimal("850000.00"), {"mon": "09:00-12:00"}, 3)
    assert resource.search_text == (
        "拉曼光谱仪 raman spectrometer labram hr evolution horiba 波长 wavelength 532 nm raman")  # + the alias
    assert audit_actions(db, since) == ["resource.created"]
    assert last_audit(db).data == {"facility_id": facility.id, "name": "拉曼光谱仪"}


def test_pilot_lines_get_day_rules_by_default(db, manager, facility):
    line = create_resource(db, manager, facility.id, {**VALID, "kind": "pilot_line"})
    assert (line.granularity_min, line.min_duration_min, line.max_duration_min) == (1440, 1440, 43200)
    own = create_resource(db, manager, facility.id, {**VALID, "kind": "pilot_line", "granularity_min": 60})
    assert own.granularity_min == 60


def test_required_fields(db, manager, facility):
    before = resources_and_audit(db)
    with pytest.raises(InvalidInput) as exc:
        create_resource(db, manager, facility.id, {"name_zh": "x"})
    assert sorted(exc.value.fields) == ["category", "kind", "name_en", "operation_mode", "original_value"]
    assert resources_and_audit(db) == before


INVALID = [
    ({"colour": "red"}, "colour"),
    ({"name_zh": ""}, "name_zh"), ({"name_zh": "   "}, "name_zh"), ({"name_zh": "名" * 201}, "name_zh"),
    ({"name_en": None}, "name_en"),
    ({"original_value": "-1"}, "original_value"), ({"original_value": "abc"}, "original_value"),
    ({"original_value": "1e12"}, "original_value"), ({"original_value": "NaN"}, "original_value"),
    ({"original_value": "Infinity"}, "original_value"),
    ({"kind": "robot"}, "kind"), ({"category": "cooking"}, "category"), ({"operation_mode": "auto"}, "operation_mode"),
    ({"status": "broken"}, "status"),
    ({"granularity_min": 0}, "granularity_min"), ({"granularity_min": 1441}, "granularity_min"),
    ({"granularity_min": "30"}, "granularity_min"), ({"granularity_min": 7}, "granularity_min"),
    ({"min_duration_min": 0}, "min_duration_min"), ({"max_duration_min": 60 * 24 * 366 + 1}, "max_duration_min"),
    ({"min_duration_min": 600, "max_duration_min": 300}, "max_duration_min"),
    ({"lead_time_min": -1}, "lead_time_min"), ({"horizon_days": 0}, "horizon_days"),
    ({"horizon_days": 3661}, "horizon_days"), ({"cancellation_deadline_h": -1}, "cancellation_deadline_h"),
    ({"max_active_per_user": 0}, "max_active_per_user"), ({"max_active_per_user": 1001}, "max_active_per_user"),
    ({"max_active_per_user": "2"}, "max_active_per_user"), ({"batch_days": 0}, "batch_days"),
    ({"bookable_hours": {"mon": "9-17"}}, "bookable_hours"), ({"bookable_hours": {"monday": "09:00-17:00"}},
                                                              "bookable_hours"),
    ({"bookable_hours": "weekdays"}, "bookable_hours"),
    ({"specs": "fast"}, "specs"), ({"specs": [{"key_en": "Speed"}]}, "specs"),
    ({"specs": [{"key_en": "Speed", "value": " "}]}, "specs"),
    ({"specs": [{"key_en": "Speed", "value": "1", "unit": "m/s"}]}, "specs"),
]


@pytest.mark.parametrize(("values", "field"), INVALID, ids=lambda v: next(iter(v)) if isinstance(v, dict) else v)
def test_create_resource_field_errors(db, manager, facility, values, field):
    before = resources_and_audit(db)
    with pytest.raises(InvalidInput) as exc:
        create_resource(db, manager, facility.id, {**VALID, **values})
    assert list(exc.value.fields) == [field]
    assert resources_and_audit(db) == before


@pytest.mark.parametrize(("values", "field"), [row for row in INVALID if "colour" not in row[0]],
                         ids=lambda v: next(iter(v)) if isinstance(v, dict) else v)
def test_update_resource_field_errors_change_nothing(db, manager, resource, values, field):
    before = resources_and_audit(db)
    rules = (resource.name_zh, resource.granularity_min, resource.min_duration_min, resource.max_duration_min)
    with pytest.raises(InvalidInput) as exc:
        update_resource(db, manager, resource.id, values)
    assert list(exc.value.fields) == [field]
    db.flush()  # whatever the service left pending would be written by the caller's next flush or commit
    db.expire_all()
    stored = db.get(Resource, resource.id)
    assert (stored.name_zh, stored.granularity_min, stored.min_duration_min, stored.max_duration_min) == rules
    assert resources_and_audit(db) == before


def test_update_resource(db, manager, resource):
    old_name, since = resource.name_en, last_audit_id(db)
    update_resource(db, manager, resource.id, {"name_en": "Field-emission SEM", "name_zh": resource.name_zh,
                                               "max_duration_min": 240, "original_value": "1500000.00"})
    assert (resource.name_en, resource.max_duration_min) == ("Field-emission SEM", 240)
    assert "field-emission sem" in resource.search_text
    assert audit_actions(db, since) == ["resource.updated"]
    # only what changed: the same name_zh and the same value (given as a string) are not changes
    assert last_audit(db).data == {"before": {"name_en": old_name, "max_duration_min": 480},
                                   "after": {"name_en": "Field-emission SEM", "max_duration_min": 240}}
    assert search(db, CatalogQuery(q="field-emission", facility_id=resource.facility_id))["total"] == 1
    update_resource(db, manager, resource.id, {"name_en": "Field-emission SEM"})  # no change: no audit entry
    assert audit_actions(db, since) == ["resource.updated"]


@pytest.mark.parametrize(("actor", "allowed"), [
    ("manager", True), ("admin", True), ("other_manager", False), ("researcher", False)])
def test_who_may_create_and_update_resources(db, request, facility, resource, actor, allowed):
    user = request.getfixturevalue(actor)
    before = resources_and_audit(db)
    if allowed:
        assert create_resource(db, user, facility.id, VALID).facility_id == facility.id
        assert update_resource(db, user, resource.id, {"name_en": "Renamed"}).name_en == "Renamed"
        return
    with pytest.raises(Forbidden):
        create_resource(db, user, facility.id, VALID)
    with pytest.raises(Forbidden):
        update_resource(db, user, resource.id, {"name_en": "Renamed"})
    assert resources_and_audit(db) == before


def test_unknown_facility_or_resource(db, admin):
    with pytest.raises(NotFound):
        create_resource(db, admin, 10**9, VALID)
    with pytest.raises(NotFound):
        update_resource(db, admin, 10**9, {"name_en": "x"})


# --- calendar feeds ----------------------------------------------------------------------------------------

def events(ics: bytes) -> dict[str, dict]:
    calendar = Calendar.from_ical(ics)
    return {str(e["uid"]): {"summary": str(e["summary"]), "start": e.decoded("dtstart"), "end": e.decoded("dtend"),
                            "status": str(e["status"]), "description": str(e.get("description", ""))}
            for e in calendar.walk("VEVENT")}


def test_regenerate_returns_a_secret_and_the_old_one_stops_working(db, researcher):
    since = last_audit_id(db)
    first = regenerate_feed(db, researcher)
    feed = feed_for_secret(db, first)
    assert feed.user_id == researcher.id
    assert feed.resource_id is None
    assert len(first) >= 32
    assert feed.digest == hashlib.sha256(first.encode()).hexdigest() != first  # only a digest is stored
    second = regenerate_feed(db, researcher)
    assert second != first
    assert feed_for_secret(db, second).id == feed.id
    with pytest.raises(NotFound):
        feed_for_secret(db, first)
    assert row_counts(db, CalendarFeed)["calendar_feed"] == 1
    assert audit_actions(db, since) == ["calendar_feed.regenerated"] * 2


@pytest.mark.parametrize("secret", ["", "not-a-secret", None])
def test_unknown_secrets(db, secret):
    with pytest.raises(NotFound):
        feed_for_secret(db, secret)


def test_user_feed_lists_the_users_live_reservations(db, facility, resource):
    user = make_user(db, locale="en", name_en="Alice")
    other_resource = make_resource(db, facility=facility, name_en="XRD", name_zh="X射线衍射仪")
    confirmed = make_reservation(db, resource=resource, user=user, starts_at=sh(2, 9), ends_at=sh(2, 11),
                                 purpose="cathode imaging")
    pending = make_reservation(db, resource=other_resource, user=user, starts_at=sh(3, 9), ends_at=sh(3, 10),
                               state="pending")
    completed = make_reservation(db, resource=resource, user=user, starts_at=sh(20, 9, month=11),
                                 ends_at=sh(20, 10, month=11), state="completed")
    hidden = [
        make_reservation(db, resource=resource, user=user, starts_at=sh(4, 9), ends_at=sh(4, 10), state="cancelled"),
        make_reservation(db, resource=resource, user=user, starts_at=sh(4, 10), ends_at=sh(4, 11), state="rejected"),
        make_reservation(db, resource=resource, starts_at=sh(4, 12), ends_at=sh(4, 13)),  # someone else's
        make_reservation(db, resource=resource, user=user, starts_at=sh(1, 9, month=10), ends_at=sh(1, 10, month=10)),
    ]
    feed = feed_for_secret(db, regenerate_feed(db, user))
    ics = render_feed(db, feed, now=NOW)
    assert Calendar.from_ical(ics)["x-wr-calname"] == "LabShare · Alice"
    got = events(ics)
    assert set(got) == {f"reservation-{r.id}@labshare" for r in (confirmed, pending, completed)}
    assert not {f"reservation-{r.id}@labshare" for r in hidden} & set(got)
    mine = got[f"reservation-{confirmed.id}@labshare"]
    assert mine == {"summary": resource.name_en, "start": sh(2, 9), "end": sh(2, 11), "status": "CONFIRMED",
                    "description": "cathode imaging"}
    assert mine["start"].utcoffset() == timedelta(0)
    assert got[f"reservation-{pending.id}@labshare"]["status"] == "TENTATIVE"
    assert got[f"reservation-{pending.id}@labshare"]["summary"] == "XRD"


def test_resource_feed_lists_reservations_and_blackouts(db, manager, resource, facility):
    booker = make_user(db, name_zh="李四", name_en="Li Si")
    reservation = make_reservation(db, resource=resource, user=booker, starts_at=sh(2, 9), ends_at=sh(2, 11))
    blackout = make_blackout(db, resource=resource, starts_at=sh(5, 0), ends_at=sh(7, 0), kind="holiday",
                             reason="元旦")
    elsewhere = make_resource(db, facility=facility)
    make_reservation(db, resource=elsewhere, starts_at=sh(2, 9), ends_at=sh(2, 11))
    make_blackout(db, resource=elsewhere, starts_at=sh(3, 0), ends_at=sh(4, 0))
    feed = feed_for_secret(db, regenerate_feed(db, manager, resource_id=resource.id))
    assert (feed.resource_id, feed.user_id) == (resource.id, None)
    got = events(render_feed(db, feed, locale="zh_CN", now=NOW))
    assert set(got) == {f"reservation-{reservation.id}@labshare", f"blackout-{blackout.id}@labshare"}
    assert got[f"reservation-{reservation.id}@labshare"]["summary"] == "李四"
    assert got[f"blackout-{blackout.id}@labshare"] == {
        "summary": "⛔ holiday", "start": sh(5, 0), "end": sh(7, 0), "status": "CONFIRMED", "description": "元旦"}
    assert events(render_feed(db, feed, locale="en", now=NOW))[f"reservation-{reservation.id}@labshare"][
        "summary"] == "Li Si"


@pytest.mark.parametrize(("actor", "allowed"), [
    ("manager", True), ("admin", True), ("other_manager", False), ("researcher", False)])
def test_who_may_get_a_resource_feed(db, request, resource, actor, allowed):
    user = request.getfixturevalue(actor)
    if allowed:
        assert feed_for_secret(db, regenerate_feed(db, user, resource_id=resource.id)).resource_id == resource.id
        return
    before = row_counts(db, CalendarFeed, AuditEntry)
    with pytest.raises(Forbidden):
        regenerate_feed(db, user, resource_id=resource.id)
    assert row_counts(db, CalendarFeed, AuditEntry) == before


def test_resource_feed_of_unknown_resource(db, admin):
    with pytest.raises(NotFound):
        regenerate_feed(db, admin, resource_id=10**9)


def test_a_user_and_a_resource_feed_are_separate(db, manager, resource):
    own = regenerate_feed(db, manager)
    of_resource = regenerate_feed(db, manager, resource_id=resource.id)
    assert feed_for_secret(db, own).user_id == manager.id
    assert feed_for_secret(db, of_resource).resource_id == resource.id
    regenerate_feed(db, manager, resource_id=resource.id)  # a new resource secret leaves the user's alone
    assert feed_for_secret(db, own).user_id == manager.id
    assert row_counts(db, CalendarFeed)["calendar_feed"] == 2
