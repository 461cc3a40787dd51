"""Fixtures of the billing tests: a Shanghai facility owned by an institute, its lab manager, an instrument
with a measuring device and a rate card, customers of each class, finance staff and a researcher."""

from __future__ import annotations

import pytest

from core.accounts.models import OrganisationKind, Role
from tests.billing.factories import make_rate_card
from tests.factories import make_device, make_facility, make_organisation, make_resource, make_user


@pytest.fixture
def owner(db):
    return make_organisation(db, kind=OrganisationKind.INSTITUTE)


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
def facility(db, owner, manager):
    return make_facility(db, owner=owner, managers=(manager,))


@pytest.fixture
def resource(db, facility):
    return make_resource(db, facility=facility)


@pytest.fixture
def device(db, resource):
    return make_device(db, resource=resource)


@pytest.fixture
def card(db, resource):
    return make_rate_card(db, resource)


@pytest.fixture
def finance(db):
    return make_user(db, roles=(Role.FINANCE,))


@pytest.fixture
def enterprise_user(db):
    return make_user(db, organisation=make_organisation(db, kind=OrganisationKind.ENTERPRISE))


@pytest.fixture
def researcher(db):
    return make_user(db, organisation=make_organisation(db, kind=OrganisationKind.UNIVERSITY))
