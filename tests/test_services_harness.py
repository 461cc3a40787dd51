"""The test harness in tests/services.py runs real Mosquitto, InfluxDB and PostgreSQL instances that behave.

These tests also pin down the broker and time-series behaviour LabShare relies on: persistent MQTT 5
sessions survive disconnects, broker restarts and crashes with the shipped docs/mosquitto/mosquitto.conf;
per-device passwords and ACLs work; influxdb-client's v2 writes reach InfluxDB through the gateway.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import queue
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from influxdb_client import InfluxDBClient, Point
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
from influxdb_client.rest import ApiException
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.services import (
    MOSQUITTO_CONF,
    InfluxDBServer,
    InfluxV2Gateway,
    MosquittoServer,
    PrivatePostgres,
    ServiceError,
    find_postgres_admin_url,
    free_port,
    libpq_url,
    series_values,
)

TIMEOUT_S = 10.0


# --------------------------------------------------------------------------------------------------
# MQTT helpers
# --------------------------------------------------------------------------------------------------


class MqttPeer:
    """A paho-mqtt 2 client (MQTT 5) whose callbacks feed queues the test reads."""

    def __init__(
        self,
        broker: MosquittoServer,
        client_id: str,
        *,
        clean_start: bool = False,
        session_expiry_s: int = 3600,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.broker = broker
        self.clean_start = clean_start
        self.session_expiry_s = session_expiry_s
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connacks: queue.Queue[tuple[Any, bool]] = queue.Queue()
        self.disconnects: queue.Queue[Any] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._looping = False

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connacks.put((reason_code, flags.session_present))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.disconnects.put(reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[Any], properties: Any
    ) -> None:
        self.subacks.put(reason_codes)

    def connect(self) -> tuple[Any, bool]:
        """Connect and return (CONNACK reason code, session_present)."""
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.session_expiry_s
        self.client.connect(self.broker.host, self.broker.port, clean_start=self.clean_start, properties=properties)
        self.client.loop_start()
        self._looping = True
        return self.connacks.get(timeout=TIMEOUT_S)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.client.subscribe(topic, qos=qos)
        reason_codes = self.subacks.get(timeout=TIMEOUT_S)
        assert [code.value for code in reason_codes] == [qos]

    def publish(self, topic: str, payloads: list[bytes], qos: int = 1) -> None:
        """Publish and wait until the broker acknowledged every message."""
        infos = [self.client.publish(topic, payload, qos=qos) for payload in payloads]
        for info in infos:
            info.wait_for_publish(timeout=TIMEOUT_S)
            assert info.is_published()

    def receive(self, count: int, timeout: float = TIMEOUT_S) -> list[mqtt.MQTTMessage]:
        deadline = time.monotonic() + timeout
        received = []
        while len(received) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                received.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                break
        return received

    def close(self) -> None:
        """DISCONNECT (the session stays on the broker for its expiry interval) and stop the loop thread."""
        if self._looping:
            self.client.disconnect()
            self.client.loop_stop()
            self._looping = False


@pytest.fixture
def peers() -> Iterator[list[MqttPeer]]:
    """Collects the peers a test creates and closes them all at the end, even when the test fails."""
    created: list[MqttPeer] = []
    yield created
    for peer in created:
        peer.close()


def new_peer(peers: list[MqttPeer], broker: MosquittoServer, client_id: str, **options: Any) -> MqttPeer:
    peer = MqttPeer(broker, client_id, **options)
    peers.append(peer)
    return peer


def payloads(prefix: str, count: int) -> list[bytes]:
    return [json.dumps({"id": f"{prefix}-{n}", "type": "run_started"}).encode() for n in range(count)]


def wait_for_autosave(broker: MosquittoServer, after_ns: int) -> None:
    """Wait until Mosquitto has written its persistence file since after_ns (autosave_interval 1)."""
    db_file = broker.persistence_dir / "mosquitto.db"
    deadline = time.monotonic() + TIMEOUT_S
    while not (db_file.exists() and db_file.stat().st_mtime_ns > after_ns):
        assert time.monotonic() < deadline, "mosquitto did not autosave"
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------------
# Mosquitto
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker() -> Iterator[MosquittoServer]:
    with MosquittoServer() as server:
        yield server


def test_mosquitto_test_config_keeps_shipped_durability_settings_and_replaces_the_rest() -> None:
    server = MosquittoServer()
    try:
        config = server.config_text()
    finally:
        server.close()
    active = [line.strip() for line in config.splitlines() if line.strip() and not line.startswith("#")]
    for setting in (
        "persistence true",
        "autosave_interval 1",
        "max_queued_messages 0",
        "max_queued_bytes 104857600",
        "max_inflight_messages 1000",
    ):
        assert setting in active
    assert f"listener {server.port} 127.0.0.1" in active
    assert "allow_anonymous true" in active
    assert "user root" in active
    assert not [line for line in active if line.startswith(("password_file", "acl_file", "pid_file"))]
    assert [line for line in active if line.startswith("listener")] == [f"listener {server.port} 127.0.0.1"]
    assert "listener 1883" in MOSQUITTO_CONF.read_text(encoding="utf-8")


def test_mosquitto_delivers_qos1_message_to_mqtt5_subscriber(broker: MosquittoServer, peers: list[MqttPeer]) -> None:
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    subscriber = new_peer(peers, broker, "sub-roundtrip")
    reason, _ = subscriber.connect()
    assert not reason.is_failure
    subscriber.subscribe("labshare/v1/+/events")
    publisher = new_peer(peers, broker, "pub-roundtrip", clean_start=True, session_expiry_s=0)
    publisher.connect()

    publisher.publish("labshare/v1/dev1/events", [b'{"id": "e1"}'])

    [message] = subscriber.receive(1)
    assert (message.topic, message.payload, message.qos) == ("labshare/v1/dev1/events", b'{"id": "e1"}', 1)


def test_persistent_session_gets_messages_queued_while_disconnected(
    broker: MosquittoServer, peers: list[MqttPeer]
) -> None:
    topic = "labshare/v1/dev-queue/events"
    subscriber = new_peer(peers, broker, "ingest-queue")
    subscriber.connect()
    subscriber.subscribe(topic)
    subscriber.close()
    publisher = new_peer(peers, broker, "pub-queue", clean_start=True, session_expiry_s=0)
    publisher.connect()
    # More than Mosquitto's default max_queued_messages (1000), which would drop the rest.
    sent = payloads("q", 1500)

    publisher.publish(topic, sent)

    again = new_peer(peers, broker, "ingest-queue")
    reason, session_present = again.connect()
    assert not reason.is_failure
    assert session_present
    assert [m.payload for m in again.receive(len(sent))] == sent


def test_persistent_session_survives_broker_restart_and_crash(peers: list[MqttPeer]) -> None:
    topic = "labshare/v1/dev-restart/events"
    with MosquittoServer() as broker:
        port = broker.port
        subscriber = new_peer(peers, broker, "ingest-restart")
        subscriber.connect()
        subscriber.subscribe(topic)
        subscriber.close()
        publisher = new_peer(peers, broker, "pub-restart", clean_start=True, session_expiry_s=0)
        publisher.connect()
        before_restart = payloads("restart", 1200)
        publisher.publish(topic, before_restart)
        publisher.close()

        broker.restart()  # SIGTERM: Mosquitto saves everything on the way out

        assert broker.port == port
        again = new_peer(peers, broker, "ingest-restart")
        reason, session_present = again.connect()
        assert not reason.is_failure
        assert session_present
        assert [m.payload for m in again.receive(len(before_restart))] == before_restart
        again.close()

        publisher = new_peer(peers, broker, "pub-crash", clean_start=True, session_expiry_s=0)
        publisher.connect()
        before_crash = payloads("crash", 200)
        publisher.publish(topic, before_crash)
        acknowledged_ns = time.time_ns()
        publisher.close()
        wait_for_autosave(broker, acknowledged_ns)

        broker.kill()  # SIGKILL: only what autosave wrote survives
        broker.start()

        after_crash = new_peer(peers, broker, "ingest-restart")
        reason, session_present = after_crash.connect()
        assert session_present
        assert [m.payload for m in after_crash.receive(len(before_crash))] == before_crash
        assert after_crash.receive(1, timeout=0.3) == []  # nothing delivered twice


# --------------------------------------------------------------------------------------------------
# Mosquitto with per-device passwords and ACL
# --------------------------------------------------------------------------------------------------


def mosquitto_password_line(username: str, password: str, iterations: int = 101, salt: bytes | None = None) -> str:
    """One password-file line in mosquitto_passwd's `$7$` format (PBKDF2-HMAC-SHA512, 64-byte key)."""
    salt = os.urandom(12) if salt is None else salt
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    return f"{username}:$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


DEVICE_ACL = """\
user dev1
topic write labshare/v1/dev1/#

user ingest
topic read labshare/v1/#
"""


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    directory = tmp_path_factory.mktemp("mosquitto-auth")
    password_file = directory / "passwd"
    password_file.write_text(
        mosquitto_password_line("dev1", "dev1-secret")
        + "\n"
        + mosquitto_password_line("ingest", "ingest-secret")
        + "\n",
        encoding="utf-8",
    )
    acl_file = directory / "acl"
    acl_file.write_text(DEVICE_ACL, encoding="utf-8")
    with MosquittoServer(password_file=password_file, acl_file=acl_file) as server:
        yield server


def test_hashlib_reproduces_mosquitto_passwd(tmp_path: Path) -> None:
    password_file = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(password_file), "dev1", "s3cret"], check=True)
    written = password_file.read_text(encoding="utf-8").strip()
    username, _, hashed = written.partition(":")
    _, scheme, iterations, salt_b64, _ = hashed.split("$")

    assert scheme == "7"
    assert mosquitto_password_line(username, "s3cret", int(iterations), base64.b64decode(salt_b64)) == written


def test_mosquitto_refuses_wrong_password_and_anonymous_clients(
    auth_broker: MosquittoServer, peers: list[MqttPeer]
) -> None:
    good = new_peer(peers, auth_broker, "dev1", username="dev1", password="dev1-secret")
    reason, _ = good.connect()
    assert not reason.is_failure

    wrong = new_peer(peers, auth_broker, "dev1-wrong", username="dev1", password="not-the-secret")
    reason, _ = wrong.connect()
    assert reason.is_failure
    assert reason.value in (134, 135)  # bad user name or password / not authorized

    anonymous = new_peer(peers, auth_broker, "anonymous")
    reason, _ = anonymous.connect()
    assert reason.is_failure


def test_mosquitto_acl_lets_a_device_publish_only_below_its_own_topic(
    auth_broker: MosquittoServer, peers: list[MqttPeer]
) -> None:
    ingest = new_peer(peers, auth_broker, "ingest-acl", username="ingest", password="ingest-secret")
    ingest.connect()
    ingest.subscribe("$share/labshare-ingest/labshare/v1/#")

    intruder = new_peer(peers, auth_broker, "dev1-intruder", username="dev1", password="dev1-secret")
    intruder.connect()
    intruder.client.publish("labshare/v1/dev2/metrics", b'{"values": {"power_w": 1}}', qos=1)
    # Mosquitto 2.0.11 closes the connection of a client whose publish the ACL denies (issue #2579).
    intruder.disconnects.get(timeout=TIMEOUT_S)

    device = new_peer(peers, auth_broker, "dev1-honest", username="dev1", password="dev1-secret")
    device.connect()
    device.publish("labshare/v1/dev1/metrics", [b'{"values": {"power_w": 2}}'])

    [message] = ingest.receive(1)
    assert message.topic == "labshare/v1/dev1/metrics"
    assert ingest.receive(1, timeout=0.3) == []


def test_mosquitto_start_failure_reports_the_log(tmp_path: Path) -> None:
    server = MosquittoServer(password_file=tmp_path / "missing-passwd")
    try:
        with pytest.raises(ServiceError, match=r"(?s)exited with status.*missing-passwd"):
            server.start()
        assert not server.running
    finally:
        server.close()


# --------------------------------------------------------------------------------------------------
# InfluxDB and the v2 gateway
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def v2_write_api(gateway: InfluxV2Gateway, **options: Any) -> Iterator[WriteApi]:
    """influxdb-client as LabShare uses it: synchronous writes to /api/v2/write, token "user:password"."""
    with (
        InfluxDBClient(url=gateway.url, token="u:p", org="-", **options) as client,
        client.write_api(write_options=SYNCHRONOUS) as write_api,
    ):
        yield write_api


@pytest.fixture(scope="module")
def influx() -> Iterator[InfluxDBServer]:
    with InfluxDBServer() as server:
        server.create_database("labshare")
        yield server


@pytest.fixture(scope="module")
def gateway(influx: InfluxDBServer) -> Iterator[InfluxV2Gateway]:
    with InfluxV2Gateway(influx) as server:
        yield server


def test_influxdb_write_and_query_line_protocol(influx: InfluxDBServer) -> None:
    assert influx.url == f"http://127.0.0.1:{influx.port}"
    influx.write(
        "labshare",
        "metrics,device_id=dev1 power_w=812.5,running=true 1764000000123456789\n"
        "metrics,device_id=dev2 power_w=3.0,running=false 1764000000123456790\n",
    )

    rows = series_values(influx.query("labshare", "SELECT * FROM metrics WHERE device_id = 'dev1'"))

    assert rows == [{"time": 1764000000123456789, "device_id": "dev1", "power_w": 812.5, "running": True}]


def test_influxdb_client_v2_write_through_gateway_lands_in_influxdb(
    influx: InfluxDBServer, gateway: InfluxV2Gateway
) -> None:
    with v2_write_api(gateway) as write_api:
        write_api.write(
            bucket="labshare/autogen",
            record=Point("gw_metrics").tag("device_id", "dev9").field("power_w", 101.25).time(1764000001000000007),
        )

    rows = series_values(influx.query("labshare", "SELECT * FROM gw_metrics"))
    assert rows == [{"time": 1764000001000000007, "device_id": "dev9", "power_w": 101.25}]
    writes = [r for r in gateway.requests if r["path"] == "/api/v2/write"]
    assert writes[-1]["authorization"] == "Token u:p"
    assert writes[-1]["query"]["bucket"] == "labshare/autogen"
    assert writes[-1]["status"] == 204


def test_gateway_unzips_gzip_bodies(influx: InfluxDBServer, gateway: InfluxV2Gateway) -> None:
    with v2_write_api(gateway, enable_gzip=True) as write_api:
        write_api.write(bucket="labshare", record="gz_metrics,device_id=dev3 temp_c=21.5 1764000002000000000")

    assert gateway.requests[-1]["content_encoding"] == "gzip"
    rows = series_values(influx.query("labshare", "SELECT * FROM gz_metrics"))
    assert rows == [{"time": 1764000002000000000, "device_id": "dev3", "temp_c": 21.5}]


def test_influxdb_client_write_to_unknown_database_raises_404(gateway: InfluxV2Gateway) -> None:
    with v2_write_api(gateway) as write_api, pytest.raises(ApiException) as caught:
        write_api.write(bucket="no_such_db/autogen", record="m v=1 1")

    assert caught.value.status == 404
    body = caught.value.body
    assert "database not found" in (body.decode() if isinstance(body, bytes) else body)


def test_gateway_passes_ping_health_and_query(influx: InfluxDBServer, gateway: InfluxV2Gateway) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{gateway.url}/ping", timeout=TIMEOUT_S) as response:
        assert response.status == 204
    with opener.open(f"{gateway.url}/health", timeout=TIMEOUT_S) as response:
        assert response.status == 200
        assert json.load(response)["status"] == "pass"
    with opener.open(f"{gateway.url}/query?q=SHOW+DATABASES", timeout=TIMEOUT_S) as response:
        assert ["labshare"] in json.load(response)["results"][0]["series"][0]["values"]


def test_influxdb_keeps_data_across_restart_and_crash() -> None:
    with InfluxDBServer() as server:
        port = server.port
        server.create_database("durable")
        server.write("durable", "m,device_id=a v=1i 1000000001")

        server.restart()

        assert server.port == port
        server.write("durable", "m,device_id=a v=2i 1000000002")

        server.kill()
        server.start()

        rows = series_values(server.query("durable", "SELECT v FROM m"))
        assert [row["v"] for row in rows] == [1, 2]


def test_gateway_reports_influxdb_down_as_503() -> None:
    with InfluxDBServer() as server, InfluxV2Gateway(server) as gateway:
        server.create_database("db")
        server.stop()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with pytest.raises(urllib.error.HTTPError) as caught:
            opener.open(f"{gateway.url}/health", timeout=TIMEOUT_S)
        with caught.value:
            assert caught.value.code == 503
        with v2_write_api(gateway) as write_api, pytest.raises(ApiException) as write_error:
            write_api.write(bucket="db/autogen", record="m v=1 1")
        assert write_error.value.status == 503


# --------------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------------


def test_find_postgres_admin_url_prefers_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABSHARE_TEST_PG_ADMIN_URL", "postgresql+psycopg://someone@127.0.0.1:6543/x")

    assert find_postgres_admin_url() == "postgresql+psycopg://someone@127.0.0.1:6543/x"


def test_find_postgres_admin_url_returns_a_working_local_server_or_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LABSHARE_TEST_PG_ADMIN_URL", raising=False)

    url = find_postgres_admin_url()

    if url is not None:
        assert url == "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        with psycopg.connect(libpq_url(url), connect_timeout=2) as connection:
            assert connection.execute("SELECT current_user").fetchone() == ("postgres",)


def test_private_postgres_starts_accepts_connections_and_stops() -> None:
    with PrivatePostgres() as postgres:
        with psycopg.connect(libpq_url(postgres.admin_url), connect_timeout=5) as connection:
            assert connection.execute("SHOW fsync").fetchone() == ("off",)
            connection.execute("CREATE EXTENSION btree_gist")
        port = postgres.port
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2)


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
