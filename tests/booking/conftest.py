"""Fixtures of the booking tests: a Shanghai facility open on weekdays 08:00-18:00 with its lab manager, a
self-service instrument there with the default rules, a researcher, an admin and a stranger manager."""

from __future__ import annotations

import pytest

from core.accounts.models import Role
from tests.booking.helpers import OFFICE_HOURS
from tests.factories import make_facility, make_resource, make_user


@pytest.fixture
def manager(db):
    return make_user(db, roles=(Role.LAB_MANAGER,))


@pytest.fixture
def other_manager(db):
    """Manages another facility, not `facility`."""
    user = make_user(db, roles=(Role.LAB_MANAGER,))
    make_facility(db, managers=(user,))
    return user


@pytest.fixture
def admin(db):
    return make_user(db, roles=(Role.ADMIN,))


@pytest.fixture
def researcher(db):
    return make_user(db)


@pytest.fixture
def facility(db, manager):
    return make_facility(db, managers=(manager,), opening_hours=OFFICE_HOURS)


@pytest.fixture
def resource(db, facility):
    """An instrument with the default rules: 30-min grid, 30 min to 8 h, 1 h lead time, 90 days ahead."""
    return make_resource(db, facility=facility)
