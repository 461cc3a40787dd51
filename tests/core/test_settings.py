"""Settings: demo defaults, environment over TOML file over default, and every invalid value refused by name."""

import secrets
from pathlib import Path

import pytest
from sqlalchemy import make_url

from core.settings import DEMO_SECRET_KEY, Settings, SettingsError, load_settings

RANDOM_KEY = secrets.token_urlsafe(32)


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "labshare.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def refused(environ: dict[str, str], **overrides) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=environ, **overrides)
    return caught.value


def test_demo_defaults_without_any_configuration():
    settings = load_settings(environ={})

    assert settings == Settings()
    assert settings.env == "demo"
    assert not settings.is_production
    assert settings.secret_key == DEMO_SECRET_KEY
    assert settings.data_dir == "instance"
    assert settings.database_url == ""
    assert settings.mqtt_url == "mqtt://127.0.0.1:1883"
    assert settings.tsdb_url == "sql:"
    assert settings.default_locale == "zh_CN"
    assert settings.timezone == "Asia/Shanghai"
    assert settings.session_cookie_secure is False
    assert settings.log_level == "INFO"


@pytest.mark.parametrize(("variable", "raw", "attribute", "expected"), [
    ("LABSHARE_ENV", "development", "env", "development"),
    ("LABSHARE_ENV", " test ", "env", "test"),
    ("LABSHARE_SECRET_KEY", "k" * 32, "secret_key", "k" * 32),
    ("LABSHARE_DATA_DIR", "/var/lib/labshare", "data_dir", "/var/lib/labshare"),
    ("LABSHARE_DATABASE_URL", "postgresql+psycopg://labshare@db.example:5432/labshare", "database_url",
     "postgresql+psycopg://labshare@db.example:5432/labshare"),
    ("LABSHARE_DATABASE_URL", "sqlite:////srv/labshare.db", "database_url", "sqlite:////srv/labshare.db"),
    ("LABSHARE_MQTT_URL", "mqtts://broker.example:8883", "mqtt_url", "mqtts://broker.example:8883"),
    ("LABSHARE_TSDB_URL", "influxdb://tsdb.example:8086/labshare", "tsdb_url", "influxdb://tsdb.example:8086/labshare"),
    ("LABSHARE_TSDB_URL", "influxdb-v1://tsdb.example/labshare", "tsdb_url", "influxdb-v1://tsdb.example/labshare"),
    ("LABSHARE_DEFAULT_LOCALE", "en", "default_locale", "en"),
    ("LABSHARE_TIMEZONE", "UTC", "timezone", "UTC"),
    ("LABSHARE_TIMEZONE", "Europe/Berlin", "timezone", "Europe/Berlin"),
    ("LABSHARE_LOG_LEVEL", "debug", "log_level", "debug"),
    ("LABSHARE_SESSION_COOKIE_SECURE", "1", "session_cookie_secure", True),
    ("LABSHARE_SESSION_COOKIE_SECURE", "TRUE", "session_cookie_secure", True),
    ("LABSHARE_SESSION_COOKIE_SECURE", " yes ", "session_cookie_secure", True),
    ("LABSHARE_SESSION_COOKIE_SECURE", "on", "session_cookie_secure", True),
    ("LABSHARE_SESSION_COOKIE_SECURE", "0", "session_cookie_secure", False),
    ("LABSHARE_SESSION_COOKIE_SECURE", "false", "session_cookie_secure", False),
    ("LABSHARE_SESSION_COOKIE_SECURE", "no", "session_cookie_secure", False),
    ("LABSHARE_SESSION_COOKIE_SECURE", "off", "session_cookie_secure", False),
])
def test_an_environment_variable_overrides_the_default(variable, raw, attribute, expected):
    settings = load_settings(environ={variable: raw})

    assert getattr(settings, attribute) == expected
    untouched = {name: value for name, value in vars(Settings()).items() if name != attribute}
    assert {name: getattr(settings, name) for name in untouched} == untouched


def test_variables_without_the_prefix_are_ignored():
    assert load_settings(environ={"ENV": "nonsense", "SECRET_KEY": "x", "labshare_env": "nonsense"}) == Settings()


def test_the_toml_file_named_by_labshare_config_is_read(tmp_path):
    config = write_config(tmp_path, f"""
env = "production"
secret_key = "{RANDOM_KEY}"
database_url = "postgresql+psycopg://labshare@db.example/labshare"
default_locale = "en"
session_cookie_secure = true
""")
    settings = load_settings(environ={"LABSHARE_CONFIG": config})

    assert settings.is_production
    assert settings.secret_key == RANDOM_KEY
    assert settings.database_url == "postgresql+psycopg://labshare@db.example/labshare"
    assert settings.default_locale == "en"
    assert settings.session_cookie_secure is True
    assert settings.mqtt_url == Settings.mqtt_url  # not in the file: the default


def test_the_environment_takes_precedence_over_the_file_and_overrides_over_both(tmp_path):
    config = write_config(tmp_path, 'default_locale = "en"\ntimezone = "Europe/Berlin"\nlog_level = "WARNING"\n'
                                    'session_cookie_secure = "yes"\n')
    environ = {"LABSHARE_CONFIG": config, "LABSHARE_DEFAULT_LOCALE": "zh_CN", "LABSHARE_TIMEZONE": "UTC",
               "LABSHARE_SESSION_COOKIE_SECURE": "off"}

    settings = load_settings(environ=environ)
    assert settings.default_locale == "zh_CN"
    assert settings.timezone == "UTC"
    assert settings.session_cookie_secure is False
    assert settings.log_level == "WARNING"  # only in the file

    assert load_settings(environ=environ, timezone="Asia/Tokyo").timezone == "Asia/Tokyo"


def test_a_valid_value_in_the_file_does_not_mask_an_invalid_one_in_the_environment(tmp_path):
    config = write_config(tmp_path, 'default_locale = "en"\n')

    error = refused({"LABSHARE_CONFIG": config, "LABSHARE_DEFAULT_LOCALE": "fr"})

    assert set(error.problems) == {"default_locale"}


@pytest.mark.parametrize(("variable", "raw"), [
    pytest.param("LABSHARE_ENV", "staging", id="unknown-env"),
    pytest.param("LABSHARE_ENV", "", id="empty-env"),
    pytest.param("LABSHARE_SECRET_KEY", "too-short", id="short-secret"),
    pytest.param("LABSHARE_SECRET_KEY", "k" * 31, id="secret-one-short"),
    pytest.param("LABSHARE_SECRET_KEY", "   " + "k" * 20 + "          ", id="secret-short-after-strip"),
    pytest.param("LABSHARE_DATABASE_URL", "not a url", id="database-url-garbage"),
    pytest.param("LABSHARE_DATABASE_URL", "postgresql://labshare@db.example:port/labshare", id="database-url-port"),
    pytest.param("LABSHARE_DATABASE_URL", "mysql://labshare@db.example/labshare", id="database-url-mysql"),
    pytest.param("LABSHARE_DATABASE_URL", "mysql+pymysql://labshare@db.example/labshare", id="database-url-pymysql"),
    pytest.param("LABSHARE_MQTT_URL", "http://broker.example:1883", id="mqtt-scheme"),
    pytest.param("LABSHARE_MQTT_URL", "mqtt://", id="mqtt-no-host"),
    pytest.param("LABSHARE_MQTT_URL", "broker.example:1883", id="mqtt-no-scheme"),
    pytest.param("LABSHARE_MQTT_URL", "mqtt://broker.example:99999", id="mqtt-port-range"),
    pytest.param("LABSHARE_MQTT_URL", "mqtt://broker.example:port", id="mqtt-port-text"),
    pytest.param("LABSHARE_MQTT_URL", "mqtt://[::1", id="mqtt-unparsable"),
    pytest.param("LABSHARE_TSDB_URL", "postgres://tsdb.example/db", id="tsdb-scheme"),
    pytest.param("LABSHARE_TSDB_URL", "influxdb://", id="tsdb-no-host"),
    pytest.param("LABSHARE_TSDB_URL", "influxdb://tsdb.example:port/db", id="tsdb-port-text"),
    pytest.param("LABSHARE_TSDB_URL", "influxdb://[::1", id="tsdb-unparsable"),
    pytest.param("LABSHARE_DEFAULT_LOCALE", "fr", id="locale-unknown"),
    pytest.param("LABSHARE_DEFAULT_LOCALE", "zh-CN", id="locale-spelling"),
    pytest.param("LABSHARE_TIMEZONE", "Mars/Olympus_Mons", id="timezone-unknown"),
    pytest.param("LABSHARE_TIMEZONE", "", id="timezone-empty"),
    pytest.param("LABSHARE_TIMEZONE", "../../etc/passwd", id="timezone-path"),
    pytest.param("LABSHARE_TIMEZONE", "America", id="timezone-directory"),
    pytest.param("LABSHARE_SESSION_COOKIE_SECURE", "maybe", id="bool-word"),
    pytest.param("LABSHARE_SESSION_COOKIE_SECURE", "", id="bool-empty"),
    pytest.param("LABSHARE_SESSION_COOKIE_SECURE", "2", id="bool-number"),
    pytest.param("LABSHARE_LOG_LEVEL", "LOUD", id="log-level"),
])
def test_an_invalid_value_is_refused_naming_its_variable(variable, raw):
    error = refused({variable: raw})

    assert set(error.problems) == {variable.removeprefix("LABSHARE_").lower()}
    assert str(error).startswith(f"{variable}: ")
    assert isinstance(error, ValueError)


def test_every_invalid_variable_is_reported_at_once():
    error = refused({"LABSHARE_ENV": "staging", "LABSHARE_DEFAULT_LOCALE": "fr", "LABSHARE_TIMEZONE": "Nowhere/City"})

    assert set(error.problems) == {"env", "default_locale", "timezone"}
    for variable in ("LABSHARE_ENV", "LABSHARE_DEFAULT_LOCALE", "LABSHARE_TIMEZONE"):
        assert variable in str(error)


def test_production_refuses_the_demo_secret_key():
    for environ in ({"LABSHARE_ENV": "production"},
                    {"LABSHARE_ENV": "production", "LABSHARE_SECRET_KEY": DEMO_SECRET_KEY}):
        error = refused(environ)
        assert set(error.problems) == {"secret_key"}
        assert "LABSHARE_SECRET_KEY" in str(error)
        assert "demo" in str(error)


def test_production_with_a_random_key_is_accepted():
    settings = load_settings(environ={"LABSHARE_ENV": "production", "LABSHARE_SECRET_KEY": RANDOM_KEY})

    assert settings.is_production
    assert settings.secret_key == RANDOM_KEY


def test_the_demo_key_is_fine_outside_production():
    for env in ("demo", "development", "test"):
        assert load_settings(environ={"LABSHARE_ENV": env}).secret_key == DEMO_SECRET_KEY


def test_an_invalid_value_in_the_file_is_refused_naming_its_variable(tmp_path):
    config = write_config(tmp_path, 'mqtt_url = "http://broker.example"\n')

    error = refused({"LABSHARE_CONFIG": config})

    assert set(error.problems) == {"mqtt_url"}
    assert "LABSHARE_MQTT_URL" in str(error)


@pytest.mark.parametrize(("text", "key"), [
    ('secret_key = 12345678901234567890123456789012345\n', "secret_key"),
    ('timezone = ["UTC"]\n', "timezone"),
    ('session_cookie_secure = "perhaps"\n', "session_cookie_secure"),
])
def test_a_value_of_the_wrong_type_in_the_file_is_refused(tmp_path, text, key):
    error = refused({"LABSHARE_CONFIG": write_config(tmp_path, text)})

    assert set(error.problems) == {key}
    assert f"LABSHARE_{key.upper()}" in str(error)


def test_an_unknown_key_in_the_file_is_refused(tmp_path):
    config = write_config(tmp_path, 'default_locale = "en"\nsecret_kye = "typo"\n')

    error = refused({"LABSHARE_CONFIG": config})

    assert set(error.problems) == {"secret_kye"}
    assert "LABSHARE_SECRET_KYE" in str(error)
    assert config in str(error)


def test_an_unknown_table_in_the_file_is_refused(tmp_path):
    config = write_config(tmp_path, '[database]\nurl = "sqlite://"\n')

    assert set(refused({"LABSHARE_CONFIG": config}).problems) == {"database"}


@pytest.mark.parametrize("case", ["missing", "directory", "invalid-toml", "not-utf8"])
def test_an_unreadable_or_invalid_file_is_refused_naming_labshare_config(tmp_path, case):
    if case == "missing":
        config = str(tmp_path / "absent.toml")
    elif case == "directory":
        config = str(tmp_path)
    elif case == "invalid-toml":
        config = write_config(tmp_path, 'env = "demo\nsecret_key = \n')
    else:
        config = str(tmp_path / "latin1.toml")
        Path(config).write_bytes('default_locale = "en" # Zürich\n'.encode("latin-1"))

    error = refused({"LABSHARE_CONFIG": config})

    assert set(error.problems) == {"config"}
    assert str(error).startswith("LABSHARE_CONFIG: ")
    assert config in str(error)


def test_the_default_database_is_a_sqlite_file_in_the_data_dir(tmp_path):
    settings = load_settings(environ={"LABSHARE_DATA_DIR": str(tmp_path / "data")})

    url = make_url(settings.effective_database_url)
    assert url.get_backend_name() == "sqlite"
    assert Path(url.database) == (tmp_path / "data" / "labshare.db").resolve()
    assert Path(url.database).is_absolute()


def test_a_relative_data_dir_is_resolved_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    settings = load_settings(environ={})

    assert Path(make_url(settings.effective_database_url).database) == (tmp_path / "instance" / "labshare.db").resolve()


def test_a_configured_database_url_is_used_as_given():
    url = "postgresql+psycopg://labshare@db.example:5432/labshare"

    assert load_settings(environ={"LABSHARE_DATABASE_URL": url}).effective_database_url == url
