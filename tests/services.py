"""Private Mosquitto, InfluxDB and PostgreSQL instances on free loopback ports, for integration tests.

Each server runs in its own temporary directory, listens on 127.0.0.1 only, and is started and stopped
by the tests themselves; nothing here touches the machine's system services. Only the standard library
is used (plus psycopg for the PostgreSQL probe), so conftest files can import this module cheaply.

    with MosquittoServer() as broker, InfluxDBServer() as influx, InfluxV2Gateway(influx) as gateway:
        ...  # broker.url, influx.url, gateway.url

Facts behind the choices (Mosquitto 2.0.11, InfluxDB 1.6.7, PostgreSQL 15 on Debian 12) are in the
project's environment notes (../shared/environment.md beside the repository).
"""

from __future__ import annotations

import base64
import contextlib
import glob
import gzip
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO_CONF = REPO_ROOT / "docs" / "mosquitto" / "mosquitto.conf"

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
LOOPBACK = "127.0.0.1"

# Loopback requests must never go through an http_proxy from the environment.
_URL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServiceError(RuntimeError):
    """A private service could not be started, stopped or queried."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different free ports: each probe stays bound until all are picked (probed one after another, the
    OS may hand out the same port twice, and influxd then fails to bind its second listener)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _find_executable(name: str, *fallbacks: str) -> str:
    # /usr/sbin is not on every PATH (mosquitto lives there on Debian).
    found = shutil.which(name)
    if found:
        return found
    for candidate in fallbacks:
        if os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError(f"{name} is not installed (run scripts/install-system-packages.sh)")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request without proxies; returns (status, headers, body) for every status code."""
    # Only http:// URLs built by this module reach here.
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with _URL_OPENER.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        with error:  # an HTTPError holds the open response; close it or it leaks a socket
            return error.code, dict(error.headers.items()), error.read()


class _Process:
    """A child process whose stdout and stderr go to files in its directory."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.popen: subprocess.Popen[bytes] | None = None
        self._stdout: Any = None
        self._stderr: Any = None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def spawn(self, argv: list[str]) -> None:
        if self.running:
            raise ServiceError(f"{self.name} is already running")
        self._close_files()
        self._stdout = open(self.workdir / f"{self.name}.stdout", "ab")  # noqa: SIM115 (closed in _close_files)
        self._stderr = open(self.workdir / f"{self.name}.stderr", "ab")  # noqa: SIM115
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            cwd=self.workdir,
            close_fds=True,
        )

    def output_text(self) -> str:
        stdout = _read_text(self.workdir / f"{self.name}.stdout")
        return stdout + _read_text(self.workdir / f"{self.name}.stderr")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)
        self.popen = None
        self._close_files()

    def _close_files(self) -> None:
        for handle in (self._stdout, self._stderr):
            if handle is not None:
                handle.close()
        self._stdout = self._stderr = None


def _wait_until(ready: Any, process: _Process, what: str, log: Any, timeout: float = START_TIMEOUT_S) -> None:
    """Poll ready() until it is true; fail early, with the log, if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.popen is not None and process.popen.poll() is not None:
            code = process.popen.returncode
            process.terminate()
            raise ServiceError(f"{what} exited with status {code} while starting; log:\n{log()}")
        if ready():
            return
        if time.monotonic() > deadline:
            process.terminate(signal.SIGKILL)
            raise ServiceError(f"{what} did not become ready within {timeout:.0f} s; log:\n{log()}")
        time.sleep(0.02)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# Mosquitto
# --------------------------------------------------------------------------------------------------

# Lines of the shipped configuration that the test configuration replaces. pid_file, user and
# include_dir are removed too: they would point at the system broker's files.
_MOSQUITTO_REPLACED = frozenset(
    {
        "listener",
        "persistence_location",
        "log_dest",
        "password_file",
        "acl_file",
        "allow_anonymous",
        "pid_file",
        "user",
        "include_dir",
    }
)


class MosquittoServer:
    """A private Mosquitto broker configured from docs/mosquitto/mosquitto.conf.

    The shipped file's durability settings (persistence, autosave_interval, queue and inflight limits)
    are kept as they are; only the listener (127.0.0.1 on a free port), the persistence and log paths
    (a temporary directory), `user root` (Mosquitto run as root otherwise drops to user mosquitto and
    cannot write the directory) and authentication are replaced. Without password_file/acl_file the
    broker allows anonymous clients.
    """

    def __init__(
        self,
        password_file: str | os.PathLike[str] | None = None,
        acl_file: str | os.PathLike[str] | None = None,
        port: int | None = None,
    ) -> None:
        self._binary = _find_executable("mosquitto", "/usr/sbin/mosquitto")
        self.host = LOOPBACK
        self.port = port or free_port()
        self.password_file = Path(password_file) if password_file is not None else None
        self.acl_file = Path(acl_file) if acl_file is not None else None
        self.workdir = Path(tempfile.mkdtemp(prefix="labshare-mosquitto-"))
        self.persistence_dir = self.workdir / "data"
        self.persistence_dir.mkdir()
        self.log_path = self.workdir / "mosquitto.log"
        self.config_path = self.workdir / "mosquitto.conf"
        self._process = _Process("mosquitto", self.workdir)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.popen.pid if self._process.popen is not None else None

    def config_text(self) -> str:
        kept = []
        for line in MOSQUITTO_CONF.read_text(encoding="utf-8").splitlines():
            words = line.split()
            if words and not words[0].startswith("#") and words[0] in _MOSQUITTO_REPLACED:
                continue
            kept.append(line)
        kept += [
            "",
            "# --- test instance (tests/services.py) ---",
            f"listener {self.port} {self.host}",
            f"persistence_location {self.persistence_dir}/",
            f"log_dest file {self.log_path}",
            "user root",
        ]
        if self.password_file is None and self.acl_file is None:
            kept.append("allow_anonymous true")
        else:
            kept.append("allow_anonymous false")
            if self.password_file is not None:
                kept.append(f"password_file {self.password_file}")
            if self.acl_file is not None:
                kept.append(f"acl_file {self.acl_file}")
        return "\n".join(kept) + "\n"

    def start(self) -> None:
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        self._process.spawn([self._binary, "-c", str(self.config_path)])
        _wait_until(lambda: _port_open(self.port), self._process, f"mosquitto on port {self.port}", self.log_text)

    def stop(self) -> None:
        """SIGTERM and wait: Mosquitto saves its persistence file on the way out."""
        self._process.terminate(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: a crash; whatever was not autosaved yet is lost."""
        self._process.terminate(signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start again on the same port with the same persistence directory."""
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP: re-read the password and ACL files without dropping connections."""
        if self._process.popen is None:
            raise ServiceError("mosquitto is not running")
        self._process.popen.send_signal(signal.SIGHUP)

    def log_text(self) -> str:
        return _read_text(self.log_path) + self._process.output_text()

    def close(self) -> None:
        """Stop the broker and delete its directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> MosquittoServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# InfluxDB 1.x
# --------------------------------------------------------------------------------------------------


class InfluxDBServer:
    """A private InfluxDB 1.x (`influxd` from Debian's influxdb package, 1.6.7) in a temporary directory.

    It speaks the v1 HTTP API only: /ping, /write and /query. For the v2 write API put an
    InfluxV2Gateway in front of it.
    """

    def __init__(self) -> None:
        self._binary = _find_executable("influxd", "/usr/bin/influxd")
        self.host = LOOPBACK
        self.port, self.rpc_port = free_ports(2)
        self.workdir = Path(tempfile.mkdtemp(prefix="labshare-influxdb-"))
        self.config_path = self.workdir / "influxdb.conf"
        self._process = _Process("influxd", self.workdir)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process.running

    def config_text(self) -> str:
        return f"""\
reporting-enabled = false
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{self.workdir}/meta"

[data]
  dir = "{self.workdir}/data"
  wal-dir = "{self.workdir}/wal"
  query-log-enabled = false

[http]
  bind-address = "{self.host}:{self.port}"
  log-enabled = false

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false
"""

    def ping(self) -> bool:
        try:
            status, _, _ = _http("GET", f"{self.url}/ping", timeout=1.0)
        except OSError:
            return False
        return status == 204

    def start(self) -> None:
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        self._process.spawn([self._binary, "-config", str(self.config_path)])
        _wait_until(self.ping, self._process, f"influxd on port {self.port}", self.log_text)

    def stop(self) -> None:
        self._process.terminate(signal.SIGTERM)

    def kill(self) -> None:
        self._process.terminate(signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start again with the same ports and data directories."""
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self._process.output_text()

    def create_database(self, name: str) -> None:
        self._post_query(f'CREATE DATABASE "{_influx_ident(name)}"')

    def drop_database(self, name: str) -> None:
        self._post_query(f'DROP DATABASE "{_influx_ident(name)}"')

    def _post_query(self, influxql: str) -> dict[str, Any]:
        body = urllib.parse.urlencode({"q": influxql}).encode()
        status, _, raw = _http("POST", f"{self.url}/query", body, {"Content-Type": "application/x-www-form-urlencoded"})
        result = _json_or_error(status, raw, influxql)
        _raise_statement_errors(result, influxql)
        return result

    def query(self, db: str, influxql: str, epoch: str | None = "ns") -> dict[str, Any]:
        """GET /query and return the decoded JSON; raises ServiceError on an HTTP or statement error.

        Times come back as integer epoch nanoseconds unless epoch=None (RFC 3339 strings).
        """
        params = {"db": db, "q": influxql}
        if epoch:
            params["epoch"] = epoch
        status, _, raw = _http("GET", f"{self.url}/query?{urllib.parse.urlencode(params)}")
        result = _json_or_error(status, raw, influxql)
        _raise_statement_errors(result, influxql)
        return result

    def write(self, db: str, lines: str | bytes, rp: str | None = None, precision: str = "ns") -> None:
        """POST line protocol to /write (the v1 API); raises ServiceError unless InfluxDB answers 204."""
        params = {"db": db, "precision": precision}
        if rp:
            params["rp"] = rp
        body = lines.encode() if isinstance(lines, str) else lines
        status, _, raw = _http(
            "POST",
            f"{self.url}/write?{urllib.parse.urlencode(params)}",
            body,
            {"Content-Type": "text/plain; charset=utf-8"},
        )
        if status != 204:
            raise ServiceError(f"write to {db!r} failed with HTTP {status}: {raw.decode(errors='replace')}")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> InfluxDBServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _influx_ident(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def _json_or_error(status: int, raw: bytes, influxql: str) -> dict[str, Any]:
    if status != 200:
        raise ServiceError(f"InfluxQL {influxql!r} failed with HTTP {status}: {raw.decode(errors='replace')}")
    return json.loads(raw)


def _raise_statement_errors(result: dict[str, Any], influxql: str) -> None:
    for statement in result.get("results", []):
        if "error" in statement:
            raise ServiceError(f"InfluxQL {influxql!r} failed: {statement['error']}")


def series_values(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten a /query result into one dict per row ({column: value}, tags included)."""
    rows: list[dict[str, Any]] = []
    for statement in result.get("results", []):
        for series in statement.get("series", []):
            tags = series.get("tags", {})
            for values in series.get("values", []):
                row = dict(zip(series["columns"], values, strict=True))
                row.update(tags)
                rows.append(row)
    return rows


class InfluxV2Gateway:
    """TEST FAKE: InfluxDB >= 1.8's v2-compatible write endpoint, in front of Debian's InfluxDB 1.6.7.

    LabShare writes with influxdb-client to /api/v2/write, which InfluxDB 1.8+, 2.x and 3.x serve but
    1.6.7 (the version Debian ships, which the tests use) does not. This loopback HTTP server maps

        POST /api/v2/write?bucket=DB/RP&org=...&precision=ns   (Authorization: Token user:password)
        ->  POST /write?db=DB&rp=RP&precision=ns               (HTTP basic auth user:password)

    exactly as InfluxDB 1.8 implements it (a bucket without "/RP" means the default retention policy;
    org is ignored), un-gzips the body when Content-Encoding is gzip, and relays InfluxDB's status code
    and body, so success is 204 and errors (404 unknown database, 400 bad line protocol, ...) reach
    the client as they would from InfluxDB 1.8. /ping, /query and /write are passed through; /health
    answers 200 {"status": "pass"} while InfluxDB answers /ping (503 {"status": "fail"} otherwise),
    like 1.8's /health. When InfluxDB is unreachable every other request gets 503 with a JSON error;
    stop() the gateway itself to make clients see "connection refused".

    Each request is recorded in `requests` (method, path, query, authorization, content_encoding,
    status) so tests can check what the client sent. It is not a production component.
    """

    def __init__(self, upstream: InfluxDBServer | str, port: int | None = None) -> None:
        self.upstream = upstream
        self.host = LOOPBACK
        self.port = port or free_port()
        self.requests: list[dict[str, Any]] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def upstream_url(self) -> str:
        return self.upstream if isinstance(self.upstream, str) else self.upstream.url

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            raise ServiceError("gateway is already running")
        gateway = self

        class Handler(_GatewayHandler):
            owner = gateway

        server = http.server.ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"influx-v2-gateway:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT_S)
        self._server = None
        self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> InfluxV2Gateway:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _GatewayHandler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so stop() really ends every connection.
    protocol_version = "HTTP/1.0"
    server_version = "labshare-test-influx-v2-gateway"
    timeout = 30
    owner: InfluxV2Gateway

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test output stays clean; requests are recorded in owner.requests

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        record: dict[str, Any] = {
            "method": self.command,
            "path": parsed.path,
            "query": dict(urllib.parse.parse_qsl(parsed.query)),
            "authorization": self.headers.get("Authorization"),
            "content_encoding": self.headers.get("Content-Encoding"),
        }
        self.owner.requests.append(record)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if parsed.path == "/api/v2/write" and self.command == "POST":
            status = self._v2_write(parsed.query, body)
        elif parsed.path == "/health":
            status = self._health()
        elif parsed.path in ("/ping", "/query", "/write"):
            status = self._forward(self.command, self.path, body, self._passthrough_headers())
        else:
            status = self._reply_json(404, {"code": "not found", "message": f"no such path: {parsed.path}"})
        record["status"] = status

    def _v2_write(self, query: str, body: bytes) -> int:
        params = dict(urllib.parse.parse_qsl(query))
        bucket = params.get("bucket", "")
        if not bucket:
            return self._reply_json(400, {"code": "invalid", "message": "bucket not specified"})
        db, _, rp = bucket.partition("/")
        v1_params = {"db": db, "precision": params.get("precision", "ns")}
        if rp:
            v1_params["rp"] = rp
        if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError) as error:
                return self._reply_json(400, {"code": "invalid", "message": f"bad gzip body: {error}"})
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        authorization = self.headers.get("Authorization") or ""
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "token" and ":" in credentials:
            headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        return self._forward("POST", "/write?" + urllib.parse.urlencode(v1_params), body, headers)

    def _health(self) -> int:
        try:
            status, _, _ = _http("GET", f"{self.owner.upstream_url}/ping", timeout=2.0)
        except OSError:
            status = 0
        if status == 204:
            return self._reply_json(
                200,
                {
                    "name": "influxdb",
                    "message": "ready for queries and writes",
                    "status": "pass",
                    "checks": [],
                },
            )
        return self._reply_json(503, {"name": "influxdb", "status": "fail", "checks": []})

    def _passthrough_headers(self) -> dict[str, str]:
        keep = ("Authorization", "Content-Type", "Content-Encoding", "Accept")
        return {name: self.headers[name] for name in keep if self.headers.get(name)}

    def _forward(self, method: str, path_and_query: str, body: bytes, headers: dict[str, str]) -> int:
        try:
            status, upstream_headers, raw = _http(
                method,
                self.owner.upstream_url + path_and_query,
                body if method == "POST" else None,
                headers,
                timeout=30.0,
            )
        except OSError as error:  # connection refused or reset: InfluxDB is down
            return self._reply_json(503, {"code": "unavailable", "message": f"InfluxDB unreachable: {error}"})
        self.send_response(status)
        for name, value in upstream_headers.items():
            if name.lower() in (
                "content-type",
                "x-influxdb-version",
                "x-influxdb-build",
                "x-influxdb-error",
                "request-id",
                "x-request-id",
            ):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(raw)
        return status

    def _reply_json(self, status: int, payload: dict[str, Any]) -> int:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)
        return status


# --------------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------------

LOCAL_POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def libpq_url(sqlalchemy_url: str) -> str:
    """postgresql+psycopg://... -> postgresql://... (what psycopg.connect accepts)."""
    scheme, sep, rest = sqlalchemy_url.partition("://")
    return scheme.split("+", 1)[0] + sep + rest


def find_postgres_admin_url() -> str | None:
    """A SQLAlchemy URL of a PostgreSQL superuser connection the tests may use, or None.

    LABSHARE_TEST_PG_ADMIN_URL wins when set (returned as given). Otherwise the local server on
    127.0.0.1:5432 if it accepts user postgres without a password within 2 s. None means: start a
    PrivatePostgres.
    """
    given = os.environ.get("LABSHARE_TEST_PG_ADMIN_URL")
    if given:
        return given
    import psycopg

    try:
        with psycopg.connect(libpq_url(LOCAL_POSTGRES_ADMIN_URL), connect_timeout=2):
            pass
    except psycopg.Error:
        return None
    return LOCAL_POSTGRES_ADMIN_URL


def _postgres_bindir() -> Path:
    """Debian keeps initdb and pg_ctl in /usr/lib/postgresql/<major>/bin, off the PATH; take the newest."""
    versions = [Path(p).parents[1] for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    versions = [v for v in versions if v.name.isdigit()]
    if versions:
        return max(versions, key=lambda v: int(v.name)) / "bin"
    found = shutil.which("initdb")
    if not found:
        raise ServiceError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    return Path(found).parent


class PrivatePostgres:
    """A throw-away PostgreSQL cluster (trust auth, fsync off) on a free loopback port.

    initdb refuses to run as root, so as root the cluster belongs to user postgres and every command
    runs through `runuser -u postgres --`; the temporary directory is handed to postgres for that.
    """

    def __init__(self) -> None:
        self.host = LOOPBACK
        self.port = free_port()
        self.bindir = _postgres_bindir()
        self.workdir = Path(tempfile.mkdtemp(prefix="labshare-pg-"))
        self.datadir = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.workdir, "postgres", "postgres")
        self._initialised = False
        self._started = False

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 60.0) -> None:
        command = list(argv)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"{' '.join(argv)} failed with status {result.returncode}:\n"
                f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
                f"{self.log_text()}"
            )

    def start(self) -> None:
        if not self._initialised:
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            )
            self._initialised = True
        options = (
            f"-c listen_addresses={self.host} -p {self.port} -k {self.workdir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(int(START_TIMEOUT_S) * 3),
            "-o",
            options,
            "start",
        )
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")
            self._started = False

    def log_text(self) -> str:
        return _read_text(self.log_path)

    def close(self) -> None:
        with contextlib.suppress(ServiceError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# Ingest test helpers (tests/telemetry/test_ingest_*.py): a database per test, a QoS 1 publisher,
# `labshare ingest` as a child process, and polling for an effect. Third-party imports stay inside the
# functions so that conftest files can still import this module cheaply.
# --------------------------------------------------------------------------------------------------


def wait_for(condition: Any, timeout: float = 30.0, interval: float = 0.05, what: str = "the condition") -> Any:
    """Poll condition() until it returns something truthy and return that; AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last value: {value!r})")
        time.sleep(interval)


@contextlib.contextmanager
def migrated_database(backend: str, directory: str | os.PathLike[str]):
    """A fresh, migrated database of `backend` (sqlite: a file in `directory`); yields its URL and drops
    it afterwards (PostgreSQL). For code under test that opens its own sessions and commits."""
    from migrations import runner
    from tests.conftest import create_pg_database, drop_pg_database

    if backend == "sqlite":
        Path(directory).mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{Path(directory) / f'ingest-{os.getpid()}-{time.monotonic_ns()}.db'}"
    else:
        url = create_pg_database("labshare_ingest")
    try:
        runner.upgrade(url)
        yield url
    finally:
        if backend != "sqlite":
            drop_pg_database(url)


class MqttPublisher:
    """A paho (MQTT 5) publisher that waits for each QoS 1 PUBACK and, when the broker goes away (a
    restart), reconnects and publishes the same message again: at least once, as a device does."""

    def __init__(self, broker: Any, client_id: str | None = None, connect_timeout: float = 10.0) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.broker = broker
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=client_id or f"test-pub-{os.getpid()}-{time.monotonic_ns()}")
        self._connected = threading.Event()
        self.client.on_connect = lambda *_args: self._connected.set()
        self.client.on_disconnect = lambda *_args: self._connected.clear()
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect_async(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(connect_timeout):
            self.close()
            raise ServiceError(f"publisher could not connect to {broker.host}:{broker.port}")

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False,
                timeout: float = 60.0) -> None:
        """Publish and return once the broker has it (PUBACK for QoS 1); retries across reconnects."""
        deadline = time.monotonic() + timeout
        while True:
            if not self._connected.wait(max(0.0, deadline - time.monotonic())):
                raise ServiceError(f"publisher not connected; could not publish to {topic}")
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
            try:
                info.wait_for_publish(timeout=5.0)
                if info.is_published():
                    return
            except (RuntimeError, ValueError):  # the connection dropped before the message went out
                pass
            if time.monotonic() > deadline:
                raise ServiceError(f"could not publish to {topic} within {timeout:.0f} s")
            time.sleep(0.1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> MqttPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class IngestProcess:
    """`labshare ingest` as a child process (its own process group), configured through LABSHARE_* variables.

    terminate() sends SIGTERM (the worker drains) and waits; kill() sends SIGKILL (a crash).
    """

    def __init__(self, workdir: str | os.PathLike[str], env: dict[str, str], *args: str) -> None:
        import sys

        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.args = list(args)
        self._python = sys.executable
        self._process = _Process("ingest", self.workdir)

    @property
    def running(self) -> bool:
        return self._process.running

    @property
    def returncode(self) -> int | None:
        return self._process.popen.returncode if self._process.popen is not None else None

    def start(self) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("LABSHARE_")}
        environment.update(self.env)
        environment.setdefault("PYTHONPATH", str(REPO_ROOT))
        if self._process.running:
            raise ServiceError("ingest is already running")
        self._process._close_files()
        self._process._stdout = open(self.workdir / "ingest.stdout", "ab")  # noqa: SIM115 (closed by _Process)
        self._process._stderr = open(self.workdir / "ingest.stderr", "ab")  # noqa: SIM115
        self._process.popen = subprocess.Popen(
            [self._python, "-c", "from web.cli import main; main()", "ingest", *self.args],
            stdin=subprocess.DEVNULL, stdout=self._process._stdout, stderr=self._process._stderr,
            cwd=REPO_ROOT, env=environment, close_fds=True,
        )

    def terminate(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait for the drain; the exit status (None if it had to be killed)."""
        popen = self._process.popen
        if popen is None:
            return None
        code = None
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                code = popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=STOP_TIMEOUT_S)
        else:
            code = popen.returncode
        self._process.popen = None
        self._process._close_files()
        return code

    def kill(self) -> None:
        self._process.terminate(signal.SIGKILL)

    def output_text(self) -> str:
        return self._process.output_text()

    def close(self) -> None:
        if self._process.popen is not None:
            self._process.terminate(signal.SIGKILL)
        self._process._close_files()


def prepare_ingest_session(broker: Any, client_id: str, shared: bool = True, prefix: str = "labshare/v1",
                           session_expiry_s: int = 3600) -> None:
    """Create the ingest's persistent MQTT 5 session (subscribed, QoS 1) before the worker first connects,
    so that everything published from now on is queued for it whatever the worker is doing (the worker then
    finds its session present and does not subscribe again)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    own = f"{prefix.rstrip('/')}/#"
    topic_filter = f"$share/labshare-ingest/{own}" if shared else own
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    client.on_connect = lambda c, *_args: c.subscribe(topic_filter, qos=1)
    client.on_subscribe = lambda *_args: subscribed.set()
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = session_expiry_s
    client.connect(broker.host, broker.port, keepalive=30, clean_start=False, properties=properties)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise ServiceError(f"could not subscribe {client_id} to {topic_filter}")
    finally:
        client.disconnect()
        client.loop_stop()


def device_stream(device_id: str, source: str, t0_ms: int, count: int, seed: int = 0) -> list[tuple[str, bytes, Any]]:
    """`count` contract-conforming messages of one device, one a second from t0_ms (epoch ms), each with the
    `devices.usage.Item` it means to the usage machine (the specification the ingest must agree with):
    power samples that cross the threshold (1000 W) in runs, status changes, or run_started/run_finished
    events with occasional chatter in between."""
    import random

    from devices.usage import Item, Kind

    rng = random.Random(f"{device_id}-{seed}")
    out: list[tuple[str, bytes, Any]] = []
    high = run_open = False
    run = 0
    for n in range(count):
        ts_ms = t0_ms + n * 1000
        ts_ns = ts_ms * 1_000_000
        if source == "power" or (source != "power" and rng.random() < 0.4):
            if rng.random() < 0.08:
                high = not high
            power = round(rng.uniform(1200, 2500) if high else rng.uniform(0, 300), 3)
            payload = {"ts": ts_ms, "values": {"power_w": power, "temp_c": round(rng.uniform(18, 25), 2)}}
            out.append((f"labshare/v1/{device_id}/metrics", json.dumps(payload).encode(),
                        Item(ts_ns, Kind.SAMPLE, power_w=power)))
        elif source == "status":
            state = rng.choice(["idle", "running", "running", "maintenance", "fault"])
            payload = {"ts": ts_ms, "state": state}
            out.append((f"labshare/v1/{device_id}/status", json.dumps(payload).encode(),
                        Item(ts_ns, Kind.STATUS, state)))
        else:
            if rng.random() < 0.5:
                run_open = not run_open
                run += 1 if run_open else 0
                event_type = "run_started" if run_open else "run_finished"
            else:
                event_type = "note"
            run_id = f"r{run}"
            payload = {"id": f"e{n}", "ts": ts_ms, "type": event_type, "run_id": run_id}
            out.append((f"labshare/v1/{device_id}/events", json.dumps(payload).encode(),
                        Item(ts_ns, Kind.EVENT, event_type, run_id=run_id)))
    return out


def stored_sessions(engine: Any) -> dict[str, list[tuple]]:
    """{device_id: [(start_ns, end_ns, truncated, run_id), …]} of the usage sessions in the database."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from devices.models import Device, UsageSession

    sessions: dict[str, list[tuple]] = {}
    with Session(engine) as db:
        rows = db.execute(select(Device.device_id, UsageSession.start_ns, UsageSession.end_ns, UsageSession.truncated,
                                 UsageSession.run_id).join(Device, Device.id == UsageSession.device_pk)
                          .order_by(Device.device_id, UsageSession.start_ns)).all()
    for device_id, *rest in rows:
        sessions.setdefault(device_id, []).append(tuple(rest))
    return sessions


def expected_sessions(engine: Any, device_id: str, items: list[Any]) -> list[tuple]:
    """What `devices.usage.derive` makes of the items with the device's registry settings."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from devices import usage
    from devices.ingest import config_of
    from devices.models import Device

    with Session(engine) as db:
        device = db.scalars(select(Device).where(Device.device_id == device_id)).one()
        config = config_of(device)
    return [(s.start_ns, s.end_ns, s.truncated, s.run_id) for s in usage.derive(config, items)]


def ingest_counts(engine: Any) -> dict[str, Any]:
    """Row counts the ingest writes: per device samples/events/observations/sessions, the power_w points of
    the SQL store, and dead letters by reason."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from devices.models import DeadLetter, Device, DeviceEvent, DeviceSample, StateObservation, UsageSession
    from telemetry.models import TelemetryPoint

    def per_device(db: Any, model: Any) -> dict[str, int]:
        rows = db.execute(select(Device.device_id, func.count()).join(model, model.device_pk == Device.id)
                          .group_by(Device.device_id)).all()
        return dict(rows)

    with Session(engine) as db:
        return {
            "samples": per_device(db, DeviceSample),
            "events": per_device(db, DeviceEvent),
            "observations": per_device(db, StateObservation),
            "sessions": per_device(db, UsageSession),
            "points": dict(db.execute(select(TelemetryPoint.device_id, func.count())
                                      .where(TelemetryPoint.field == "power_w")
                                      .group_by(TelemetryPoint.device_id)).all()),
            "dead_letters": dict(db.execute(select(DeadLetter.reason, func.count()).group_by(DeadLetter.reason)).all()),
        }
