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
    default_locale: str = "zh_CN"
    timezone: str = "Asia/Shanghai"
    session_cookie_secure: bool = False
    log_level: str = "INFO"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.data_dir).resolve() / 'labshare.db'}"

    @property
    def is_production(self) -> bool:
        return self.env == "production"


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
    except ArgumentError:
        problems["database_url"] = f"not a database URL: {s.database_url!r}"
    mqtt = urlsplit(s.mqtt_url)
    if mqtt.scheme not in ("mqtt", "mqtts") or not mqtt.hostname:
        problems["mqtt_url"] = f"expected mqtt://host:port, got {s.mqtt_url!r}"
    else:
        try:
            mqtt.port  # noqa: B018 -- raises ValueError on a port out of range
        except ValueError:
            problems["mqtt_url"] = f"bad port in {s.mqtt_url!r}"
    tsdb = urlsplit(s.tsdb_url)
    if tsdb.scheme not in ("sql", "influxdb", "influxdb-v1") or (tsdb.scheme != "sql" and not tsdb.hostname):
        problems["tsdb_url"] = f"expected sql: or influxdb://host:port/db, got {s.tsdb_url!r}"
    if s.default_locale not in LOCALES:
        problems["default_locale"] = f"must be one of {', '.join(LOCALES)}, got {s.default_locale!r}"
    try:
        zone(s.timezone)
    except ValueError:
        problems["timezone"] = f"unknown time zone {s.timezone!r}"
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
        except tomllib.TOMLDecodeError as exc:
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
