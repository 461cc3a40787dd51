"""The `labshare` command line: thin wrappers over the services, one commit per command.

Every command exits non-zero with a one-line reason on error (in the configured language).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path

import click
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.errors import DomainError, translate_message
from core.i18n import gettext_for
from core.settings import Settings, SettingsError, load_settings

DEMO_DATA_DIR = "labshare-demo"
MAX_ID = 2**31 - 1  # ids are 32-bit integer columns; a longer number cannot be one


def _gettext(settings: Settings | None):
    return gettext_for(settings.default_locale if settings else "zh_CN")


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


class OneLineErrors(click.Group):
    """Usage errors as one line (`Error: …`) and exit 2, like every other failure of the CLI."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Abort:
            _fail("aborted", 1)
        except click.ClickException as exc:
            _fail(exc.format_message().replace("\n", " "), exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


@click.group(cls=OneLineErrors, help="LabShare: shared large research instruments and pilot lines.")
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


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    from core.db import make_engine, make_sessionmaker

    # The engine lives as long as the command's unit of work; disposing it closes its pooled connections.
    engine = make_engine(settings.effective_database_url)
    try:
        with make_sessionmaker(engine)() as session:
            yield session
    finally:
        engine.dispose()


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
    from core.db import begin_write
    from web.demo.history import seed_demo_history
    from web.demo.seed import item_count, load_data, seed_demo, seed_demo_billing, seed_demo_bookings

    data = load_data()
    with _session(settings) as session, click.progressbar(length=item_count(data), label="demo data",
                                                          file=sys.stderr) as bar:
        begin_write(session)  # granting vouchers locks rows; on SQLite that is the write lock, taken first
        report = seed_demo(session, data, progress=bar.update)
        bookings = seed_demo_bookings(session)
        if bookings:
            report.created["reservations"] = bookings
        for kind, count in seed_demo_billing(session).items():
            if count:
                report.created[kind] = count
        for kind, count in seed_demo_history(session).items():  # after the rate cards: it closes past months
            if count:
                report.created[kind] = count
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
        # A credit code may be all digits, so look it up first; only then read the reference as an id.
        ref = org_ref.strip().upper()
        org = session.scalar(select(Organisation).where(Organisation.credit_code == ref))
        if org is None and ref.isdigit() and int(ref) <= MAX_ID:
            org = session.get(Organisation, int(ref))
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
@click.option("--no-live", is_flag=True, help="Do not start the MQTT broker, the ingest and the simulated devices.")
@handles_errors
def demo(host: str, port: int, data_dir: str, no_live: bool) -> None:
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
    app = create_app(settings)
    lab = None
    if not no_live:
        from web.demo.live import LiveLab

        lab = LiveLab(settings, app.extensions["labshare.engine"])
        click.echo(lab.start())
        app.extensions["labshare.ingest_registry"] = lab.metrics.registry  # served by /metrics
    click.echo("")
    try:
        run_simple(host, port, app, threaded=True, use_reloader=False)
    finally:
        if lab is not None:
            lab.stop()


# --- e-mail and reminders ----------------------------------------------------------------------------------

@main.group(help="Outgoing e-mail (the outbox).")
def mail() -> None:
    pass


@mail.command("send", help="Send queued e-mails over SMTP (LABSHARE_SMTP_*); --every keeps running.")
@click.option("--every", "every_s", type=click.FloatRange(min=1), help="Repeat every N seconds until stopped.")
@handles_errors
def mail_send(every_s: float | None) -> None:
    import time

    from core.mail import send_pending

    settings = load_settings()
    smtp = settings.smtp()
    if smtp is None:
        _fail("no SMTP server configured: set LABSHARE_SMTP_HOST", 2)
    while True:
        with _session(settings) as session:
            sent, failed = send_pending(session, smtp)
        click.echo(f"sent {sent}, failed {failed}")
        if every_s is None:
            return
        time.sleep(every_s)


@main.group(help="Reservations.")
def reservations() -> None:
    pass


@reservations.command("remind", help="Queue reminder e-mails for confirmed reservations starting soon.")
@click.option("--hours", default=24, show_default=True, type=click.IntRange(1, 24 * 14))
@handles_errors
def reservations_remind(hours: int) -> None:
    from datetime import timedelta

    from booking.notifications import send_reminders

    with _session(load_settings()) as session:
        count = send_reminders(session, ahead=timedelta(hours=hours))
        session.commit()
    click.echo(f"{count} reminders queued")


# --- ingest -------------------------------------------------------------------------------------------------

@main.command(help="Consume device telemetry from LABSHARE_MQTT_URL into the database and the time-series store "
                   "until SIGTERM, which drains and stops.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 32),
              help="Worker processes sharing one subscription.")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 65535))
@click.option("--batch-wait", default=0.1, show_default=True, type=click.FloatRange(0.0, 10.0),
              help="Seconds a message waits for its batch to fill.")
@click.option("--client-id", default="labshare-ingest", show_default=True,
              help="MQTT client id (a persistent session is kept under it; workers add -1, -2, …).")
@click.option("--no-shared", is_flag=True, help="Subscribe without $share (brokers without shared subscriptions).")
@click.option("--metrics-port", type=click.IntRange(1, 65535),
              help="Serve Prometheus metrics on 127.0.0.1:PORT (workers on consecutive ports).")
@handles_errors
def ingest(workers, batch_size, batch_wait, client_id, no_shared, metrics_port) -> None:
    import logging

    from telemetry.service import ingest_config, run_many

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = ingest_config(settings, client_id=client_id, batch_size=batch_size, batch_wait_s=batch_wait,
                               shared=not no_shared)
    except ValueError as exc:
        _fail(str(exc), 2)
    run_many(settings, config, workers, metrics_port)


# --- billing ------------------------------------------------------------------------------------------------

BILLING_PROGRESS_FROM = 2000  # items; fewer are priced in a moment


@main.group(help="Billing periods: reconciliation, charges and statements.")
def billing() -> None:
    pass


def _billing_actor(session: Session, email: str | None):
    """The finance user a command acts for (--by), or None: the operator of the command line."""
    from sqlalchemy import select

    from core.accounts.models import User
    from core.db import begin_write
    from core.errors import NotFound

    begin_write(session)  # SQLite: the write lock before the first statement, as the services need
    if email is None:
        return None
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFound("user", email)
    return user


@billing.command("reconcile", help="Pair the month's reservations with measured use; exceptions go to the lab "
                                   "managers. Running it again refreshes what changed.")
@click.option("--month", required=True, metavar="YYYY-MM")
@click.option("--by", "by_email", metavar="EMAIL", help="The finance user to record as the actor.")
@handles_errors
def billing_reconcile(month: str, by_email: str | None) -> None:
    from billing.reconcile import reconcile_period

    with _session(load_settings()) as session:
        report = reconcile_period(session, _billing_actor(session, by_email), month)
        session.commit()
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report.by_kind.items())) or "nothing to reconcile"
    click.echo(f"reconciled {month}: {kinds}; {report.open_exceptions} open exceptions")


@billing.command("close-period", help="Reconcile a finished month and issue its charges and one statement per "
                                      "organisation; refused while exceptions are open, and once closed.")
@click.option("--month", required=True, metavar="YYYY-MM")
@click.option("--by", "by_email", metavar="EMAIL", help="The finance user to record as the actor.")
@handles_errors
def billing_close_period(month: str, by_email: str | None) -> None:
    from billing.charges import close_period
    from core.money import format_cny

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if total < BILLING_PROGRESS_FROM:
            return  # a few seconds at most: no bar
        if bar is None:
            bar = click.progressbar(length=total, label="charges", file=sys.stderr)
            bar.__enter__()
        bar.update(done - bar.pos)

    with _session(load_settings()) as session:
        try:
            report = close_period(session, _billing_actor(session, by_email), month, progress=progress)
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
        session.commit()
    numbers = f" ({report.statement_numbers[0]} … {report.statement_numbers[-1]})" if report.statement_numbers else ""
    click.echo(f"closed {report.month}: {report.charges} charges, {report.waived} waived, "
               f"{report.statements} statements{numbers}, total {format_cny(report.total, symbol=False)} CNY")


# --- devices ------------------------------------------------------------------------------------------------

@main.group(help="The device registry and the broker's credentials.")
def devices() -> None:
    pass


@devices.command("add", help="Register a device and print its broker password (shown only this once).")
@click.option("--id", "device_id", required=True, help="Device id: the MQTT topic level and broker user name.")
@click.option("--resource", "resource_id", required=True, type=int, help="Resource id the device belongs to.")
@click.option("--source", "usage_source", default="status", show_default=True,
              type=click.Choice(["events", "status", "power"]), help="How its usage is measured.")
@click.option("--threshold-w", "power_threshold_w", help="Power threshold in watts (--source power).")
@click.option("--debounce-s", default=60, show_default=True, type=int)
@click.option("--heartbeat-s", default=300, show_default=True, type=int)
@click.option("--description", default="")
@handles_errors
def devices_add(device_id, resource_id, usage_source, power_threshold_w, debounce_s, heartbeat_s,
                description) -> None:
    from devices.registry import DeviceData, add_device

    with _session(load_settings()) as session:
        device, secret = add_device(session, None, DeviceData(
            device_id=device_id, resource_id=resource_id, usage_source=usage_source, description=description,
            power_threshold_w=power_threshold_w, debounce_s=debounce_s, heartbeat_timeout_s=heartbeat_s))
        session.commit()
    click.echo(f"device {device.device_id} registered; broker user {device.device_id}, password (shown once):",
               err=True)
    click.echo(secret)


@devices.command("export-mosquitto", help="Write Mosquitto's password file and ACL (DIR/passwd, DIR/acl).")
@click.argument("directory", type=click.Path(file_okay=False))
@handles_errors
def devices_export_mosquitto(directory: str) -> None:
    from urllib.parse import unquote, urlsplit

    from devices.registry import export_mosquitto

    settings = load_settings()
    mqtt = urlsplit(settings.mqtt_url)
    if not mqtt.username or not mqtt.password:
        _fail("LABSHARE_MQTT_URL must carry the ingest's user and password (mqtt://user:password@host:port)", 2)
    with _session(settings) as session:
        passwd, acl, count = export_mosquitto(session, Path(directory), ingest_username=unquote(mqtt.username),
                                              ingest_password=unquote(mqtt.password))
    click.echo(f"wrote {passwd} and {acl} ({count} devices + the ingest); send Mosquitto SIGHUP to reload")


# --- simulator ------------------------------------------------------------------------------------------------

@main.command(help="Virtual instruments (SEM, HPLC, fermenter, generic) publishing per the MQTT contract.")
@click.option("--mqtt-url", help="Broker URL, mqtt://host:port (default: LABSHARE_MQTT_URL).")
@click.option("--device", "device_specs", multiple=True, metavar="ID:TYPE[:PASSWORD]",
              help="A device to simulate; TYPE is sem, hplc, fermenter or generic. Repeatable.")
@click.option("--devices", "device_count", type=click.IntRange(1, 10_000),
              help="N more devices named sim-TYPE-NNN, the types taken in turn.")
@click.option("--from-registry", is_flag=True, help="Every enabled device of the registry (LABSHARE_DATABASE_URL).")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False),
              help="device_id:password lines for --from-registry (the registry keeps only hashes).")
@click.option("--time-scale", default=1.0, show_default=True, type=click.FloatRange(0, 1e6, min_open=True),
              help="Simulated seconds per real second (60: one simulated minute per second).")
@click.option("--duration", "duration_s", type=click.FloatRange(0, min_open=True),
              help="Stop after this many real seconds (default: until Ctrl-C).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--prefix", default="labshare/v1", show_default=True)
@click.option("--fault-rate", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Chance that a run ends in a fault.")
@click.option("--outages-per-day", default=2.0, show_default=True, type=click.FloatRange(0),
              help="Abrupt disconnects per device and simulated day (then store-and-forward).")
@click.option("--rate", "rate_hz", type=click.FloatRange(0, 1000, min_open=True),
              help="Metrics samples per simulated second (default: per type, every 10 or 60 s).")
@click.option("--protocol", default="5", show_default=True, type=click.Choice(["5", "3.1.1"]))
@click.option("--quiet", is_flag=True, help="No summary line every few seconds.")
@handles_errors
def simulate(mqtt_url, device_specs, device_count, from_registry, password_file, time_scale, duration_s, seed,
             prefix, fault_rate, outages_per_day, rate_hz, protocol, quiet) -> None:
    from telemetry import simulator as sim

    try:
        specs = [sim.parse_device_spec(text) for text in device_specs]
        if device_count:
            specs += sim.numbered_specs(device_count)
        if from_registry:
            passwords = sim.parse_password_file(Path(password_file).read_text("utf-8")) if password_file else {}
            with _session(load_settings()) as session:
                specs += sim.specs_from_registry(session, passwords)
        if not specs:
            _fail("no devices: give --device ID:TYPE, --devices N or --from-registry", 2)
        url = mqtt_url or load_settings().mqtt_url
        simulator = sim.Simulator(url, specs, prefix=prefix, time_scale=time_scale, seed=seed, fault_rate=fault_rate,
                                  outage_rate_per_day=outages_per_day, protocol=protocol,
                                  sample_interval_s=1 / rate_hz if rate_hz else None)
        sim.check_broker(url)
    except ValueError as exc:
        _fail(str(exc), 2)
    except OSError as exc:
        _fail(f"cannot reach the MQTT broker: {exc}")
    _run_simulator(simulator, duration_s, quiet)


def _run_simulator(simulator, duration_s: float | None, quiet: bool) -> None:
    thread = simulator.start(duration_s)
    shown: set[str] = set()
    try:
        while thread.is_alive():
            thread.join(5.0)
            if not quiet and thread.is_alive():
                click.echo(simulator.summary())
                for error in set(simulator.errors()) - shown:  # each problem once, not every 5 s
                    click.echo(f"warning: {error}", err=True)
                    shown.add(error)
    except KeyboardInterrupt:
        simulator.stop()
    click.echo(f"stopped; {simulator.summary()}")


# --- bulk imports ---------------------------------------------------------------------------------------------

IMPORT_PROGRESS_FROM = 200  # rows; fewer are checked in a moment


@main.command("import", help="Import resources, organisations or users from an .xlsx or .csv template file, all "
                             "rows or none. --dry-run only checks and lists every row's problems.")
@click.argument("kind", type=click.Choice(["resources", "organisations", "users"]))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every row; write nothing.")
@click.option("--as", "--by", "as_email", required=True, metavar="EMAIL",
              help="The user the import is done as (lab managers: their facilities only; admins: anything).")
@click.option("--passwords-out", type=click.Path(dir_okay=False, path_type=Path),
              help="users: write the initial passwords to this CSV file (mode 600) instead of standard output.")
@handles_errors
def import_command(kind: str, file: Path, dry_run: bool, as_email: str, passwords_out: Path | None) -> None:
    from booking.imports import import_resources
    from core.accounts import services
    from core.accounts.imports import import_organisations, import_users
    from core.db import begin_write
    from core.tabular import MAX_BYTES, ImportRejected, rows_csv

    run = {"resources": import_resources, "organisations": import_organisations, "users": import_users}[kind]
    settings = load_settings()
    with file.open("rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if total < IMPORT_PROGRESS_FROM:
            return
        if bar is None:
            bar = click.progressbar(length=total, label="checking rows", file=sys.stderr)
            bar.__enter__()
        bar.update(done - bar.pos)

    with _session(settings) as session:
        begin_write(session)
        actor = services.find_user_by_email(session, as_email)
        try:
            result = run(session, actor, data, file.name, dry_run=dry_run, progress=progress)
        except ImportRejected as exc:
            result = exc.result
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
        if not result.ok:
            session.rollback()
            _print_import_problems(result, settings)
            _fail(f"{len(result.errors)} problems in {result.rows} rows of {file.name}; nothing was imported")
        if dry_run:
            session.rollback()
            click.echo(f"{result.rows} rows checked: no problems (dry run, nothing written)")
            return
        session.commit()
    click.echo(f"{result.created} {kind} imported from {file.name}")
    if result.credentials:
        csv_bytes = rows_csv(["email", "initial_password"], result.credentials)
        if passwords_out is not None:
            fd = os.open(passwords_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(csv_bytes)
            click.echo(f"initial passwords written to {passwords_out} (shown nowhere else; hand them over securely)")
        else:
            click.echo(csv_bytes.decode("utf-8-sig"), nl=False)


def _print_import_problems(result, settings: Settings) -> None:
    """Every problem on its own line: row (as Excel numbers it), column header, message."""
    gettext = _gettext(settings)
    locale = settings.default_locale
    for error in result.errors:
        column = result.column(error.column)
        header = column.label(locale) if column else (error.column or "")
        click.echo(f"row {error.row}\t{header}\t{translate_message(error.message, gettext)}")


# --- open-sharing reports -------------------------------------------------------------------------------------

REPORT_PROGRESS_FROM = 500  # resources; fewer are counted in a moment


@main.group(help="Open-sharing reports: effective and external hours, sharing rate and income per instrument.")
def reports() -> None:
    pass


@reports.command("sharing", help="The per-instrument open-sharing report of a year (or --start/--end days) as "
                                 "XLSX or CSV, from measured usage sessions and issued charges.")
@click.option("--year", type=click.IntRange(1900, 2999), help="A calendar year (each facility's local days).")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), help="First day, instead of --year.")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), help="Last day (inclusive), with --start.")
@click.option("--format", "fmt", type=click.Choice(["xlsx", "csv"]), default="xlsx", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Where to write it (default: sharing-YEAR.FORMAT in the current directory; - for stdout).")
@click.option("--facility", "facility_id", type=click.IntRange(1, MAX_ID), help="Only this facility's resources.")
@click.option("--city", metavar="CODE", help="Only facilities in this 市州 (6-digit code, e.g. 510100).")
@click.option("--locale", type=click.Choice(["zh_CN", "en"]), help="Column headers' language (default: the "
                                                                    "configured one).")
@handles_errors
def reports_sharing(year: int | None, start, end, fmt: str, output: Path | None, facility_id: int | None,
                    city: str | None, locale: str | None) -> None:
    from reports import exports
    from reports.sharing import ReportScope, compute, year_range

    if year is not None and (start or end):
        raise click.UsageError("give --year or --start/--end, not both")
    if year is None and not (start and end):
        raise click.UsageError("give --year, or --start and --end")
    first, last = year_range(year) if year is not None else (start.date(), end.date())
    if last < first:
        raise click.UsageError("--end is before --start")
    settings = load_settings()
    locale = locale or settings.default_locale
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if total < REPORT_PROGRESS_FROM:
            return
        if bar is None:
            bar = click.progressbar(length=total, label="instruments", file=sys.stderr)
            bar.__enter__()
        bar.update(done - bar.pos)

    scope = ReportScope(first, last, facility_ids=None if facility_id is None else frozenset({facility_id}),
                        cities=None if not city else frozenset({city}))
    with _session(settings) as session:
        try:
            report = compute(session, scope, progress=progress)
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
    body = (exports.report_xlsx if fmt == "xlsx" else exports.report_csv)(report, locale=locale)
    name = f"sharing-{year}" if year is not None else f"sharing-{first.isoformat()}-{last.isoformat()}"
    if output is not None and str(output) == "-":
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
        return
    path = output or Path(f"{name}.{fmt}")
    path.write_bytes(body)
    total = report.total
    click.echo(f"{path}: {total.instruments} instruments, {total.effective_hours} effective hours, "
               f"{total.external_hours} external, external income {total.external_income} CNY", err=True)
