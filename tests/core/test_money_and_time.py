"""Money is exact CNY rounded half-up at the fen; times are aware and stored in UTC, on both databases."""

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import StatementError

from booking.models import Resource
from core.accounts.models import ApiToken, Organisation
from core.money import CNY_STEP, format_cny, round_half_up, to_cny
from core.timeutil import as_utc, to_local, utcnow, zone
from tests.factories import make_facility, make_organisation, make_resource, make_token

CST = timezone(timedelta(hours=8))


# --- money, pure ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("0.005", "0.01"),
    ("2.675", "2.68"),  # 2.67499999… as a float; exact as a Decimal string
    ("-0.005", "-0.01"),
    ("-2.675", "-2.68"),
    ("0.004999", "0.00"),
    ("0.015", "0.02"),
    ("0.025", "0.03"),  # banker's rounding would give 0.02
    ("1.994", "1.99"),
    ("1.995", "2.00"),
    (Decimal("1E+3"), "1000.00"),
    (Decimal("1E-10"), "0.00"),
    (Decimal("123456789012.345"), "123456789012.35"),
    (Decimal("999999999999.99"), "999999999999.99"),
    (0, "0.00"),
    (1, "1.00"),
    (-42, "-42.00"),
    (10**12, "1000000000000.00"),
    ("  1.5 ", "1.50"),
    ("1234.5678", "1234.57"),
])
def test_to_cny_rounds_half_up_to_the_fen(value, expected):
    amount = to_cny(value)

    assert isinstance(amount, Decimal)
    assert str(amount) == expected  # the exponent too: always exactly two places
    assert amount.as_tuple().exponent == -2


@pytest.mark.parametrize(("value", "error"), [
    (0.1, TypeError),
    (1.0, TypeError),
    (float("nan"), TypeError),
    (True, TypeError),
    (False, TypeError),
    ("NaN", ValueError),
    ("nan", ValueError),
    ("Infinity", ValueError),
    ("-inf", ValueError),
    (Decimal("NaN"), ValueError),
    (Decimal("sNaN"), ValueError),
    (Decimal("-Infinity"), ValueError),
    ("abc", ValueError),
    ("", ValueError),
    ("1,000.00", ValueError),
    ("¥12", ValueError),
    ("12 元", ValueError),
])
def test_to_cny_refuses_inexact_and_non_numbers(value, error):
    with pytest.raises(error):
        to_cny(value)


@pytest.mark.parametrize(("amount", "step", "expected"), [
    ("12.34", "0.1", "12.3"),
    ("12.35", "0.1", "12.4"),
    ("-12.35", "0.1", "-12.4"),
    ("2.5", "1", "3"),  # banker's rounding would give 2
    ("0.5", "1", "1"),
    ("-12.5", "1", "-13"),
    ("124.9", "10", "120"),
    ("125", "10", "130"),
    ("0.124", "0.05", "0.10"),
    ("0.125", "0.05", "0.15"),
    ("7.499", "0.5", "7.5"),
    ("1.005", "0.01", "1.01"),
])
def test_round_half_up_to_other_steps(amount, step, expected):
    assert round_half_up(Decimal(amount), Decimal(step)) == Decimal(expected)


def test_round_half_up_defaults_to_the_fen():
    assert Decimal("0.01") == CNY_STEP
    assert round_half_up(Decimal("0.005")) == Decimal("0.01")
    assert str(round_half_up(Decimal("3.14159"))) == "3.14"


@pytest.mark.parametrize(("amount", "symbol", "expected"), [
    (Decimal("1234567.8"), True, "¥1,234,567.80"),
    (Decimal("1234567.8"), False, "1,234,567.80"),
    (Decimal("0"), True, "¥0.00"),
    (Decimal("999.995"), True, "¥1,000.00"),
    (Decimal("0.005"), True, "¥0.01"),
    (Decimal("-1234.565"), True, "¥-1,234.57"),
    (Decimal("1000000000000"), True, "¥1,000,000,000,000.00"),
    (12, True, "¥12.00"),
])
def test_format_cny(amount, symbol, expected):
    assert format_cny(amount, symbol=symbol) == expected


def test_format_cny_refuses_floats():
    with pytest.raises(TypeError):
        format_cny(1.5)


# --- time, pure ----------------------------------------------------------------------------------------------

class _NoOffset(tzinfo):
    """A tzinfo that does not know its offset: as good as naive."""

    def utcoffset(self, dt):
        return None

    def dst(self, dt):
        return None


def test_as_utc_converts_an_aware_datetime():
    moment = datetime(2026, 3, 1, 9, 30, 15, 250, tzinfo=CST)

    converted = as_utc(moment)

    assert converted == moment
    assert converted.tzinfo is UTC
    assert (converted.hour, converted.minute, converted.second, converted.microsecond) == (1, 30, 15, 250)


@pytest.mark.parametrize("moment", [
    datetime(2026, 3, 1, 9, 30),  # noqa: DTZ001 -- naive on purpose
    datetime(2026, 3, 1, 9, 30, tzinfo=_NoOffset()),
])
def test_as_utc_refuses_naive_datetimes(moment):
    with pytest.raises(ValueError, match="naive"):
        as_utc(moment)


def test_utcnow_is_aware_utc():
    now = utcnow()

    assert now.tzinfo is UTC
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


@pytest.mark.parametrize(("moment", "tz_name", "expected"), [
    (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), "Asia/Shanghai", "2026-01-01T08:00:00+08:00"),
    (datetime(2026, 7, 1, 20, 0, tzinfo=UTC), "Asia/Shanghai", "2026-07-02T04:00:00+08:00"),
    (datetime(2026, 7, 1, 9, 0, tzinfo=CST), "Asia/Shanghai", "2026-07-01T09:00:00+08:00"),
    (datetime(2026, 7, 1, 12, 0, tzinfo=UTC), "Europe/Berlin", "2026-07-01T14:00:00+02:00"),
    (datetime(2026, 1, 1, 12, 0, tzinfo=UTC), "Europe/Berlin", "2026-01-01T13:00:00+01:00"),
])
def test_to_local_shows_the_instant_in_a_zone(moment, tz_name, expected):
    local = to_local(moment, tz_name)

    assert local == moment
    assert local.isoformat() == expected
    assert local.tzinfo == zone(tz_name)


def test_to_local_defaults_to_asia_shanghai():
    local = to_local(datetime(2026, 1, 1, 16, 0, tzinfo=UTC))

    assert local.tzinfo == zone("Asia/Shanghai")
    assert local.isoformat() == "2026-01-02T00:00:00+08:00"


def test_to_local_refuses_naive_datetimes_and_unknown_zones():
    with pytest.raises(ValueError, match="naive"):
        to_local(datetime(2026, 1, 1, 8, 0))  # noqa: DTZ001 -- naive on purpose
    with pytest.raises(ValueError, match="unknown time zone"):
        to_local(datetime(2026, 1, 1, 8, 0, tzinfo=UTC), "Asia/Chengdu_Island")


# --- Money columns -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "0.00", "0.01", "0.10", "19.99", "1500000.00", "12345678.90", "123456789012.34", "999999999999.99",
])
def test_money_columns_keep_exact_decimals(db, value):
    resource = make_resource(db, original_value=Decimal(value))
    db.commit()
    db.expire_all()

    stored = db.scalar(select(Resource.original_value).where(Resource.id == resource.id))

    assert isinstance(stored, Decimal)
    assert str(stored) == value
    raw = db.execute(text("SELECT original_value FROM resource WHERE id = :id"), {"id": resource.id}).scalar_one()
    if db.get_bind().dialect.name == "sqlite":
        assert raw == int(Decimal(value) * 100)  # an exact integer count of fen
        assert isinstance(raw, int)
    else:
        assert raw == Decimal(value)
        assert isinstance(raw, Decimal)


def test_money_columns_round_half_up_on_the_way_in(db):
    resource = make_resource(db, original_value=Decimal("1.005"))
    other = make_resource(db, original_value="2.675")
    db.commit()
    db.expire_all()

    assert db.get(Resource, resource.id).original_value == Decimal("1.01")
    assert db.get(Resource, other.id).original_value == Decimal("2.68")


def test_money_columns_refuse_floats(db):
    facility = make_facility(db)
    before = db.scalar(select(func.count()).select_from(Resource))

    with pytest.raises(StatementError) as caught, db.begin_nested():
        make_resource(db, facility=facility, original_value=0.1)

    assert isinstance(caught.value.orig, TypeError)
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Resource)) == before


def test_money_sums_in_sql_are_exact(db):
    facility = make_facility(db)
    values = [Decimal(v) for v in ("0.10", "0.20", "0.01", "1234567.89", "999999999999.99", "0.07", "33.33")]
    ids = [make_resource(db, facility=facility, original_value=v).id for v in values]
    db.commit()

    total = db.scalar(select(func.sum(Resource.original_value)).where(Resource.id.in_(ids)))

    assert isinstance(total, Decimal)
    assert total == sum(values)
    assert str(total) == "1000001234601.59"
    assert db.scalar(select(func.sum(Resource.original_value)).where(Resource.id.in_(ids[:3]))) == Decimal("0.31")


# --- UtcDateTime columns -------------------------------------------------------------------------------------

def test_utc_datetime_columns_return_aware_utc_equal_to_the_input(db):
    moment = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=CST)
    org = make_organisation(db, created_at=moment)
    db.commit()
    db.expire_all()

    stored = db.scalar(select(Organisation.created_at).where(Organisation.id == org.id))

    assert stored == moment
    assert stored.tzinfo is UTC
    assert stored.isoformat() == "2026-03-01T01:30:15.123456+00:00"
    if db.get_bind().dialect.name == "sqlite":  # the UTC wall time is what SQLite keeps
        raw = db.execute(text("SELECT created_at FROM organisation WHERE id = :id"), {"id": org.id}).scalar_one()
        assert str(raw).startswith("2026-03-01 01:30:15.123456")


def test_utc_datetime_columns_compare_as_instants_in_sql(db):
    org = make_organisation(db, created_at=datetime(2026, 3, 1, 9, 30, tzinfo=CST))
    db.commit()

    def found(op):
        return db.scalar(select(func.count()).select_from(Organisation).where(Organisation.id == org.id, op))

    assert found(Organisation.created_at == datetime(2026, 3, 1, 1, 30, tzinfo=UTC)) == 1
    assert found(Organisation.created_at > datetime(2026, 3, 1, 9, 0, tzinfo=CST)) == 1
    assert found(Organisation.created_at > datetime(2026, 3, 1, 2, 0, tzinfo=UTC)) == 0


def test_nullable_utc_datetime_columns_keep_none_and_values(db):
    token, _secret = make_token(db)
    db.commit()
    db.expire_all()
    assert db.get(ApiToken, token.id).last_used_at is None

    used = datetime(2026, 12, 31, 23, 59, 59, tzinfo=CST)
    db.get(ApiToken, token.id).last_used_at = used
    db.commit()
    db.expire_all()

    stored = db.get(ApiToken, token.id).last_used_at
    assert stored == used
    assert stored.tzinfo is UTC
    assert stored.isoformat() == "2026-12-31T15:59:59+00:00"


def test_storing_a_naive_datetime_raises_and_writes_nothing(db):
    moment = datetime(2026, 3, 1, 9, 30, tzinfo=CST)
    org = make_organisation(db, created_at=moment)
    db.commit()
    naive = datetime(2026, 3, 1, 12, 0)  # noqa: DTZ001 -- naive on purpose

    with pytest.raises(StatementError) as caught:
        db.execute(update(Organisation).where(Organisation.id == org.id).values(created_at=naive))
    assert isinstance(caught.value.orig, ValueError)
    assert "naive" in str(caught.value.orig)

    count_before = db.scalar(select(func.count()).select_from(Organisation))
    with pytest.raises(StatementError) as caught, db.begin_nested():
        make_organisation(db, created_at=naive)
    assert isinstance(caught.value.orig, ValueError)

    db.rollback()
    assert db.scalar(select(func.count()).select_from(Organisation)) == count_before
    db.expire_all()
    assert db.scalar(select(Organisation.created_at).where(Organisation.id == org.id)) == moment
