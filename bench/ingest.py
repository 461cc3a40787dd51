"""Ingest benchmark: Mosquitto → `labshare ingest` → PostgreSQL + InfluxDB, against a bare paho subscriber.

    python bench/ingest.py [--quick] [--output bench/results/ingest.txt] [--messages N] [--batch-size B]

Everything runs on loopback, started and stopped by the script: a private Mosquitto (docs/mosquitto/mosquitto.conf
with only the listener, paths and authentication replaced, so the durability settings are the shipped ones),
a private influxd (Debian's InfluxDB 1.6.7 has no /api/v2/write, so the worker writes through the v1 API:
LABSHARE_TSDB_URL=influxdb-v1://…) and a fresh PostgreSQL database per scenario on LABSHARE_BENCH_PG_ADMIN_URL
(default postgresql://postgres@127.0.0.1:5432/postgres), migrated, with 1,000 devices registered; all dropped
at the end.

Load: 500 devices, 200,000 metrics messages (`--quick`: 20,000), QoS 1, payload
`{"ts": <epoch ms>, "values": {"power_w": …, "temp_c": …}}`, distinct timestamps per device (4 Hz, ending now),
published by 4 publisher processes. A third of the devices measure usage by power (threshold 100 W, debounce
5 s, power switching every 10 s of device time, so usage sessions open and close), a third by status, a third
by events.

Scenarios (each on a fresh broker, database and InfluxDB database):

1. bare subscriber: a paho 2 MQTT 5 client in its own process, persistent session, QoS 1, automatic acks, counts
   messages; rate = N / (last received − first received);
2. one worker, `labshare ingest --workers 1` (a subprocess, as in production): rate = N / (time from its
   first message to the moment a count query in InfluxDB returns N); zero loss = InfluxDB holds N points,
   PostgreSQL N sample rows, no dead letters;
3. two workers, `labshare ingest --workers 2` (shared subscription), measured the same way;
4. state latency: 1,000 devices publish metrics once a second (one paced process) while one more device
   switches idle ↔ running every 2 s with `ts` = send time; per change, the time from the publish to the
   PostgreSQL `device` row showing it (polled every 5 ms); p50 / p99 over 60 changes (`--quick`: 10).

Scenarios 1-3 pre-publish the whole backlog into the subscriber's persistent session (created beforehand by
connecting once), then start the consumer: the figure is the consumer's own rate, not the publishers'.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/ingest.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import paho.mqtt  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

PG_ADMIN_URL = os.environ.get("LABSHARE_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MOSQUITTO_CONF = REPO_ROOT / "docs" / "mosquitto" / "mosquitto.conf"
PREFIX = "labshare/v1"
DEVICES = 500  # the throughput load
LATENCY_DEVICES = 1_000  # the latency load (plus the one switching device)
MESSAGES = 200_000
QUICK_MESSAGES = 20_000
PUBLISHERS = 4
STEP_MS = 250  # device time between two messages of one device
CHANGES, QUICK_CHANGES = 60, 10
CHANGE_EVERY_S = 2.0
STALL_S = 90.0  # no progress for this long: the scenario fails
LATENCY_GIVE_UP_S = 10.0  # a state change not in the database by then: the ingest cannot keep up

# From the issue and the environment notes (paho → Mosquitto → paho, QoS 1, on this 2-core machine).
BARE_REFERENCE = 9_000.0
TARGET_VS_BARE = 0.5
TARGET_P99_S = 1.0

MOSQUITTO_REPLACED = {"listener", "persistence_location", "log_dest", "password_file", "acl_file",
                      "allow_anonymous", "pid_file", "user", "include_dir"}
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- helpers --------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_pair() -> int:
    """P with P and P+1 free (the workers' metrics ports)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


def http(method: str, url: str, body: bytes | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 -- loopback URLs built here
    try:
        with NO_PROXY.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def wait_for(ready, what: str, process: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.02)


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- private services -------------------------------------------------------------------------------------------

@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[int]:
    """A private broker from the shipped configuration (its durability settings kept as they are)."""
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="mosquitto-", dir=workdir))
    (folder / "data").mkdir()
    kept = [line for line in MOSQUITTO_CONF.read_text(encoding="utf-8").splitlines()
            if not (line.split() and line.split()[0] in MOSQUITTO_REPLACED)]
    kept += ["", "# --- bench instance (bench/ingest.py) ---", f"listener {port} 127.0.0.1",
             f"persistence_location {folder / 'data'}/", f"log_dest file {folder / 'mosquitto.log'}",
             "user root", "allow_anonymous true"]
    (folder / "mosquitto.conf").write_text("\n".join(kept) + "\n", encoding="utf-8")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with (folder / "stderr").open("wb") as err:
        process = subprocess.Popen([binary, "-c", str(folder / "mosquitto.conf")], stdin=subprocess.DEVNULL,
                                   stdout=err, stderr=subprocess.STDOUT, cwd=folder)
        try:
            wait_for(lambda: port_open(port), "mosquitto", process, 10)
            yield port
        finally:
            stop_process(process)


@dataclass
class Influx:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, q: str, db: str | None = None) -> dict:
        params = {"q": q, **({"db": db} if db else {})}
        status, raw = http("POST", f"{self.url}/query?{urllib.parse.urlencode(params)}")
        if status != 200:
            raise RuntimeError(f"InfluxDB {q!r}: HTTP {status} {raw[:300]!r}")
        result = json.loads(raw)
        for statement in result.get("results", []):
            if "error" in statement:
                raise RuntimeError(f"InfluxDB {q!r}: {statement['error']}")
        return result

    def count(self, db: str) -> int:
        result = self.query('SELECT count("power_w") FROM "device_metrics"', db)
        series = result["results"][0].get("series")
        return int(series[0]["values"][0][1]) if series else 0


@contextlib.contextmanager
def influxd(workdir: Path) -> Iterator[Influx]:
    folder = Path(tempfile.mkdtemp(prefix="influxdb-", dir=workdir))
    port, rpc = free_port(), free_port()
    (folder / "influxdb.conf").write_text(f"""\
reporting-enabled = false
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{folder}/meta"
[data]
  dir = "{folder}/data"
  wal-dir = "{folder}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
""", encoding="utf-8")
    influx = Influx(port)

    def ping() -> bool:
        try:
            return http("GET", f"{influx.url}/ping", timeout=1.0)[0] == 204
        except OSError:
            return False

    with (folder / "influxd.log").open("wb") as log:
        process = subprocess.Popen([shutil.which("influxd") or "/usr/bin/influxd", "-config",
                                    str(folder / "influxdb.conf")], stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=folder)
        try:
            wait_for(ping, "influxd", process, 20)
            yield influx
        finally:
            stop_process(process)


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    name = f"labshare_bench_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name, argv in (("mosquitto", [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-h"]),
                       ("influxdb", [shutil.which("influxd") or "/usr/bin/influxd", "version"])):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            found[name] = (out.stdout or out.stderr).splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            found[name] = "?"
    with psycopg.connect(PG_ADMIN_URL, connect_timeout=5) as conn:
        found["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    found["paho-mqtt"] = paho.mqtt.__version__
    return found


# --- the data set -------------------------------------------------------------------------------------------------

def device_name(n: int) -> str:
    return f"bench-{n:04d}"


STATUS_DEVICE = "bench-status"


def seed(url: str, devices: int) -> None:
    """Migrate, then register `devices` devices (sources power/status/events in turn) and the switching one."""
    from sqlalchemy.orm import Session

    from booking.categories import ServiceCategory
    from booking.models import Facility, OperationMode, Resource, ResourceKind
    from core.accounts.credit_code import make_credit_code
    from core.accounts.models import Organisation, OrganisationKind
    from core.db import make_engine
    from devices.models import Device, LiveState, UsageSource
    from migrations import runner

    runner.upgrade(url)
    engine = make_engine(url)
    now = datetime.now(UTC)
    try:
        with Session(engine) as db:
            org = Organisation(name_zh="基准单位", name_en="Bench organisation", kind=OrganisationKind.INSTITUTE,
                               credit_code=make_credit_code("9", "1", "510100", "90000001"), city="510100",
                               tech_sme=False, created_at=now)
            facility = Facility(name_zh="基准实验室", name_en="Bench facility", owner=org, city="510100",
                                address_zh="", address_en="", timezone="Asia/Shanghai", opening_hours={},
                                created_at=now)
            resources = [Resource(facility=facility, kind=ResourceKind.INSTRUMENT, name_zh=f"基准仪器{i}",
                                  name_en=f"Bench instrument {i}", model=f"B-{i}", manufacturer="Bench",
                                  original_value=Decimal("1000000.00"), category=ServiceCategory.TESTING,
                                  operation_mode=OperationMode.BOTH, voucher_eligible=True, specs=[])
                         for i in range(10)]
            db.add_all(resources)
            db.flush()
            sources = [UsageSource.POWER, UsageSource.STATUS, UsageSource.EVENTS]
            rows = [dict(device_id=device_name(n), resource_id=resources[n % 10].id, description="",
                         usage_source=sources[n % 3], power_threshold_w=Decimal(100) if n % 3 == 0 else None,
                         debounce_s=5, heartbeat_timeout_s=300, enabled=True, credential_hash="!",
                         created_at=now, state=LiveState.OFFLINE, state_detail="")
                    for n in range(devices)]
            rows.append(dict(rows[1], device_id=STATUS_DEVICE))  # usage by status
            db.execute(insert(Device), rows)
            db.commit()
            assert db.scalar(select(Device.id).where(Device.device_id == STATUS_DEVICE))
    finally:
        engine.dispose()


def payload(n: int, k: int, ts_ms: int) -> bytes:
    """Message k of device n: realistic values; power-measured devices switch on and off every 40 samples."""
    running = (k // 40 + n) % 2 == 0
    power = 812.5 + (k % 7) * 1.5 if running else 12.0 + (k % 3)
    temp = 21.0 + ((k + n) % 10) / 10
    return json.dumps({"ts": ts_ms, "values": {"power_w": power, "temp_c": temp}}, separators=(",", ":")).encode()


# --- MQTT clients ---------------------------------------------------------------------------------------------------

def mqtt_client(client_id: str, **kwargs) -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, **kwargs)


def session_properties() -> Properties:
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    return properties


def publish_backlog(port: int, devices: list[int], per_device: int, t0_ms: int, out) -> None:
    """Publisher process: per_device messages for each of `devices`, device after device in each round."""
    client = mqtt_client(f"bench-pub-{os.getpid()}")
    client.max_inflight_messages_set(1000)
    done = threading.Event()
    total = len(devices) * per_device
    acked = [0]

    def on_publish(*_args) -> None:
        acked[0] += 1
        if acked[0] == total:
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    started = time.perf_counter()
    for k in range(per_device):
        ts_ms = t0_ms + k * STEP_MS
        for n in devices:
            client.publish(f"{PREFIX}/{device_name(n)}/metrics", payload(n, k, ts_ms), qos=1)
    if not done.wait(600):
        raise RuntimeError(f"publisher: only {acked[0]} of {total} acknowledged")
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    out.put((total, elapsed))


def publish_all(port: int, devices: int, messages: int) -> tuple[int, float]:
    """The backlog from PUBLISHERS processes; returns (messages, publish rate in msg/s)."""
    per_device = messages // devices
    t0_ms = time.time_ns() // 1_000_000 - per_device * STEP_MS  # the newest message is stamped about now
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    slices = [list(range(devices))[i::PUBLISHERS] for i in range(PUBLISHERS)]
    processes = [context.Process(target=publish_backlog, args=(port, s, per_device, t0_ms, out)) for s in slices]
    started = time.perf_counter()
    for p in processes:
        p.start()
    results = [out.get(timeout=900) for _ in processes]
    elapsed = time.perf_counter() - started
    for p in processes:
        p.join(30)
    total = sum(r[0] for r in results)
    return total, total / elapsed


def create_session(port: int, client_id: str, topic: str) -> None:
    """Connect once with a persistent session and subscribe, so the broker queues the backlog for it."""
    client = mqtt_client(client_id)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect("127.0.0.1", port, keepalive=60, clean_start=True, properties=session_properties())
    client.loop_start()
    client.subscribe(topic, qos=1)
    if not subscribed.wait(10):
        raise RuntimeError("no SUBACK")
    client.disconnect()
    client.loop_stop()


def bare_subscriber(port: int, expected: int, out) -> None:
    """Subscriber process: reconnect to the session, count messages (paho acknowledges them), report."""
    client = mqtt_client("bench-bare")
    times: list[float] = []
    count = [0]
    done = threading.Event()

    def on_message(_client, _userdata, _message) -> None:
        count[0] += 1
        if count[0] == 1:
            times.append(time.perf_counter())
        if count[0] >= expected:
            times.append(time.perf_counter())
            done.set()

    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=60, clean_start=False, properties=session_properties())
    client.loop_start()
    if not done.wait(600):
        out.put((count[0], None))
    else:
        out.put((count[0], times[1] - times[0]))
    client.disconnect()
    client.loop_stop()


# --- the ingest as a subprocess --------------------------------------------------------------------------------------

class Workers:
    """`labshare ingest --workers N` with its metrics on consecutive ports."""

    def __init__(self, workdir: Path, db_url: str, mqtt_port: int, influx: Influx, influx_db: str, workers: int,
                 batch_size: int, client_id: str, extra_env: dict | None = None) -> None:
        self.workers = workers
        self.metrics_port = free_port_pair() if workers > 1 else free_port()
        self.env = {**os.environ, "LABSHARE_DATABASE_URL": db_url, "LABSHARE_MQTT_URL": f"mqtt://127.0.0.1:{mqtt_port}",
                    "LABSHARE_TSDB_URL": f"influxdb-v1://127.0.0.1:{influx.port}/{influx_db}",
                    "LABSHARE_DATA_DIR": str(workdir), "LABSHARE_LOG_LEVEL": "INFO", **(extra_env or {})}
        self.argv = [sys.executable, "-c", "from web.cli import main; main()", "ingest", "--workers", str(workers),
                     "--batch-size", str(batch_size), "--client-id", client_id,
                     "--metrics-port", str(self.metrics_port)]
        self.log_path = workdir / f"{client_id}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)

    def metrics(self) -> list[dict[str, float]]:
        found = []
        for n in range(self.workers):
            try:
                status, raw = http("GET", f"http://127.0.0.1:{self.metrics_port + n}/metrics", timeout=2)
            except OSError:
                found.append({})
                continue
            values = {}
            for line in raw.decode().splitlines():
                if line and not line.startswith("#"):
                    name, _, value = line.rpartition(" ")
                    values[name] = float(value)
            found.append(values if status == 200 else {})
        return found

    def total(self, name: str) -> float:
        return sum(m.get(name, 0.0) for m in self.metrics())

    def wait_connected(self, timeout: float = 60) -> None:
        def ready() -> bool:
            return all(m.get("labshare_ingest_connected") == 1.0 for m in self.metrics())
        try:
            wait_for(ready, "labshare ingest", self.process, timeout)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{self.log_tail()}") from None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 90)
            self.process = None

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])


@dataclass
class Run:
    messages: int
    seconds: float | None = None
    publish_rate: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def db_counts(url: str) -> dict[str, int]:
    with psycopg.connect(libpq(url), connect_timeout=5) as conn:
        return {"samples": conn.execute("SELECT count(*) FROM device_sample").fetchone()[0],
                "dead_letters": conn.execute("SELECT count(*) FROM dead_letter").fetchone()[0],
                "sessions": conn.execute("SELECT count(*) FROM usage_session").fetchone()[0]}


def scenario_bare(workdir: Path, messages: int, devices: int) -> Run:
    with mosquitto(workdir) as port:
        create_session(port, "bench-bare", f"{PREFIX}/#")
        sent, publish_rate = publish_all(port, devices, messages)
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        process = context.Process(target=bare_subscriber, args=(port, sent, out))
        process.start()
        count, seconds = out.get(timeout=900)
        process.join(30)
    run = Run(sent, seconds, publish_rate, {"received": count})
    if seconds is None:
        run.notes.append(f"bare subscriber received only {count} of {sent}")
    return run


def scenario_workers(workdir: Path, messages: int, devices: int, workers: int, batch_size: int,
                     influx: Influx, progress) -> Run:
    influx_db = f"bench_{workers}w_{secrets.token_hex(3)}"
    influx.query(f'CREATE DATABASE "{influx_db}"')
    try:
        with mosquitto(workdir) as port, pg_database() as url:
            seed(url, LATENCY_DEVICES)
            ingest = Workers(workdir, url, port, influx, influx_db, workers, batch_size, f"bench-{workers}w")
            ingest.start()  # once, to create the persistent (shared) sessions, then stopped
            ingest.wait_connected()
            time.sleep(1.0)  # the SUBACK
            ingest.stop()
            sent, publish_rate = publish_all(port, devices, messages)
            progress(f"  {sent:,} messages queued in the broker ({publish_rate:,.0f} msg/s in); starting the ingest")
            ingest.start()
            first = None
            last_progress, last_value = time.monotonic(), -1.0
            try:
                while True:
                    now = time.monotonic()
                    if first is None and ingest.total("labshare_ingest_messages_total") > 0:
                        first = now
                    acked = ingest.total("labshare_ingest_acknowledged_total")
                    if acked != last_value:
                        last_value, last_progress = acked, now
                    if acked >= sent and influx.count(influx_db) >= sent:
                        verified = time.monotonic()
                        break
                    if ingest.process.poll() is not None:
                        raise RuntimeError(f"the ingest exited\n{ingest.log_tail()}")
                    if now - last_progress > STALL_S:
                        raise RuntimeError(f"no progress for {STALL_S:.0f} s at {acked:,.0f} acknowledged\n"
                                           f"{ingest.log_tail()}")
                    time.sleep(0.02 if first is None else 0.1)
                metrics = ingest.metrics()
            finally:
                ingest.stop()
            run = Run(sent, verified - first, publish_rate)
            run.counts = {"influx_points": influx.count(influx_db), **db_counts(url),
                          "acknowledged": int(sum(m.get("labshare_ingest_acknowledged_total", 0) for m in metrics)),
                          "spooled_retries": int(sum(v for m in metrics for k, v in m.items()
                                                     if k.startswith("labshare_ingest_retries_total")))}
            run.counts["per_worker"] = [int(m.get("labshare_ingest_acknowledged_total", 0)) for m in metrics]
            return run
    finally:
        influx.query(f'DROP DATABASE "{influx_db}"')


# --- state latency -------------------------------------------------------------------------------------------------

def paced_publisher(port: int, devices: int, stop, out) -> None:
    """Publisher process: each device once a second, spread evenly over the second (ts = send time)."""
    client = mqtt_client(f"bench-paced-{os.getpid()}")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    sent, k, started = 0, 0, time.monotonic()
    slices = 20  # 50 ms slices of the second
    while not stop.is_set():
        for s in range(slices):
            target = started + k + s / slices
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ts_ms = time.time_ns() // 1_000_000
            for n in range(s, devices, slices):
                client.publish(f"{PREFIX}/{device_name(n)}/metrics", payload(n, k, ts_ms), qos=1)
                sent += 1
        k += 1
    elapsed = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    out.put((sent, elapsed))


def scenario_latency(workdir: Path, changes: int, batch_size: int, influx: Influx, progress) -> dict:
    influx_db = f"bench_latency_{secrets.token_hex(3)}"
    influx.query(f'CREATE DATABASE "{influx_db}"')
    context = multiprocessing.get_context("spawn")
    try:
        with mosquitto(workdir) as port, pg_database() as url:
            seed(url, LATENCY_DEVICES)
            ingest = Workers(workdir, url, port, influx, influx_db, 1, batch_size, "bench-latency")
            ingest.start()
            stop, out = context.Event(), context.Queue()
            publisher = context.Process(target=paced_publisher, args=(port, LATENCY_DEVICES, stop, out))
            latencies: list[float] = []
            missed, warmup = 0, 0.0
            try:
                ingest.wait_connected()
                time.sleep(1.0)
                publisher.start()
                # warm-up: each device's first message takes the ingest's slow path once (no saved usage tail),
                # which leaves a backlog; measure once the ingest has caught up (lag < 0.5 s), or after 120 s
                warm_started = time.monotonic()
                while True:
                    time.sleep(1.0)
                    waited = time.monotonic() - warm_started
                    if (waited >= 5 and ingest.total("labshare_ingest_lag_seconds") < 0.5) or waited > 120:
                        break
                warmup = time.monotonic() - warm_started
                progress(f"  warm-up {warmup:.0f} s (ingest lag {ingest.total('labshare_ingest_lag_seconds'):.2f} s)")
                status = mqtt_client("bench-status-device")
                status.connect("127.0.0.1", port, keepalive=60)
                status.loop_start()
                with psycopg.connect(libpq(url), autocommit=True) as conn:
                    next_at = time.monotonic()
                    for i in range(changes):
                        state = "running" if i % 2 == 0 else "idle"
                        sent_ns = time.time_ns()
                        ts_ms = sent_ns // 1_000_000
                        status.publish(f"{PREFIX}/{STATUS_DEVICE}/status",
                                       json.dumps({"ts": ts_ms, "state": state}), qos=1, retain=True)
                        deadline = time.monotonic() + LATENCY_GIVE_UP_S
                        while True:
                            row = conn.execute("SELECT state, state_ts_ns FROM device WHERE device_id = %s",
                                               (STATUS_DEVICE,)).fetchone()
                            if row[1] == ts_ms * 1_000_000 and row[0] == state:
                                latencies.append((time.time_ns() - sent_ns) / 1e9)
                                break
                            if time.monotonic() > deadline:
                                break
                            time.sleep(0.005)
                        if len(latencies) <= i:
                            progress(f"  change {i} not in the database after {LATENCY_GIVE_UP_S:.0f} s: the ingest "
                                     "falls behind the background load; stopping")
                            missed = changes - len(latencies)
                            break
                        next_at += CHANGE_EVERY_S
                        time.sleep(max(0.0, next_at - time.monotonic()))
                status.disconnect()
                status.loop_stop()
                lag = ingest.total("labshare_ingest_lag_seconds")
            finally:
                stop.set()
                if publisher.pid is not None:
                    sent, elapsed = out.get(timeout=60)
                    publisher.join(30)
                else:
                    sent, elapsed = 0, 1.0
                ingest.stop()
            counts = db_counts(url)
    finally:
        influx.query(f'DROP DATABASE "{influx_db}"')
    return {"latencies": latencies, "missed": missed, "background_rate": sent / elapsed, "background_sent": sent,
            "lag": lag, "warmup": warmup, "counts": counts}


# --- the report ---------------------------------------------------------------------------------------------------

def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]  # nearest rank


def report(args, found: dict[str, str], bare: Run, one: Run, two: Run, latency: dict | None,
           load: tuple[float, float], total_s: float) -> tuple[str, bool]:
    lines = [
        "LabShare ingest benchmark (bench/ingest.py" + (" --quick)" if args.quick else ")"),
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs (load average {load[0]:.1f} at the start, "
        f"{load[1]:.1f} at the end; other work shares the machine: figures are noisy), all on 127.0.0.1",
        f"Mosquitto {found['mosquitto'].removeprefix('mosquitto version ')} (docs/mosquitto/mosquitto.conf: "
        "persistence, autosave_interval 1, max_inflight_messages 1000), "
        f"InfluxDB {found['influxdb'].removeprefix('InfluxDB ')} via its v1 /write API (influxdb-v1://; "
        f"1.6 has no /api/v2/write), PostgreSQL {found['postgresql']}, Python {found['python']}, "
        f"paho-mqtt {found['paho-mqtt']}",
        f"load: {DEVICES} devices, {one.messages:,} metrics messages, QoS 1, "
        '{"ts": <epoch ms>, "values": {"power_w": …, "temp_c": …}}, '
        f"{STEP_MS} ms apart per device; {PUBLISHERS} publisher processes",
        "method: the whole backlog is published into the consumer's persistent session first, then the consumer",
        "starts; rate = messages / (first message received → last received (bare) or count in InfluxDB = N (ingest))",
        f"ingest: `labshare ingest --workers N --batch-size {args.batch_size}` (batch wait 0.1 s, Receive Maximum = "
        "batch size), PostgreSQL relational store, InfluxDB time series",
        "",
        f"{'figure':52}{'value':>14}  {'reference':>24}  {'ratio':>6}  target",
    ]
    verdicts: list[bool] = []

    def row(label: str, value: str, reference: str = "", ratio: str = "", target: str = "",
            met: bool | None = None) -> None:
        verdict = "" if met is None else (" met" if met else " MISSED")
        if met is not None:
            verdicts.append(met)
        lines.append(f"{label:52}{value:>14}  {reference:>24}  {ratio:>6}  {target}{verdict}".rstrip())

    row("publishers into the broker (4 processes)", f"{one.publish_rate:,.0f} msg/s")
    row("bare paho QoS 1 subscriber (ceiling)", f"{bare.rate:,.0f} msg/s",
        f"{BARE_REFERENCE:,.0f} msg/s (env. notes)", f"{bare.rate / BARE_REFERENCE:.2f}")
    one_ratio = one.rate / bare.rate if bare.rate else 0.0
    row("1 worker, end to end (verified in InfluxDB)", f"{one.rate:,.0f} msg/s",
        f"bare {bare.rate:,.0f} msg/s", f"{one_ratio:.2f}", f"≥ {TARGET_VS_BARE:.1f} x bare",
        one_ratio >= TARGET_VS_BARE)
    one_lossless = one.counts["influx_points"] == one.messages == one.counts["samples"] and not one.counts[
        "dead_letters"]
    row("  1 worker: points in InfluxDB / sample rows", f"{one.counts['influx_points']:,} / {one.counts['samples']:,}",
        f"{one.messages:,} sent", "", "zero loss", one_lossless)
    two_ratio = two.rate / one.rate if one.rate else 0.0
    row("2 workers, end to end (verified in InfluxDB)", f"{two.rate:,.0f} msg/s",
        f"1 worker {one.rate:,.0f} msg/s", f"{two_ratio:.2f}", "≥ 1.0 x 1 worker", two_ratio >= 1.0)
    two_lossless = two.counts["influx_points"] == two.messages == two.counts["samples"] and not two.counts[
        "dead_letters"]
    row("  2 workers: points in InfluxDB / sample rows", f"{two.counts['influx_points']:,} / {two.counts['samples']:,}",
        f"{two.messages:,} sent", "", "zero loss", two_lossless)
    row("  2 workers: ratio to the bare subscriber", "", "", f"{two.rate / bare.rate:.2f}" if bare.rate else "")
    if latency is not None:
        lat, missed = latency["latencies"], latency["missed"]
        if missed:  # the rest were not measured: the ingest fell behind the background load
            lat = lat + [math.inf] * missed
        p50, p99 = statistics.median(lat), quantile(lat, 0.99)

        def shown(seconds: float) -> str:
            return f"> {LATENCY_GIVE_UP_S:.0f} s" if math.isinf(seconds) else f"{seconds * 1000:,.0f} ms"

        seen = f"{len(lat) - missed} of {len(lat)} changes seen" if missed else f"{len(lat)} changes"
        row(f"state change → device row, p50 ({seen})", shown(p50))
        row("state change → device row, p99", shown(p99), "1,000 ms",
            "" if math.isinf(p99) else f"{p99 / TARGET_P99_S:.2f}", "< 1 s", p99 < TARGET_P99_S)
        row("state change → device row, max", shown(max(lat)))
        row("  background: 1,000 devices once a second", f"{latency['background_rate']:,.0f} msg/s")
    lines += [
        "",
        f"check: bare subscriber received {bare.counts['received']:,}; 1 worker acknowledged "
        f"{one.counts['acknowledged']:,}, dead letters {one.counts['dead_letters']}, usage sessions "
        f"{one.counts['sessions']:,}, store retries {one.counts['spooled_retries']}; 2 workers acknowledged "
        + " + ".join(f"{n:,}" for n in two.counts["per_worker"])
        + f", dead letters {two.counts['dead_letters']}, usage sessions {two.counts['sessions']:,}, store retries "
        f"{two.counts['spooled_retries']}",
    ]
    if latency is not None:
        lines.append(f"check, latency run: warm-up until the ingest caught up {latency['warmup']:.0f} s, "
                     f"{latency['background_sent']:,} background messages, dead letters "
                     f"{latency['counts']['dead_letters']}, ingest lag at the end {latency['lag']:.2f} s")
    for note in bare.notes + one.notes + two.notes:
        lines.append(f"note: {note}")
    lines.append(f"total run time {total_s:.0f} s")
    return "\n".join(line.rstrip() for line in lines) + "\n", all(verdicts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MESSAGES:,} messages, {QUICK_CHANGES} changes")
    parser.add_argument("--messages", type=int, help=f"messages per throughput run (default {MESSAGES:,})")
    parser.add_argument("--batch-size", type=int, default=500, help="the ingest's --batch-size (default 500)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    messages = args.messages or (QUICK_MESSAGES if args.quick else MESSAGES)
    messages -= messages % DEVICES
    changes = QUICK_CHANGES if args.quick else CHANGES
    started, load_at_start = time.perf_counter(), os.getloadavg()[0]

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    found = versions()
    workdir = Path(tempfile.mkdtemp(prefix="labshare-bench-ingest-"))
    try:
        with influxd(workdir) as influx:
            progress(f"bare subscriber, {messages:,} messages …")
            bare = scenario_bare(workdir, messages, DEVICES)
            progress(f"  {bare.rate:,.0f} msg/s")
            progress("one worker …")
            one = scenario_workers(workdir, messages, DEVICES, 1, args.batch_size, influx, progress)
            progress(f"  {one.rate:,.0f} msg/s")
            progress("two workers …")
            two = scenario_workers(workdir, messages, DEVICES, 2, args.batch_size, influx, progress)
            progress(f"  {two.rate:,.0f} msg/s")
            latency = None
            if not args.skip_latency:
                progress(f"state latency, {changes} changes …")
                latency = scenario_latency(workdir, changes, args.batch_size, influx, progress)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text, met = report(args, found, bare, one, two, latency, (load_at_start, os.getloadavg()[0]),
                       time.perf_counter() - started)
    print(text, end="")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
