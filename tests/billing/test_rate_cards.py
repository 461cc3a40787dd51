"""Rate cards: versioned by validity, never two valid on one day for a resource, bad prices refused."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy.exc
from sqlalchemy import select

from billing.errors import RateCardOverlap
from billing.models import BillingUnit, RateCard
from billing.rate_cards import RateCardData, card_in_force, create_rate_card, end_rate_card
from core.audit import AuditEntry
from core.errors import Forbidden, InvalidInput
from tests.billing.factories import make_rate_card
from tests.factories import row_counts


def card_data(**overrides) -> RateCardData:
    values = dict(valid_from=date(2026, 1, 1), unit="quarter_hour", price_internal="100", price_academic="200.50",
                  price_enterprise=Decimal("400"), no_show_fraction="0.5")
    values.update(overrides)
    return RateCardData(**values)


def test_a_lab_manager_creates_a_card_for_a_resource_of_their_facility(db, manager, resource):
    card = create_rate_card(db, manager, resource.id, card_data(setup_fee="50", technician_fee_per_hour="120.00"))

    assert (card.unit, card.price_academic, card.setup_fee, card.no_show_fraction) == (
        BillingUnit.QUARTER_HOUR, Decimal("200.50"), Decimal("50.00"), Decimal("0.5"))
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "rate_card.created")).one()
    assert (entry.actor_id, entry.target_id, entry.data["price_enterprise"]) == (manager.id, str(card.id), "400.00")


@pytest.mark.parametrize(("field", "value"), [
    ("price_enterprise", "-1"), ("price_academic", "abc"), ("price_internal", 12.5), ("setup_fee", "1.234"),
    ("price_internal", "NaN"), ("no_show_fraction", "1.5"), ("unit", "fortnight"), ("tolerance_min", -1),
])
def test_bad_values_are_refused_with_the_field_and_nothing_is_written(db, manager, resource, field, value):
    before = row_counts(db, RateCard, AuditEntry)

    with pytest.raises(InvalidInput) as caught:
        create_rate_card(db, manager, resource.id, card_data(**{field: value}))

    assert caught.value.code == "invalid_input"
    assert list(caught.value.fields) == [field]
    assert row_counts(db, RateCard, AuditEntry) == before


@pytest.mark.parametrize(("valid_from", "valid_to"), [
    (date(2026, 6, 30), None), (date(2025, 1, 1), date(2026, 1, 1)), (date(2026, 3, 1), date(2026, 3, 31)),
])
def test_overlapping_validity_is_refused(db, manager, resource, valid_from, valid_to):
    make_rate_card(db, resource, valid_from=date(2026, 1, 1), valid_to=date(2026, 6, 30))
    before = row_counts(db, RateCard, AuditEntry)

    with pytest.raises(RateCardOverlap) as caught:
        create_rate_card(db, manager, resource.id, card_data(valid_from=valid_from, valid_to=valid_to))

    assert caught.value.code == "rate_card_overlap"
    assert "2026-06-30" in caught.value.render()
    assert row_counts(db, RateCard, AuditEntry) == before


def test_the_database_refuses_overlaps_on_postgresql(db, backend, manager, resource):
    """PostgreSQL refuses an overlap even from code that skips the service (an exclusion constraint); SQLite has
    no such constraint, so there the service's check, made under the write lock, is the guard."""
    make_rate_card(db, resource, valid_from=date(2026, 1, 1), valid_to=None)
    if backend == "postgresql":
        with pytest.raises(sqlalchemy.exc.IntegrityError, match="rate_card_no_overlap"), db.begin_nested():
            make_rate_card(db, resource, valid_from=date(2027, 1, 1))
    else:
        with pytest.raises(RateCardOverlap):
            create_rate_card(db, manager, resource.id, card_data(valid_from=date(2027, 1, 1)))


def test_a_successor_card_after_ending_the_current_one_and_selection_by_service_date(db, finance, resource):
    first = make_rate_card(db, resource, valid_from=date(2026, 1, 1))
    end_rate_card(db, finance, first.id, date(2026, 6, 30))
    second = create_rate_card(db, finance, resource.id, card_data(valid_from=date(2026, 7, 1)))

    assert card_in_force(db, resource.id, date(2025, 12, 31)) is None
    assert card_in_force(db, resource.id, date(2026, 1, 1)) == first
    assert card_in_force(db, resource.id, date(2026, 6, 30)) == first
    assert card_in_force(db, resource.id, date(2026, 7, 1)) == second
    assert card_in_force(db, resource.id, date(2031, 1, 1)) == second


def test_a_researcher_or_another_facility_manager_cannot_set_prices(db, researcher, other_manager, resource):
    for actor in (researcher, other_manager):
        with pytest.raises(Forbidden):
            create_rate_card(db, actor, resource.id, card_data())
    assert row_counts(db, RateCard) == {"rate_card": 0}
