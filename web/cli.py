"""The `labshare` command line: thin wrappers over the services, one commit per command.

Every command exits non-zero with a one-line reason on error (in the configured language).
"""

from __future__ import annotations

import sys
from functools import wraps
from pathlib import Path

import click
from babel import Locale
from babel.support import Translations
from sqlalchemy.exc import OperationalError

from core.errors import DomainError, translate_message
from core.settings import Settings, SettingsError, load_settings

TRANSLATIONS_DIR = Path(__file__).parent / "translations"
DEMO_DATA_DIR = "labshare-demo"


def _gettext(settings: Settings | None):
    locale = settings.default_locale if settings else "zh_CN"
    # Babel spells zh_CN as zh_Hans_CN, which is also the catalog's folder name
    return Translations.load(str(TRANSLATIONS_DIR), [Locale.parse(locale)]).gettext


def _fail(message: str, code: int = 1):
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _domain_error_line(exc: DomainError, settings: Settings | None) -> str:
    gettext = _gettext(settings)
    line = exc.render(gettext)
    fields = getattr(exc, "fields", {})
    if fields:
        line += " " + "; ".join(f"{name}: {' '.join(translate_message(m, gettext) for m in messages)}"
                                for name, messages in fields.items())
    return line


def handles_errors(command):
    """Turn expected failures into one line on stderr and a non-zero exit, never a traceback."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SettingsError as exc:
            _fail(f"invalid configuration: {exc}", 2)
        except DomainError as exc:
            _fail(_domain_error_line(exc, _settings_or_none()))
        except OperationalError as exc:
            _fail(f"database unavailable: {str(exc.orig).strip().splitlines()[0]}")

    return wrapper


def _settings_or_none() -> Settings | None:
    try:
        return load_settings()
    except SettingsError:
        return None


@click.group(help="LabShare: shared large research instruments and pilot lines.")
@click.version_option(package_name="labshare")
def main() -> None:
    pass


# --- database ---------------------------------------------------------------------------------------

@main.group(help="Database migrations on LABSHARE_DATABASE_URL.")
def db() -> None:
    pass


@db.command("upgrade", help="Apply migrations up to REVISION (default: the newest).")
@click.argument("revision", default="head")
@handles_errors
def db_upgrade(revision: str) -> None:
    from migrations import runner

    settings = load_settings()
    _ensure_sqlite_dir(settings)
    runner.upgrade(settings.effective_database_url, revision)
    click.echo(f"database at revision {revision}")


@db.command("downgrade", help="Revert migrations down to REVISION ('base' removes every table).")
@click.argument("revision")
@handles_errors
def db_downgrade(revision: str) -> None:
    from migrations import runner

    runner.downgrade(load_settings().effective_database_url, revision)
    click.echo(f"database at revision {revision}")


def _ensure_sqlite_dir(settings: Settings) -> None:
    if not settings.database_url:
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)


def _session(settings: Settings):
    from core.db import make_engine, make_sessionmaker

    return make_sessionmaker(make_engine(settings.effective_database_url))()


# --- demo data ----------------------------------------------------------------------------------------

@main.group(help="Load data sets.")
def seed() -> None:
    pass


@seed.command("demo", help="Load the demo data set (idempotent: running it twice changes nothing).")
@handles_errors
def seed_demo_command() -> None:
    report = _seed(load_settings())
    click.echo(_summary(report))


def _seed(settings: Settings):
    from web.demo.seed import item_count, load_data, seed_demo

    data = load_data()
    with _session(settings) as session, click.progressbar(length=item_count(data), label="demo data",
                                                          file=sys.stderr) as bar:
        report = seed_demo(session, data, progress=bar.update)
        session.commit()
    return report


def _summary(report) -> str:
    created = ", ".join(f"{n} {kind}" for kind, n in report.created.items()) or "nothing new"
    return f"demo data loaded: {created}"


# --- users and tokens ----------------------------------------------------------------------------------

@main.group(help="User accounts.")
def users() -> None:
    pass


@users.command("create", help="Create a user; the password is prompted for, or read from stdin.")
@click.option("--email", required=True)
@click.option("--org", "org_ref", required=True, help="Organisation id or unified social credit code.")
@click.option("--role", "roles", multiple=True, required=True,
              type=click.Choice(["researcher", "lab_manager", "finance", "admin"]))
@click.option("--name", "name_zh", help="Display name (Chinese); defaults to the e-mail's local part.")
@click.option("--name-en", default="")
@click.option("--locale", default="zh_CN", type=click.Choice(["zh_CN", "en"]))
@click.option("--facility", "facility_ids", multiple=True, type=int, help="Facility id a lab manager runs.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@handles_errors
def users_create(email, org_ref, roles, name_zh, name_en, locale, facility_ids, password_stdin) -> None:
    from sqlalchemy import select

    from booking.models import Facility
    from booking.permissions import grant_facility_manager
    from core.accounts import services
    from core.accounts.models import Organisation
    from core.errors import NotFound

    settings = load_settings()
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _session(settings) as session:
        org = (session.get(Organisation, int(org_ref)) if org_ref.isdigit() else
               session.scalar(select(Organisation).where(Organisation.credit_code == org_ref.strip().upper())))
        if org is None:
            raise NotFound("organisation", org_ref)
        user = services.create_user(session, None, email=email, password=password, organisation=org,
                                    name_zh=name_zh or email.split("@")[0], name_en=name_en, roles=roles,
                                    locale=locale)
        for facility_id in facility_ids:
            if session.get(Facility, facility_id) is None:
                raise NotFound("facility", facility_id)
            grant_facility_manager(session, None, facility_id, user)
        session.commit()
        click.echo(f"user {user.email} created (id {user.id}, roles {', '.join(sorted(user.roles))})")


@main.group(help="API tokens.")
def tokens() -> None:
    pass


@tokens.command("create", help="Print a new API token for a user (it is shown only once).")
@click.option("--email", required=True)
@click.option("--name", default="cli", show_default=True)
@handles_errors
def tokens_create(email: str, name: str) -> None:
    from core.accounts import services
    from core.accounts import tokens as token_service

    settings = load_settings()
    with _session(settings) as session:
        user = services.find_user_by_email(session, email)
        _token, secret = token_service.create_token(session, user, user, name)
        session.commit()
    click.echo(secret)


# --- serving --------------------------------------------------------------------------------------------

@main.command(help="Serve the web app with gunicorn (production: gunicorn \"web:create_app()\").")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@handles_errors
def web(host: str, port: int, workers: int) -> None:
    from gunicorn.app.base import BaseApplication

    load_settings()  # fail here, in one line, rather than in every worker

    class _Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("accesslog", "-")

        def load(self):
            from web import create_app

            return create_app()

    _Server().run()


@main.command(help="Everything on one machine: SQLite database, migrations, demo data and the web app.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--data-dir", default=DEMO_DATA_DIR, show_default=True, type=click.Path(file_okay=False))
@handles_errors
def demo(host: str, port: int, data_dir: str) -> None:
    from werkzeug.serving import run_simple

    from migrations import runner
    from web import create_app

    settings = load_settings(data_dir=data_dir)
    _ensure_sqlite_dir(settings)
    runner.upgrade(settings.effective_database_url)
    report = _seed(settings)
    click.echo(_summary(report))
    click.echo("")
    click.echo(f"LabShare demo: http://{host}:{port}/")
    click.echo(f"data: {settings.effective_database_url}")
    click.echo("demo logins (one per role; more in web/demo/data.toml):")
    shown: set[str] = set()
    for user in report.users:
        role = user["roles"][0]
        if role not in shown:
            shown.add(role)
            click.echo(f"  {role:<12} {user['email']:<28} password: {user['password']}")
    click.echo("")
    run_simple(host, port, create_app(settings), threaded=True, use_reloader=False)
