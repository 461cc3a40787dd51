"""`labshare billing reconcile` and `close-period` on a fresh database per backend: one commit, one line of
output; refusals print one line on stderr, exit non-zero and write nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from billing.models import BillingPeriod, Charge, ReconciliationItem, Statement
from core.accounts.models import OrganisationKind, Role
from core.db import make_engine
from tests.billing.factories import make_rate_card, make_usage_session
from tests.conftest import create_pg_database, drop_pg_database
from tests.factories import make_device, make_facility, make_organisation, make_reservation, make_resource, make_user
from tests.web.test_cli import CliDatabase, assert_one_line_failure

START = datetime(2026, 9, 8, 1, 0, tzinfo=UTC)
BILLING = ("billing_period", "reconciliation_item", "charge", "charge_line", "statement", "audit_entry")


@pytest.fixture
def cli_db(backend, tmp_path):
    """A fresh database of the backend, for this test alone, migrated by `labshare db upgrade`."""
    url = f"sqlite:///{tmp_path / 'cli.db'}" if backend == "sqlite" else create_pg_database("labshare_billing_cli")
    engine = make_engine(url)
    try:
        database = CliDatabase(url, engine)
        assert database.run("db", "upgrade").exit_code == 0
        yield database
    finally:
        engine.dispose()
        if backend == "postgresql":
            drop_pg_database(url)


@pytest.fixture
def lab(cli_db: CliDatabase):
    """A metered instrument with a card; an enterprise booking used in full and one nobody came to."""
    with cli_db.session() as db:
        manager = make_user(db, roles=(Role.LAB_MANAGER,))
        facility = make_facility(db, managers=(manager,))
        resource = make_resource(db, facility=facility)
        device = make_device(db, resource=resource)
        make_rate_card(db, resource)
        customer = make_user(db, organisation=make_organisation(db, kind=OrganisationKind.ENTERPRISE))
        make_reservation(db, resource=resource, user=customer, starts_at=START, ends_at=START + timedelta(hours=2))
        make_usage_session(db, device, START, START + timedelta(hours=2))
        no_show = make_reservation(db, resource=resource, user=customer, starts_at=START + timedelta(days=1),
                                   ends_at=START + timedelta(days=1, hours=1))
        finance = make_user(db, roles=(Role.FINANCE,), email="finance@example.test")
        researcher = make_user(db, email="researcher@example.test")
        db.commit()
        return {"no_show": no_show.id, "finance": finance.id, "researcher": researcher.id, "manager": manager.id}


def counts(cli_db: CliDatabase) -> dict[str, int]:
    return {table: n for table, n in cli_db.counts().items() if table in BILLING}


def test_close_period_refuses_open_exceptions_then_closes_once(cli_db, lab):
    from billing.reconcile import resolve_item
    from core.accounts.models import User

    reconciled = cli_db.run("billing", "reconcile", "--month", "2026-09")
    assert reconciled.exit_code == 0, reconciled.stderr
    assert reconciled.stdout == "reconciled 2026-09: 1 no_show, 1 used; 1 open exceptions\n"
    before = counts(cli_db)

    refused = cli_db.run("billing", "close-period", "--month", "2026-09")

    assert_one_line_failure(refused, 1, "2026-09")
    assert counts(cli_db) == before
    with cli_db.session() as db:
        item = db.scalars(select(ReconciliationItem).where(ReconciliationItem.reservation_id == lab["no_show"])).one()
        resolve_item(db, db.get(User, lab["manager"]), item.id, "accept")
        db.commit()

    closed = cli_db.run("billing", "close-period", "--month", "2026-09", "--by", "finance@example.test")

    assert closed.exit_code == 0, closed.stderr
    assert closed.stdout == ("closed 2026-09: 2 charges, 0 waived, 1 statements (ST-2026-09-0001 … ST-2026-09-0001), "
                             "total 1,000.00 CNY\n")
    with cli_db.session() as db:
        assert db.scalar(select(Statement.total)) == Decimal("1000.00")  # 2 h × 400 + half of 1 h × 400
        assert db.scalar(select(BillingPeriod.closed_by_id)) == lab["finance"]
        assert len(db.scalars(select(Charge)).all()) == 2
    after = counts(cli_db)

    again = cli_db.run("billing", "close-period", "--month", "2026-09")

    assert_one_line_failure(again, 1, "2026-09")
    assert counts(cli_db) == after


@pytest.mark.parametrize(("args", "fragment"), [
    (("--month", "2026-13"), "YYYY-MM"),
    (("--month", "2099-01"), "2099-01"),  # not over yet
    (("--month", "2026-09", "--by", "researcher@example.test"), ""),
    (("--month", "2026-09", "--by", "nobody@example.test"), "nobody@example.test"),
])
def test_bad_requests_fail_with_one_line_and_write_nothing(cli_db, lab, args, fragment):
    before = counts(cli_db)

    result = cli_db.run("billing", "close-period", *args)

    assert_one_line_failure(result, 1, fragment)
    assert counts(cli_db) == before


def test_the_billing_commands_have_help(cli_db):
    for command in ("reconcile", "close-period"):
        result = cli_db.run("billing", command, "--help")
        assert result.exit_code == 0
        assert "--month" in result.stdout
