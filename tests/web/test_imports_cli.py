"""`labshare import resources|organisations|users FILE [--dry-run] --as EMAIL` on a fresh database per backend."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from booking.imports import template as resource_template
from booking.models import Resource
from core.accounts.imports import organisation_template, user_template
from core.accounts.models import Organisation, User
from core.accounts.passwords import verify_password
from core.db import make_engine
from tests.conftest import create_pg_database, drop_pg_database
from tests.factories import make_facility, make_organisation, make_user, unique_credit_code
from tests.web.test_cli import CliDatabase, assert_one_line_failure
from tests.web.test_imports import fill_csv, resource_row


@pytest.fixture
def cli_db(backend, tmp_path) -> Iterator[CliDatabase]:
    """A fresh database of the backend migrated by `labshare db upgrade`, for this test alone."""
    url = f"sqlite:///{tmp_path / 'cli.db'}" if backend == "sqlite" else create_pg_database("labshare_cli")
    engine = make_engine(url)
    try:
        database = CliDatabase(url, engine)
        assert database.run("db", "upgrade").exit_code == 0
        yield database
    finally:
        engine.dispose()
        if backend == "postgresql":
            drop_pg_database(url)


def setup(cli_db, *roles):
    with cli_db.session() as session:
        user = make_user(session, roles=roles)
        facility = make_facility(session, managers=(user,) if "lab_manager" in roles else ())
        other = make_facility(session)
        org = make_organisation(session)
        session.commit()
        return user.email, facility, other, org


def count(cli_db, model) -> int:
    with cli_db.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_dry_run_then_import_of_resources(cli_db, tmp_path):
    email, facility, _, _ = setup(cli_db, "admin")
    path = tmp_path / "resources.csv"
    path.write_bytes(fill_csv(resource_template("csv"), [resource_row(facility, f"仪器{i}") for i in range(300)]))

    dry = cli_db.run("import", "resources", str(path), "--dry-run", "--as", email)
    assert dry.exit_code == 0, dry.output
    assert dry.stdout == "300 rows checked: no problems (dry run, nothing written)\n"
    assert "checking rows" in dry.stderr  # the progress bar
    assert count(cli_db, Resource) == 0
    real = cli_db.run("import", "resources", str(path), "--as", email)
    assert real.exit_code == 0, real.output
    assert real.stdout == "300 resources imported from resources.csv\n"
    assert count(cli_db, Resource) == 300


def test_problems_are_listed_and_the_command_fails_in_one_line(cli_db, tmp_path):
    email, facility, other, _ = setup(cli_db, "lab_manager")
    path = tmp_path / "resources.csv"
    path.write_bytes(fill_csv(resource_template("csv"), [resource_row(facility, "甲"), resource_row(other, "乙")]))

    result = cli_db.run("import", "resources", str(path), "--as", email, LABSHARE_DEFAULT_LOCALE="en")

    assert_one_line_failure(result, 1, "1 problems in 2 rows of resources.csv; nothing was imported")
    assert result.stdout == "row 3\tFacility\tYou do not manage this facility.\n"
    assert count(cli_db, Resource) == 0


def test_organisations_and_users_with_their_initial_passwords(cli_db, tmp_path):
    email, _, _, _ = setup(cli_db, "admin")
    code = unique_credit_code()
    orgs = tmp_path / "orgs.csv"
    orgs.write_bytes(fill_csv(organisation_template("csv"), [
        {"Name (zh)": "甲公司", "Name (en)": "Jia", "Unified social credit code": code, "Kind": "enterprise",
         "City or prefecture": "Chengdu", "Tech SME": "yes"}], encoding="gbk"))
    users = tmp_path / "users.csv"
    users.write_bytes(fill_csv(user_template("csv"), [
        {"E-mail": "cli@example.test", "Name (zh)": "甲", "Organisation credit code": code, "Roles": "finance"}]))
    out = tmp_path / "passwords.csv"

    assert cli_db.run("import", "organisations", str(orgs), "--as", email).exit_code == 0
    result = cli_db.run("import", "users", str(users), "--by", email, "--passwords-out", str(out))

    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == 0o600
    [row] = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    with cli_db.session() as session:
        user = session.scalars(select(User).where(User.email == "cli@example.test")).one()
        assert verify_password(user.password_hash, row["initial_password"])
        assert session.scalars(select(Organisation).where(Organisation.credit_code == code)).one().tech_sme


def test_only_admins_import_organisations_and_unknown_actors_fail(cli_db, tmp_path):
    email, _, _, _ = setup(cli_db, "lab_manager")
    path = tmp_path / "orgs.csv"
    path.write_bytes(organisation_template("csv"))
    before = count(cli_db, Organisation)

    assert_one_line_failure(cli_db.run("import", "organisations", str(path), "--as", email), 1)
    assert_one_line_failure(cli_db.run("import", "organisations", str(path), "--as", "nobody@example.test"), 1)
    assert count(cli_db, Organisation) == before
