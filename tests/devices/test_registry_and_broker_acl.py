"""Device registry: credentials shown once and stored as Mosquitto hashes, and the exported password
file and ACL, proven against a real Mosquitto: a device may publish only below its own topic prefix."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select

from core.audit import AuditEntry
from core.errors import Forbidden, InvalidInput
from devices.credentials import mosquitto_hash, verify
from devices.models import Device
from devices.registry import DeviceData, add_device, export_mosquitto, rotate_credential, set_enabled
from tests.factories import make_facility, make_resource, make_user
from tests.services import MosquittoServer


def _device(db, device_id="sem-01", **overrides):
    resource = overrides.pop("resource", None) or make_resource(db)
    source = overrides.pop("usage_source", "status")
    data = DeviceData(device_id=device_id, resource_id=resource.id, usage_source=source, **overrides)
    return add_device(db, None, data)


def test_the_secret_is_returned_once_and_only_its_mosquitto_hash_is_stored(db):
    device, secret = _device(db)
    assert device.credential_hash.startswith("$7$101$")
    assert secret not in device.credential_hash
    assert verify(secret, device.credential_hash)
    assert not verify(secret + "x", device.credential_hash)
    assert db.scalar(select(func.count()).where(AuditEntry.action == "device.created")) == 1


def test_mosquitto_hash_is_deterministic_for_a_given_salt():
    assert mosquitto_hash("pw", salt=b"0" * 12) == mosquitto_hash("pw", salt=b"0" * 12)
    assert mosquitto_hash("pw", salt=b"0" * 12) != mosquitto_hash("pw", salt=b"1" * 12)


@pytest.mark.parametrize(("overrides", "field"), [
    ({"device_id": "bad id"}, "device_id"),
    ({"device_id": "x" * 65}, "device_id"),
    ({"usage_source": "vibes"}, "usage_source"),
    ({"usage_source": "power"}, "power_threshold_w"),
    ({"usage_source": "power", "power_threshold_w": "-5"}, "power_threshold_w"),
    ({"usage_source": "power", "power_threshold_w": "NaN"}, "power_threshold_w"),
    ({"debounce_s": -1}, "debounce_s"),
    ({"heartbeat_timeout_s": 5}, "heartbeat_timeout_s"),
])
def test_invalid_devices_are_refused_and_nothing_is_written(db, overrides, field):
    resource = make_resource(db)
    before = db.scalar(select(func.count()).select_from(Device))
    values = {"device_id": "dev-1", "resource_id": resource.id, "usage_source": "status", **overrides}
    with pytest.raises(InvalidInput) as caught:
        add_device(db, None, DeviceData(**values))
    assert field in caught.value.fields
    assert db.scalar(select(func.count()).select_from(Device)) == before


def test_duplicate_device_id_is_refused(db):
    _device(db, "dup")
    with pytest.raises(InvalidInput) as caught:
        _device(db, "dup")
    assert "device_id" in caught.value.fields


def test_only_the_resources_lab_managers_register_devices(db):
    manager, stranger = make_user(db, roles=("lab_manager",)), make_user(db, roles=("lab_manager",))
    facility = make_facility(db, managers=(manager,))
    resource = make_resource(db, facility=facility)
    device, _ = add_device(db, manager, DeviceData("ok-1", resource.id, "power", power_threshold_w="150"))
    assert device.power_threshold_w == Decimal("150.00")
    with pytest.raises(Forbidden):
        add_device(db, stranger, DeviceData("no-1", resource.id, "status"))


def test_rotating_the_credential_invalidates_the_old_secret(db):
    device, old = _device(db, "rot-1")
    new = rotate_credential(db, None, device.id)
    assert verify(new, device.credential_hash)
    assert not verify(old, device.credential_hash)


class Client:
    """A paho MQTT 5 client that records what it receives and whether the broker dropped it."""

    def __init__(self, broker: MosquittoServer, username: str, password: str):
        self.messages: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.refused: int | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{username}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.refused = reason_code.value
        self.connected.set()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_exported_files_let_each_device_publish_only_below_its_own_prefix(db, tmp_path):
    resource = make_resource(db)
    _dev_a, secret_a = _device(db, "dev-a", resource=resource)
    _dev_b, _secret_b = _device(db, "dev-b", resource=resource)
    disabled, secret_c = _device(db, "dev-c", resource=resource)
    set_enabled(db, None, disabled.id, False)
    passwd, acl, count = export_mosquitto(db, tmp_path, ingest_username="ingest", ingest_password="ingest-pw")
    assert count == 2
    assert "dev-c" not in passwd.read_text()
    assert (passwd.stat().st_mode & 0o777) == 0o600

    with MosquittoServer(password_file=passwd, acl_file=acl) as broker:
        ingest = Client(broker, "ingest", "ingest-pw")
        assert ingest.connected.wait(5)
        assert ingest.refused is None
        ingest.client.subscribe("$share/labshare-ingest/labshare/v1/#", qos=1)
        time.sleep(0.3)
        device = Client(broker, "dev-a", secret_a)
        assert device.connected.wait(5)
        assert device.refused is None
        device.client.publish("labshare/v1/dev-a/status", b'{"state": "idle"}', qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while not ingest.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ingest.messages == [("labshare/v1/dev-a/status", b'{"state": "idle"}')]

        # Under another device's prefix: not delivered (Mosquitto 2.0.11 also drops the publisher).
        device.client.publish("labshare/v1/dev-b/status", b'{"state": "fault"}', qos=1)
        device.disconnected.wait(3)
        time.sleep(0.5)
        assert all(topic != "labshare/v1/dev-b/status" for topic, _ in ingest.messages)

        wrong = Client(broker, "dev-b", "not-the-secret")
        assert wrong.connected.wait(5)
        assert wrong.refused is not None
        disabled_client = Client(broker, "dev-c", secret_c)
        assert disabled_client.connected.wait(5)
        assert disabled_client.refused is not None
        for client in (ingest, device, wrong, disabled_client):
            client.close()


def test_the_ingest_user_name_cannot_be_a_device_id(db, tmp_path):
    _device(db, "ingest")
    with pytest.raises(InvalidInput):
        export_mosquitto(db, tmp_path, ingest_username="ingest", ingest_password="pw")
    assert not (tmp_path / "passwd").exists()
