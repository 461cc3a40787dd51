"""Settings from `LABSHARE_*` environment variables or one TOML file, validated, with demo defaults.

Precedence: environment variable, then the TOML file named by `LABSHARE_CONFIG`, then the default.
Every setting has a safe default for the demo; production refuses the demo secret key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from core.timeutil import zone

ENV_PREFIX = "LABSHARE_"
DEMO_SECRET_KEY = "labshare-demo-secret-key-do-not-use-in-production"  # noqa: S105 -- public on purpose
ENVIRONMENTS = ("demo", "development", "test", "production")
LOCALES = ("zh_CN", "en")


class SettingsError(ValueError):
    """Invalid configuration; the message names every offending variable, one per line."""

    def __init__(self, problems: dict[str, str]):
        self.problems = problems
        super().__init__("; ".join(f"{ENV_PREFIX}{k.upper()}: {v}" for k, v in problems.items()))


@dataclass(frozen=True)
class Settings:
    env: str = "demo"
    secret_key: str = DEMO_SECRET_KEY
    data_dir: str = "instance"
    database_url: str = ""  # empty: a SQLite file in data_dir
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    tsdb_url: str = "sql:"  # "sql:" = the embedded table in the relational database
    mqtt_protocol: str = "5"  # the ingest's MQTT version: 5, or 311 for brokers that only speak 3.1.1
    spool_max_mb: str = "1024"  # the ingest's disk spool (data_dir/spool) while the time-series store is down
    default_locale: str = "zh_CN"
    timezone: str = "Asia/Shanghai"
    session_cookie_secure: bool = False
    log_level: str = "INFO"
    smtp_host: str = ""  # empty: e-mails wait in the outbox (outbound_email) and nothing is sent
    smtp_port: str = "25"
    smtp_sender: str = "LabShare <noreply@labshare.localhost>"
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    public_url: str = "http://127.0.0.1:5000"  # for links in e-mails and feeds made outside a request

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.data_dir).resolve() / 'labshare.db'}"

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def smtp(self):
        """SMTP settings for core.mail, or None when no server is configured."""
        from core.mail import SmtpSettings

        if not self.smtp_host:
            return None
        return SmtpSettings(host=self.smtp_host, port=int(self.smtp_port), sender=self.smtp_sender,
                            username=self.smtp_username, password=self.smtp_password, starttls=self.smtp_starttls)


_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _coerce(name: str, raw: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        key = str(raw).strip().lower()
        if key not in _BOOL:
            raise ValueError(f"expected true or false, got {raw!r}")
        return _BOOL[key]
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {raw!r}")
    return raw.strip()


def _check(s: Settings) -> dict[str, str]:
    problems: dict[str, str] = {}
    if s.env not in ENVIRONMENTS:
        problems["env"] = f"must be one of {', '.join(ENVIRONMENTS)}, got {s.env!r}"
    if s.is_production and s.secret_key == DEMO_SECRET_KEY:
        problems["secret_key"] = "production refuses the demo secret key; set a random one of 32+ characters"  # noqa: S105
    elif len(s.secret_key) < 32:
        problems["secret_key"] = "must have at least 32 characters"  # noqa: S105
    try:
        backend = make_url(s.effective_database_url).get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            problems["database_url"] = f"only sqlite and postgresql are supported, got {backend!r}"
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        problems["database_url"] = f"not a database URL: {s.database_url!r}"
    try:
        mqtt = urlsplit(s.mqtt_url)
        mqtt_ok = mqtt.scheme in ("mqtt", "mqtts") and bool(mqtt.hostname)
    except ValueError:  # urlsplit refuses e.g. an unclosed [IPv6 bracket
        mqtt_ok = False
    if not mqtt_ok:
        problems["mqtt_url"] = f"expected mqtt://host:port, got {s.mqtt_url!r}"
    else:
        try:
            mqtt.port  # noqa: B018 -- raises ValueError on a port out of range
        except ValueError:
            problems["mqtt_url"] = f"bad port in {s.mqtt_url!r}"
    try:
        tsdb = urlsplit(s.tsdb_url)
        tsdb_ok = tsdb.scheme == "sql" or (tsdb.scheme in ("influxdb", "influxdb-v1") and bool(tsdb.hostname))
        tsdb.port  # noqa: B018 -- raises ValueError on a port out of range
    except ValueError:
        tsdb_ok = False
    if not tsdb_ok:
        problems["tsdb_url"] = f"expected sql: or influxdb://host:port/db, got {s.tsdb_url!r}"
    if s.mqtt_protocol not in ("5", "311"):
        problems["mqtt_protocol"] = f"must be 5 or 311, got {s.mqtt_protocol!r}"
    if not s.spool_max_mb.isdigit() or not 0 < int(s.spool_max_mb) <= 1_000_000:
        problems["spool_max_mb"] = f"must be a number of megabytes (1 to 1000000), got {s.spool_max_mb!r}"
    if s.default_locale not in LOCALES:
        problems["default_locale"] = f"must be one of {', '.join(LOCALES)}, got {s.default_locale!r}"
    try:
        zone(s.timezone)
    except ValueError:
        problems["timezone"] = f"unknown time zone {s.timezone!r}"
    if not s.smtp_port.isdigit() or not 0 < int(s.smtp_port) < 65536:
        problems["smtp_port"] = f"must be a port number, got {s.smtp_port!r}"
    if "@" not in s.smtp_sender:
        problems["smtp_sender"] = f"must contain an e-mail address, got {s.smtp_sender!r}"
    if urlsplit(s.public_url).scheme not in ("http", "https"):
        problems["public_url"] = f"expected http(s)://host, got {s.public_url!r}"
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems["log_level"] = f"must be DEBUG, INFO, WARNING or ERROR, got {s.log_level!r}"
    return problems


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment (and its TOML file), then `overrides`; SettingsError if invalid."""
    environ = os.environ if environ is None else environ
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}

    config_path = environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        try:
            with open(config_path, "rb") as fh:
                file_values = tomllib.load(fh)
        except OSError as exc:
            raise SettingsError({"config": f"cannot read {config_path}: {exc.strerror}"}) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # TOML files are UTF-8
            raise SettingsError({"config": f"{config_path} is not valid TOML: {exc}"}) from None
        for key, raw in file_values.items():
            if key not in known:
                problems[key] = f"unknown setting in {config_path}"
            else:
                values[key] = raw
    for key in known:
        env_key = ENV_PREFIX + key.upper()
        if env_key in environ:
            values[key] = environ[env_key]
    if unknown := set(overrides) - set(known):
        raise SettingsError(dict.fromkeys(sorted(unknown), "unknown setting"))
    values.update({k: v for k, v in overrides.items() if v is not None})

    coerced: dict[str, Any] = {}
    for key, raw in values.items():
        try:
            coerced[key] = _coerce(key, raw, known[key].default)
        except ValueError as exc:
            problems[key] = str(exc)
    if problems:
        raise SettingsError(problems)
    settings = Settings(**coerced)
    if problems := _check(settings):
        raise SettingsError(problems)
    return settings
