"""The public catalog: anyone may search, open a resource page (rules, prices, voucher eligibility, photos) and its
calendar, which shows free/busy only — nobody but the facility's managers learns who booked or why. Booking
itself still asks visitors to sign in or register their organisation."""

from __future__ import annotations

import html
import re
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from booking.catalog import search_text_of
from booking.models import Reservation, ReservationState, ResourcePhoto
from core.i18n import gettext_for
from core.timeutil import utcnow
from tests.billing.factories import make_rate_card
from tests.factories import PASSWORD, make_facility, make_organisation, make_resource, make_user, row_counts

TZ = ZoneInfo("Asia/Shanghai")
ALL_WEEK = dict.fromkeys(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "08:00-20:00")
zh = gettext_for("zh_CN")
SECRET_PURPOSE = "机密课题甲乙丙"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def day_ahead(days: int = 8) -> date:
    return utcnow().astimezone(TZ).date() + timedelta(days=days)


def local(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=TZ)


@pytest.fixture
def world(db):
    """A microscope with a rate card and a confirmed booking by someone else, whose name, organisation and
    purpose must not show to anyone but the facility's managers."""
    manager = make_user(db, roles=("lab_manager",))
    facility = make_facility(db, managers=(manager,), opening_hours=ALL_WEEK)
    booker_org = make_organisation(db, name_zh="保密合作企业")
    booker = make_user(db, organisation=booker_org, name_zh="李四保密", name_en="Li Si Secret")
    resource = make_resource(db, facility=facility, name_zh="场发射扫描电镜", name_en="FE-SEM",
                             description_zh="高分辨形貌观察", description_en="High-resolution imaging")
    resource.search_text = search_text_of(resource)  # as booking.catalog keeps it
    make_rate_card(db, resource, price_internal=Decimal("120.00"), price_academic=Decimal("240.00"),
                   price_enterprise=Decimal("480.00"), setup_fee=Decimal("50.00"))
    day = day_ahead()
    reservation = Reservation(resource_id=resource.id, user_id=booker.id, billed_org_id=booker_org.id,
                              starts_at=local(day, 10), ends_at=local(day, 12), state=ReservationState.CONFIRMED,
                              purpose=SECRET_PURPOSE)
    db.add(reservation)
    db.flush()
    return {"manager": manager, "booker": booker, "resource": resource, "day": day, "reservation": reservation}


def week_of(world) -> str:
    return f"view=week&start={world['day'].isoformat()}"


def assert_free_busy_only(page: str) -> None:
    assert 'data-testid="block-busy"' in page
    for secret in ("李四保密", "Li Si Secret", "保密合作企业", SECRET_PURPOSE):
        assert secret not in page


def test_anonymous_visitors_search_the_catalog(client, world):
    response = client.get("/resources?q=电镜")

    page = text_of(response)
    assert response.status_code == 200
    assert "场发射扫描电镜" in page
    assert f'href="/resources/{world["resource"].id}' in page
    assert 'data-testid="public-catalog-link"' in page
    assert 'data-testid="nav-register"' in page


def test_anonymous_visitors_search_by_time_first(client, world):
    free = client.get(f"/resources?q=电镜&date={world['day']}&time_from=14:00&time_to=15:00")
    taken = client.get(f"/resources?q=电镜&date={world['day']}&time_from=10:00&time_to=11:00")

    assert "场发射扫描电镜" in text_of(free)
    assert "场发射扫描电镜" not in text_of(taken)


def test_the_home_page_sends_visitors_to_the_catalog(client):
    response = client.get("/")

    assert (response.status_code, response.headers["Location"]) == (302, "/resources")


def test_anonymous_resource_page_shows_rules_prices_and_sign_in_links_but_no_booking_form(client, world):
    resource = world["resource"]

    response = client.get(f"/resources/{resource.id}?{week_of(world)}")

    page = text_of(response)
    assert response.status_code == 200
    assert "高分辨形貌观察" in page  # description and specs
    assert "分辨率" in page
    assert 'data-testid="rules"' in page
    prices = page[page.index('data-testid="prices"'):page.index('data-testid="voucher-eligibility"')]
    assert re.findall(r"¥\d+\.\d\d", prices)[:3] == ["¥480.00", "¥240.00", "¥120.00"]
    assert zh("Set-up fee %(amount)s per booking.") % {"amount": "¥50.00"} in prices
    assert zh("Innovation vouchers can pay part of the fee for eligible tech SMEs.") in page
    assert f'href="/login?next=/resources/{resource.id}"' in page
    assert 'href="/register"' in page
    assert 'data-testid="booking-form"' not in page
    assert 'data-testid="sample-form"' not in page
    assert_free_busy_only(page)


def test_a_resource_without_a_rate_card_says_prices_are_on_request(db, client):
    resource = make_resource(db, voucher_eligible=False)

    page = text_of(client.get(f"/resources/{resource.id}"))

    assert zh("No price list is published yet: ask the facility.") in page
    assert zh("Innovation vouchers cannot be used for this resource.") in page


def test_anonymous_calendar_partials_show_free_busy_only(client, world):
    resource = world["resource"]

    week = client.get(f"/resources/{resource.id}/calendar?{week_of(world)}")
    month = client.get(f"/resources/{resource.id}/calendar?view=month&start={world['day']}")

    assert week.status_code == month.status_code == 200
    assert_free_busy_only(text_of(week))
    assert "李四保密" not in text_of(month)
    assert SECRET_PURPOSE not in text_of(month)
    assert zh("Your booking") not in text_of(week)


def test_other_signed_in_users_see_busy_blocks_and_managers_see_names_as_before(client, auth, db, world):
    other = make_user(db)
    auth.login(other.email, PASSWORD)
    assert_free_busy_only(text_of(client.get(f"/resources/{world['resource'].id}?{week_of(world)}")))
    auth.logout()

    auth.login(world["manager"].email, PASSWORD)
    page = text_of(client.get(f"/resources/{world['resource'].id}?{week_of(world)}"))
    assert "李四保密" in page
    assert SECRET_PURPOSE not in page


def test_signed_in_users_see_their_price_marked(client, auth, db, world):
    enterprise_user = make_user(db)  # the factory's organisations are enterprises
    auth.login(enterprise_user.email, PASSWORD)

    page = text_of(client.get(f"/resources/{world['resource'].id}"))

    marked = page[page.index('data-testid="price-enterprise"'):]
    assert marked.index(zh("Your price")) < marked.index("</li>")
    assert 'data-testid="booking-form"' in page


@pytest.mark.parametrize("action", ["book", "preview", "waitlist", "sample-requests"])
def test_anonymous_booking_posts_go_to_sign_in_and_write_nothing(db, client, auth, world, action):
    resource = world["resource"]
    token = auth.csrf_token(f"/resources/{resource.id}")
    before = row_counts(db, Reservation)

    response = client.post(f"/resources/{resource.id}/{action}", data={
        "csrf_token": token, "date": world["day"].isoformat(), "time_from": "14:00", "time_to": "15:00",
        "purpose": "test"})

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")
    assert row_counts(db, Reservation) == before


def test_the_resource_api_still_needs_a_token(client, world):
    response = client.get("/api/v1/resources")

    assert response.status_code == 401


@pytest.fixture
def photo_client(settings, engine, connection, tmp_path):
    """The app with its data directory in tmp_path, where the photo files live."""
    from dataclasses import replace

    from tests.conftest import _savepoint_session
    from web import create_app

    app = create_app(replace(settings, data_dir=str(tmp_path)), engine=engine, testing=True)
    app.extensions["labshare.sessions"] = lambda: _savepoint_session(connection)
    return app.test_client()


def test_photos_are_public_for_their_own_resource_only(db, photo_client, world, tmp_path):
    resource = world["resource"]
    photo = ResourcePhoto(resource_id=resource.id, filename=f"public-test-{resource.id}.png",
                          content_type="image/png", size_bytes=len(PNG), caption="外观")
    db.add(photo)
    db.flush()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / photo.filename).write_bytes(PNG)

    page = text_of(photo_client.get(f"/resources/{resource.id}"))
    with photo_client.get(f"/resources/{resource.id}/photos/{photo.id}") as shown:
        assert (shown.status_code, shown.data) == (200, PNG)
    elsewhere = photo_client.get(f"/resources/{resource.id + 1}/photos/{photo.id}")

    assert f'src="/resources/{resource.id}/photos/{photo.id}"' in page
    assert elsewhere.status_code == 404
