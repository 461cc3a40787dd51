"""The `labshare` command line on a fresh database per backend: migrations, demo data, users and tokens.

Every command has --help; failures print one line on stderr, exit non-zero and write nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.orm import Session

from billing.models import BillingPeriod
from billing.voucher_models import Voucher, VoucherProgramme
from core.accounts.models import ApiToken, Organisation, User
from core.accounts.passwords import verify_password
from core.db import Base, make_engine
from core.settings import load_settings
from tests.conftest import create_pg_database, drop_pg_database
from tests.factories import make_organisation, make_user, unique_credit_code
from web.cli import main
from web.demo.seed import load_data

NEW_PASSWORD = "a long enough password"


@dataclass
class CliDatabase:
    url: str
    engine: Engine

    def env(self, **extra: str) -> dict[str, str | None]:
        # Only this database; no LABSHARE_* setting of the machine running the tests leaks in.
        env: dict[str, str | None] = {key: None for key in os.environ if key.startswith("LABSHARE_")}
        env["LABSHARE_DATABASE_URL"] = self.url
        env.update(extra)
        return env

    def run(self, *args: str, input: str | None = None, **env: str) -> Result:
        return CliRunner().invoke(main, list(args), input=input, env=self.env(**env), catch_exceptions=False)

    def counts(self) -> dict[str, int]:
        """Rows of every table the migrations created (none after `db downgrade base`)."""
        existing = set(inspect(self.engine).get_table_names())
        with self.engine.connect() as connection:
            return {table.name: connection.scalar(select(func.count()).select_from(table))
                    for table in Base.metadata.sorted_tables if table.name in existing}

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)


@pytest.fixture
def fresh_db(backend, tmp_path) -> Iterator[CliDatabase]:
    """An empty database of the backend, for this test alone."""
    url = f"sqlite:///{tmp_path / 'cli.db'}" if backend == "sqlite" else create_pg_database("labshare_cli")
    engine = make_engine(url)
    try:
        yield CliDatabase(url, engine)
    finally:
        engine.dispose()
        if backend == "postgresql":
            drop_pg_database(url)


@pytest.fixture
def cli_db(fresh_db) -> CliDatabase:
    """A fresh database migrated to the newest revision by `labshare db upgrade`."""
    result = fresh_db.run("db", "upgrade")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "database at revision head\n"
    return fresh_db


def stderr_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_line_failure(result: Result, exit_code: int, *fragments: str) -> str:
    lines = stderr_lines(result)
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output
    return lines[0]


# --- --help -----------------------------------------------------------------------------------------------------

def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))
        else:
            yield (*prefix, name)


COMMANDS = list(command_paths(main))


def test_the_documented_commands_exist():
    assert {("db", "upgrade"), ("db", "downgrade"), ("seed", "demo"), ("users", "create"), ("tokens", "create"),
            ("web",), ("demo",)} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "labshare" for p in COMMANDS])
def test_every_command_has_help(path):
    result = CliRunner().invoke(main, [*path, "--help"], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")
    assert re.search(r"^Options:", result.stdout, re.M)
    assert result.stderr == ""


# --- migrations and demo data ------------------------------------------------------------------------------------

def test_upgrade_then_seed_creates_the_demo_data(cli_db):
    data = load_data()

    result = cli_db.run("seed", "demo")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("demo data loaded: ")
    assert f"{len(data['organisations'])} organisations" in result.stdout
    assert f"{len(data['users'])} users" in result.stdout
    counts = cli_db.counts()
    assert counts["organisation"] == len(data["organisations"])
    assert counts["facility"] == len(data["facilities"])
    assert counts["resource"] == len(data["resources"])
    assert counts["user_account"] == len(data["users"])
    assert counts["facility_manager"] == sum(len(user["facilities"]) for user in data["users"])
    assert counts["affiliation"] == sum(len(org["affiliations"]) for org in data["organisations"])
    assert counts["device"] == len(data["devices"])
    # every resource has a price, and the year's voucher programme has granted the eligible tech SMEs a voucher
    assert counts["rate_card"] == len(data["resources"])
    eligible = {org["name_zh"] for org in data["organisations"] if org.get("tech_sme") and org["kind"] == "enterprise"}
    # a year of history (web.demo.history): past months closed with charges, some paid by vouchers
    assert counts["billing_period"] == 12
    assert counts["charge"] > 1000
    assert counts["usage_session"] > 100
    assert counts["voucher_application"] > 0
    with cli_db.session() as session:
        year = datetime.now(ZoneInfo("Asia/Shanghai")).year
        this_year = session.scalar(select(VoucherProgramme).where(VoucherProgramme.code == f"SC-{year}"))
        holders = set(session.scalars(select(Organisation.name_zh).join(Voucher, Voucher.holder_id == Organisation.id)
                                      .where(Voucher.programme_id == this_year.id)))
        assert holders == eligible
        assert session.scalar(select(func.count()).select_from(BillingPeriod)
                              .where(BillingPeriod.closed_at.is_(None))) == 0
        admin = session.scalar(select(User).where(User.email == "admin@labshare.demo"))
        assert verify_password(admin.password_hash, "labshare-demo")


def test_seeding_twice_creates_nothing_new(cli_db):
    first = cli_db.run("seed", "demo")
    assert first.exit_code == 0, first.stderr
    after_first = cli_db.counts()

    second = cli_db.run("seed", "demo")

    assert second.exit_code == 0, second.stderr
    assert second.stdout == "demo data loaded: nothing new\n"
    assert cli_db.counts() == after_first
    assert after_first["organisation"] > 0


def test_downgrade_to_base_removes_every_table_and_upgrade_brings_them_back(cli_db):
    result = cli_db.run("db", "downgrade", "base")

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "database at revision base\n"
    assert set(inspect(cli_db.engine).get_table_names()) <= {"alembic_version"}

    again = cli_db.run("db", "upgrade")
    assert again.exit_code == 0, again.stderr
    assert {"organisation", "user_account", "api_token", "audit_entry"} <= set(inspect(cli_db.engine).get_table_names())


# --- users and tokens -------------------------------------------------------------------------------------------------

@pytest.fixture
def organisation(cli_db) -> Organisation:
    with cli_db.session() as session:
        org = make_organisation(session)
        session.commit()
    return org


def credit_code_where(predicate) -> str:
    return next(code for code in iter(unique_credit_code, None) if predicate(code))


@pytest.mark.parametrize("org_ref", ["all-digit credit code", "credit code with a letter, in lower case", "id"])
def test_create_a_user_then_a_token_that_works_on_the_api(cli_db, org_ref):
    from web import create_app

    code = credit_code_where(str.isdigit if org_ref.startswith("all-digit") else lambda c: not c.isdigit())
    with cli_db.session() as session:
        organisation = make_organisation(session, credit_code=code)
        session.commit()
    ref = {"all-digit credit code": code, "credit code with a letter, in lower case": code.lower(),
           "id": str(organisation.id)}[org_ref]

    created = cli_db.run("users", "create", "--email", "New.User@Example.test", "--org", ref, "--role", "researcher",
                         "--role", "finance", "--password-stdin", input=f"{NEW_PASSWORD}\n")

    assert created.exit_code == 0, created.stderr
    assert re.fullmatch(r"user new\.user@example\.test created \(id \d+, roles finance, researcher\)\n",
                        created.stdout)
    with cli_db.session() as session:
        user = session.scalar(select(User).where(User.email == "new.user@example.test"))
        assert user.organisation_id == organisation.id
        assert verify_password(user.password_hash, NEW_PASSWORD)

    issued = cli_db.run("tokens", "create", "--email", "new.user@example.test", "--name", "backup job")

    assert issued.exit_code == 0, issued.stderr
    secret = issued.stdout.strip()
    assert issued.stdout == secret + "\n"
    assert re.fullmatch(r"lsk_[A-Za-z0-9_-]{43}", secret)
    app = create_app(load_settings(environ={}, env="test", database_url=cli_db.url), testing=True)
    try:
        response = app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    finally:
        app.extensions["labshare.engine"].dispose()
    assert response.status_code == 200
    assert response.json["email"] == "new.user@example.test"
    assert response.json["roles"] == ["finance", "researcher"]
    with cli_db.session() as session:
        assert session.scalar(select(ApiToken.name).where(ApiToken.user_id == user.id)) == "backup job"


def test_a_lab_manager_can_be_given_facilities(cli_db, organisation):
    from tests.factories import make_facility

    with cli_db.session() as session:
        facility = make_facility(session)
        session.commit()

    result = cli_db.run("users", "create", "--email", "boss@example.test", "--org", organisation.credit_code,
                        "--role", "lab_manager", "--facility", str(facility.id), "--password-stdin",
                        input=f"{NEW_PASSWORD}\n")

    assert result.exit_code == 0, result.stderr
    assert cli_db.counts()["facility_manager"] == 1


def user_args(email: str, org: str, *extra: str) -> list[str]:
    return ["users", "create", "--email", email, "--org", org, *extra]


FAILURES = [
    # case                 args (templates)                                         stdin            exit  fragments
    ("unknown org",        user_args("a@example.test", "{unknown_code}", "--role", "researcher", "--password-stdin"),
     f"{NEW_PASSWORD}\n", 1, ("单位", "{unknown_code}", "不存在")),
    ("unknown org id",     user_args("a@example.test", "999999", "--role", "researcher", "--password-stdin"),
     f"{NEW_PASSWORD}\n", 1, ("单位 999999 不存在。",)),
    ("duplicate e-mail",   user_args("{existing_email}", "{code}", "--role", "researcher", "--password-stdin"),
     f"{NEW_PASSWORD}\n", 1, ("该邮箱已被注册。",)),
    ("duplicate e-mail in capitals", user_args("{existing_email_upper}", "{code}", "--role", "researcher",
                                               "--password-stdin"),
     f"{NEW_PASSWORD}\n", 1, ("该邮箱已被注册。",)),
    ("short password",     user_args("b@example.test", "{code}", "--role", "researcher", "--password-stdin"),
     "short\n", 1, ("密码至少需要 8 个字符。",)),
    ("empty password",     user_args("b@example.test", "{code}", "--role", "researcher", "--password-stdin"),
     "", 1, ("密码至少需要 8 个字符。",)),
    ("invalid e-mail",     user_args("not-an-email", "{code}", "--role", "researcher", "--password-stdin"),
     f"{NEW_PASSWORD}\n", 1, ("请输入有效的邮箱地址。",)),
    ("unknown facility",   user_args("c@example.test", "{code}", "--role", "lab_manager", "--facility", "999999",
                                     "--password-stdin"),
     f"{NEW_PASSWORD}\n", 1, ("实验室 999999 不存在。",)),
    ("token for unknown e-mail", ["tokens", "create", "--email", "nobody@example.test"],
     None, 1, ("用户 nobody@example.test 不存在。",)),
    ("token with an empty name", ["tokens", "create", "--email", "{existing_email}", "--name", " "],
     None, 1, ("请为令牌输入 1 至 100 个字符的名称。",)),
]


@pytest.mark.parametrize(("case", "args", "stdin", "exit_code", "fragments"), FAILURES,
                         ids=[row[0] for row in FAILURES])
def test_failures_print_one_line_and_write_nothing(db_with_user, case, args, stdin, exit_code, fragments):
    cli_db, values = db_with_user
    before = cli_db.counts()

    result = cli_db.run(*[arg.format(**values) for arg in args], input=stdin)

    assert_one_line_failure(result, exit_code, *[fragment.format(**values) for fragment in fragments])
    assert result.stdout == ""
    assert cli_db.counts() == before


@pytest.fixture
def db_with_user(cli_db, organisation):
    with cli_db.session() as session:
        user = make_user(session, organisation=session.get(Organisation, organisation.id))
        session.commit()
    return cli_db, {"code": organisation.credit_code, "unknown_code": unique_credit_code(),
                    "existing_email": user.email, "existing_email_upper": user.email.upper()}


def test_unknown_role_is_refused_by_the_option_itself(db_with_user):
    cli_db, values = db_with_user
    before = cli_db.counts()

    result = cli_db.run(*user_args("d@example.test", values["code"], "--role", "superuser", "--password-stdin"),
                        input=f"{NEW_PASSWORD}\n")

    assert result.exit_code == 2
    errors = [line for line in stderr_lines(result) if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "--role" in errors[0]
    assert "superuser" in errors[0]
    assert "Traceback" not in result.output
    assert cli_db.counts() == before


@pytest.mark.parametrize("args", [["db", "upgrade"], ["seed", "demo"],
                                  ["tokens", "create", "--email", "x@example.test"],
                                  user_args("e@example.test", "1", "--role", "researcher", "--password-stdin")],
                         ids=["db upgrade", "seed demo", "tokens create", "users create"])
def test_invalid_environment_name_exits_2_naming_the_variable(fresh_db, args):
    result = fresh_db.run(*args, input=f"{NEW_PASSWORD}\n", LABSHARE_ENV="staging")

    assert_one_line_failure(result, 2, "LABSHARE_ENV", "staging")
    assert result.stdout == ""
    assert fresh_db.counts() == {}  # nothing was even migrated


def test_an_unreachable_database_is_one_line_too(tmp_path):
    url = "postgresql+psycopg://postgres@127.0.0.1:1/labshare?connect_timeout=2"
    result = CliRunner().invoke(main, ["tokens", "create", "--email", "x@example.test"],
                                env={**{k: None for k in os.environ if k.startswith("LABSHARE_")},
                                     "LABSHARE_DATABASE_URL": url}, catch_exceptions=False)

    assert_one_line_failure(result, 1, "database unavailable")
