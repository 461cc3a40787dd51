"""Time-series stores: one small interface, an InfluxDB backend and the embedded SQL table of the demo.

Errors say what the caller should do with the batch (design.md §5, delivery):

- `StoreUnavailable` — retry later; the batch is fine. Connection refused or reset, timeouts, HTTP 5xx
  (InfluxDB 1.x answers 500 for an unknown retention policy, too) and 429.
- `StoreMisconfigured(StoreUnavailable)` — also retry later, but nothing will change until an operator
  acts: the database does not exist (HTTP 404, also what a server without /api/v2/write answers) or the
  credentials are refused (401/403). It is a kind of StoreUnavailable on purpose: the points are kept
  (spooled) rather than discarded while the configuration is wrong, and the spool's bound then pushes
  back to the broker.
- `StoreRejected` — the batch itself is bad and will never be accepted (400: unparsable line protocol,
  a field type conflict, points outside the retention policy; other 4xx). A poison batch: retrying it is
  useless, the caller sets it aside (the spool quarantines it) and carries on.

`write` is all-or-nothing from the caller's point of view and idempotent: writing the same points again
changes nothing, and a rewritten point with a new value replaces the old one (last write wins), in both
backends.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from itertools import groupby
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Connection, Engine, and_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from telemetry.models import TelemetryPoint
from telemetry.points import DEVICE_TAG, MEASUREMENT, Point, to_line_protocol

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0


class StoreError(Exception):
    """Base of the store errors; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StoreUnavailable(StoreError):
    """The store cannot take the batch now; keep it and retry later."""


class StoreMisconfigured(StoreUnavailable):
    """Retry later, after an operator fixes the store (missing database, refused credentials)."""


class StoreRejected(StoreError):
    """The store will never accept this batch (a poison batch); do not retry it."""


@runtime_checkable
class TimeSeriesStore(Protocol):
    def write(self, points: Sequence[Point]) -> None:
        """Durably store the points or raise StoreUnavailable / StoreRejected."""

    def query(self, device_id: str, start_ns: int, end_ns: int, fields: Sequence[str] | None = None) -> list[Point]:
        """The device's points with start_ns <= ts_ns < end_ns, ordered by time, each holding the
        requested fields it has (all fields when `fields` is None); points without any are left out."""

    def ping(self) -> bool:
        """True when the store answers."""

    def close(self) -> None:
        """Release connections."""


def classify_http_error(status: int, body: str, what: str) -> StoreError:
    message = f"{what}: HTTP {status}: {body.strip()[:500]}"
    if status >= 500 or status == 429:
        return StoreUnavailable(message, status)
    if status in (401, 403, 404):
        return StoreMisconfigured(message, status)
    return StoreRejected(message, status)


# --------------------------------------------------------------------------------------------------
# InfluxDB
# --------------------------------------------------------------------------------------------------


def influxql_string(text: str) -> str:
    """A single-quoted InfluxQL string literal (the scanner knows the escapes \\\\ and \\')."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influxql_identifier(name: str) -> str:
    """A double-quoted InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxStore:
    """InfluxDB through HTTP. Writes: mode "v2" posts to /api/v2/write with influxdb-client (synchronous,
    so `write` returns only after InfluxDB answered 204; served by 1.8+, 2.x and 3.x), mode "v1" posts the
    same line protocol to /write (InfluxDB 1.x before 1.8). Reads: InfluxQL on /query in both modes."""

    def __init__(
        self,
        url: str,
        database: str,
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        *,
        mode: str = "v2",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if mode not in ("v1", "v2"):
            raise ValueError(f"mode must be 'v1' or 'v2', not {mode!r}")
        if not database:
            raise ValueError("an InfluxDB database name is required")
        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy or None
        self.username = username
        self.password = password
        self.mode = mode
        self.timeout_s = timeout_s
        # InfluxDB is reached directly, never through an http_proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._client: Any = None
        self._write_api: Any = None

    def __repr__(self) -> str:
        return f"InfluxStore({self.url!r}, {self.database!r}, rp={self.retention_policy!r}, mode={self.mode!r})"

    # -- writing --

    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        body = to_line_protocol(points)
        if self.mode == "v2":
            self._write_v2(body)
        else:
            self._write_v1(body)

    def _write_v2(self, body: bytes) -> None:
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        bucket = self.database + (f"/{self.retention_policy}" if self.retention_policy else "")
        try:
            self._v2_write_api().write(bucket=bucket, org="-", record=body, write_precision="ns")
        except ApiException as error:
            raise classify_http_error(error.status or 0, str(error.body or error.reason), "InfluxDB write") from error
        except (Urllib3Error, OSError) as error:
            raise StoreUnavailable(f"InfluxDB write: {error}") from error

    def _v2_write_api(self) -> Any:
        if self._write_api is None:
            from influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS

            token = f"{self.username}:{self.password or ''}" if self.username else ""
            self._client = InfluxDBClient(url=self.url, token=token, org="-", timeout=int(self.timeout_s * 1000))
            self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        return self._write_api

    def _write_v1(self, body: bytes) -> None:
        params = {"db": self.database, "precision": "ns"}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        status, raw = self._request("POST", "/write", params, body, "InfluxDB write")
        if status != 204:
            raise classify_http_error(status, raw.decode(errors="replace"), "InfluxDB write")

    # -- reading --

    def query(self, device_id: str, start_ns: int, end_ns: int, fields: Sequence[str] | None = None) -> list[Point]:
        if "\n" in device_id or "\r" in device_id:
            return []  # no such tag value can have been written (line protocol cannot carry it)
        if fields is not None and not fields:
            return []
        selection = ", ".join(influxql_identifier(f) for f in fields) if fields else "*::field"
        source = influxql_identifier(MEASUREMENT)
        if self.retention_policy:
            source = f"{influxql_identifier(self.database)}.{influxql_identifier(self.retention_policy)}.{source}"
        # Every name and value below is quoted and escaped: no InfluxQL can be injected through them.
        where = f"{influxql_identifier(DEVICE_TAG)} = {influxql_string(device_id)}"
        where += f" AND time >= {int(start_ns)} AND time < {int(end_ns)}"
        influxql = f"SELECT {selection} FROM {source} WHERE {where} ORDER BY time ASC"  # noqa: S608
        result = self._query(influxql)
        points: list[Point] = []
        for statement in result.get("results", []):
            if "error" in statement:
                raise self._statement_error(statement["error"])
            if statement.get("partial"):
                raise StoreRejected("InfluxDB query: the result was cut at the server's max-row-limit; "
                                    "query a shorter time range")
            for series in statement.get("series", []):
                columns = series["columns"]
                for row in series.get("values", []):
                    values = {c: v for c, v in zip(columns[1:], row[1:], strict=True) if v is not None}
                    if values:
                        points.append(Point(MEASUREMENT, {DEVICE_TAG: device_id}, _decoded(values), int(row[0])))
        points.sort(key=lambda p: p.ts_ns)
        return points

    def _statement_error(self, message: str) -> StoreError:
        if message.startswith("database not found") or message.startswith("retention policy not found"):
            return StoreMisconfigured(f"InfluxDB query: {message}")
        return StoreRejected(f"InfluxDB query: {message}")

    def _query(self, influxql: str) -> dict[str, Any]:
        params = {"db": self.database, "q": influxql, "epoch": "ns"}
        status, raw = self._request("GET", "/query", params, None, "InfluxDB query")
        if status != 200:
            raise classify_http_error(status, raw.decode(errors="replace"), "InfluxDB query")
        return json.loads(raw)

    # -- plumbing --

    def _request(
        self, method: str, path: str, params: dict[str, str], body: bytes | None, what: str
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": "text/plain; charset=utf-8"} if body is not None else {}
        if self.username:
            credentials = f"{self.username}:{self.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 (http only)
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()
        except (OSError, http.client.HTTPException) as error:  # refused, reset, timeout, garbled
            raise StoreUnavailable(f"{what}: {getattr(error, 'reason', error)}") from error

    def ping(self) -> bool:
        try:
            status, _ = self._request("GET", "/ping", {}, None, "InfluxDB ping")
        except StoreUnavailable:
            return False
        return status == 204

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = self._write_api = None


def _decoded(values: dict[str, Any]) -> dict[str, float | bool]:
    # JSON gives 5 for the float 5.0; booleans stay booleans.
    return {k: v if isinstance(v, bool) else float(v) for k, v in values.items()}


# --------------------------------------------------------------------------------------------------
# The embedded SQL table
# --------------------------------------------------------------------------------------------------

_ROWS_PER_STATEMENT = 1000  # 5 parameters a row stays well below SQLite's 32,766 variables


class SqlStore:
    """The `telemetry_point` table in the relational database (the demo's time-series store).

    Each point becomes one row per field; the primary key (device_id, field, ts_ns) makes a rewrite an
    upsert, so redelivery changes nothing and a new value replaces the old one, as in InfluxDB. Given an
    Engine, each write is its own committed transaction; given a Connection, it runs in a savepoint of the
    connection's transaction (the caller commits).
    """

    def __init__(self, bind: Engine | Connection) -> None:
        self.bind = bind

    def __repr__(self) -> str:
        return f"SqlStore({self.bind!r})"

    def write(self, points: Sequence[Point]) -> None:
        rows = self._rows(points)
        if not rows:
            return
        table = TelemetryPoint.__table__
        insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(self.bind.dialect.name)
        if insert is None:
            raise StoreRejected(f"SqlStore does not support the {self.bind.dialect.name} dialect")
        try:
            with self._transaction() as connection:
                for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                    statement = insert(table).values(rows[start : start + _ROWS_PER_STATEMENT])
                    statement = statement.on_conflict_do_update(
                        index_elements=["device_id", "field", "ts_ns"],
                        set_={"value": statement.excluded.value, "flag": statement.excluded.flag},
                    )
                    connection.execute(statement)
        except OperationalError as error:  # the database is down or locked: retry later
            raise StoreUnavailable(f"SQL time-series write: {error}") from error

    @staticmethod
    def _rows(points: Sequence[Point]) -> list[dict[str, Any]]:
        # Deduplicate within the batch (last wins): PostgreSQL refuses to upsert one key twice in a statement.
        rows: dict[tuple[str, str, int], dict[str, Any]] = {}
        for point in points:
            if point.measurement != MEASUREMENT or set(point.tags) != {DEVICE_TAG}:
                raise StoreRejected(
                    f"SqlStore keeps only {MEASUREMENT!r} points tagged {DEVICE_TAG!r}, got "
                    f"{point.measurement!r} with tags {sorted(point.tags)}"
                )
            to_line_protocol([point])  # the same validation as InfluxDB's path (ValueError on NaN, …)
            device_id = point.tags[DEVICE_TAG]
            for name, value in point.fields.items():
                is_flag = isinstance(value, bool)
                rows[(device_id, name, point.ts_ns)] = {
                    "device_id": device_id,
                    "field": name,
                    "ts_ns": point.ts_ns,
                    "value": None if is_flag else float(value),
                    "flag": value if is_flag else None,
                }
        return list(rows.values())

    def _transaction(self) -> Any:
        if isinstance(self.bind, Engine):
            return self.bind.begin()
        return _NestedTransaction(self.bind)

    def query(self, device_id: str, start_ns: int, end_ns: int, fields: Sequence[str] | None = None) -> list[Point]:
        table = TelemetryPoint.__table__
        condition = and_(table.c.device_id == device_id, table.c.ts_ns >= start_ns, table.c.ts_ns < end_ns)
        if fields is not None:
            if not fields:
                return []
            condition = and_(condition, table.c.field.in_(list(fields)))
        statement = select(table.c.ts_ns, table.c.field, table.c.value, table.c.flag).where(condition)
        statement = statement.order_by(table.c.ts_ns, table.c.field)
        try:
            if isinstance(self.bind, Engine):
                with self.bind.connect() as connection:
                    rows = connection.execute(statement).all()
            else:
                rows = self.bind.execute(statement).all()
        except OperationalError as error:
            raise StoreUnavailable(f"SQL time-series query: {error}") from error
        return [
            Point(
                MEASUREMENT,
                {DEVICE_TAG: device_id},
                {row.field: row.flag if row.value is None else row.value for row in group},
                ts_ns,
            )
            for ts_ns, group in groupby(rows, key=lambda row: row.ts_ns)
        ]

    def ping(self) -> bool:
        try:
            if isinstance(self.bind, Engine):
                with self.bind.connect() as connection:
                    connection.execute(text("SELECT 1"))
            else:
                self.bind.execute(text("SELECT 1"))
        except SQLAlchemyError:
            log.debug("SQL time-series ping failed", exc_info=True)
            return False
        return True

    def close(self) -> None:
        """The engine belongs to the caller; nothing to release."""


class _NestedTransaction:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def __enter__(self) -> Connection:
        self._savepoint = self.connection.begin_nested()
        return self.connection

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if exc_type is None:
            self._savepoint.commit()
        else:
            self._savepoint.rollback()



# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------

_INFLUX_SCHEMES = {"influxdb": "v2", "influxdb-v1": "v1"}
_INFLUX_OPTIONS = {"rp", "timeout"}


def store_from_url(url: str, engine: Engine | None = None) -> TimeSeriesStore:
    """The store LABSHARE_TSDB_URL names:

    - `sql:` — the `telemetry_point` table of the relational database (`engine` is required);
    - `influxdb://user:password@host:8086/database?rp=autogen&timeout=5` — InfluxDB, writes to /api/v2/write;
    - `influxdb-v1://…` — the same for InfluxDB 1.x older than 1.8 (writes to /write).

    User, password, rp and timeout (seconds) are optional. Raises ValueError with the reason otherwise.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("the time-series store URL is empty; use 'sql:' or 'influxdb://host:port/database'")
    scheme, sep, _ = url.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"time-series store URL {url!r} has no scheme; use 'sql:' or 'influxdb://host:port/database'")
    if scheme == "sql":
        if url.strip().lower() != "sql:":
            raise ValueError(f"time-series store URL {url!r}: 'sql:' takes nothing after the colon")
        if engine is None:
            raise ValueError("the 'sql:' time-series store needs the relational database's engine")
        return SqlStore(engine)
    if scheme not in _INFLUX_SCHEMES:
        raise ValueError(
            f"time-series store URL {redacted_url(url)!r}: unknown scheme {scheme!r} "
            "(expected 'sql', 'influxdb' or 'influxdb-v1')"
        )
    parts = urllib.parse.urlsplit(url)
    where = f"time-series store URL {redacted_url(url)!r}"
    try:
        host, port = parts.hostname, parts.port
    except ValueError as error:
        raise ValueError(f"{where}: bad port ({error})") from None
    if not host:
        raise ValueError(f"{where}: the host is missing")
    database = urllib.parse.unquote(parts.path.strip("/"))
    if not database or "/" in database:
        raise ValueError(f"{where}: give exactly one database name as the path, e.g. influxdb://host:8086/labshare")
    if parts.fragment:
        raise ValueError(f"{where}: a fragment is not allowed")
    options: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key not in _INFLUX_OPTIONS:
            raise ValueError(f"{where}: unknown option {key!r} (known: {', '.join(sorted(_INFLUX_OPTIONS))})")
        if key in options:
            raise ValueError(f"{where}: option {key!r} is given twice")
        options[key] = value
    timeout_s = DEFAULT_TIMEOUT_S
    if "timeout" in options:
        try:
            timeout_s = float(options["timeout"])
        except ValueError:
            raise ValueError(f"{where}: timeout must be a number of seconds") from None
        if not 0 < timeout_s <= 600:
            raise ValueError(f"{where}: timeout must be between 0 and 600 seconds")
    if "rp" in options and not options["rp"]:
        raise ValueError(f"{where}: rp is empty")
    netloc_host = f"[{host}]" if ":" in host else host
    return InfluxStore(
        f"http://{netloc_host}:{port or 8086}",
        database,
        options.get("rp"),
        urllib.parse.unquote(parts.username) if parts.username else None,
        urllib.parse.unquote(parts.password) if parts.password else None,
        mode=_INFLUX_SCHEMES[scheme],
        timeout_s=timeout_s,
    )


def redacted_url(url: str) -> str:
    """The URL with its password replaced by ***, for logs and error messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
