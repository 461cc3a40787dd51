"""telemetry.mqtt_client.IngestClient against a real Mosquitto: buffered reads must deliver every message whole
and in order whatever its size (packets split across reads, several in one read), batched acknowledgements
must acknowledge exactly the messages named (the broker redelivers the others on the next connection), and
per-topic callbacks must still work."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from telemetry.mqtt_client import CHUNK_BYTES, IngestClient
from tests.services import MosquittoServer, MqttPublisher, wait_for


@pytest.fixture
def broker():
    with MosquittoServer() as server:
        yield server


class Subscriber:
    """An IngestClient with a persistent MQTT 5 session and manual acknowledgement, collecting messages."""

    def __init__(self, broker: MosquittoServer, client_id: str, topic: str = "t/#", ack: bool = False) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.subscribed = threading.Event()
        self.client = IngestClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                                   manual_ack=True)

        def on_message(client, _userdata, message):
            self.messages.append(message)
            if ack:
                client.ack_many([message.mid])

        self.client.on_message = on_message
        self.client.on_subscribe = lambda *_args: self.subscribed.set()
        self.client.on_connect = lambda client, *_args: client.subscribe(topic, qos=1)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, keepalive=30, clean_start=False, properties=properties)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise AssertionError("no SUBACK")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_messages_of_every_size_arrive_whole_and_in_order(broker):
    subscriber = Subscriber(broker, "sizes", ack=True)  # beyond the broker's inflight window
    # small ones (many per read), one just under and several over a read's 64 KiB (split across reads), and
    # a remaining length that needs 1, 2 and 3 bytes
    sizes = [0, 1, 5, 127, 128, 300, 16_383, 16_384, CHUNK_BYTES - 20, CHUNK_BYTES, CHUNK_BYTES + 1,
             3 * CHUNK_BYTES + 7] + [20] * 2000
    payloads = [bytes([n % 251]) * size + str(n).encode() for n, size in enumerate(sizes)]
    publisher = MqttPublisher(broker)
    try:
        infos = [publisher.client.publish(f"t/{n % 7}", payload, qos=1) for n, payload in enumerate(payloads)]
        for info in infos:
            info.wait_for_publish(timeout=30)
        wait_for(lambda: len(subscriber.messages) >= len(payloads), 30, what="every message")
        assert [m.payload for m in subscriber.messages] == payloads
        assert [m.topic for m in subscriber.messages] == [f"t/{n % 7}" for n in range(len(payloads))]
    finally:
        publisher.close()
        subscriber.close()


def test_ack_many_acknowledges_exactly_the_messages_named(broker):
    publisher = MqttPublisher(broker)
    subscriber = Subscriber(broker, "acks")
    try:
        for n in range(40):
            publisher.publish("t/x", f"m{n}")
        wait_for(lambda: len(subscriber.messages) == 40, 20, what="40 messages")
        even = [m for m in subscriber.messages if int(m.payload[1:]) % 2 == 0]
        subscriber.client.ack_many(m.mid for m in even)
        subscriber.client.ack_many([])  # nothing to acknowledge: nothing is sent
        subscriber.close()
    finally:
        publisher.close()
    # the broker keeps what was not acknowledged and delivers it again on the next connection
    again = Subscriber(broker, "acks")
    try:
        wait_for(lambda: len(again.messages) >= 20, 20, what="the redelivered messages")
        redelivered = sorted(int(m.payload[1:]) for m in again.messages)
        assert redelivered == list(range(1, 40, 2))
        assert all(m.dup for m in again.messages)
        again.client.ack_many(m.mid for m in again.messages)
        again.close()
    finally:
        again.client.loop_stop()
    last = Subscriber(broker, "acks")
    try:
        publisher = MqttPublisher(broker)
        publisher.publish("t/x", "after")
        wait_for(lambda: len(last.messages) >= 1, 20, what="the new message")
        assert [m.payload for m in last.messages] == [b"after"]  # everything before it was acknowledged
        publisher.close()
    finally:
        last.close()


def test_topic_callbacks_still_take_their_messages(broker):
    subscriber = Subscriber(broker, "callbacks")
    special: list[bytes] = []
    subscriber.client.message_callback_add("t/special", lambda _c, _u, message: special.append(message.payload))
    publisher = MqttPublisher(broker)
    try:
        publisher.publish("t/special", "s")
        publisher.publish("t/plain", "p")
        wait_for(lambda: special and subscriber.messages, 20, what="both messages")
        assert special == [b"s"]
        assert [m.payload for m in subscriber.messages] == [b"p"]
    finally:
        publisher.close()
        subscriber.close()


def test_a_subscriber_resumes_reading_after_the_broker_restarts(broker):
    """The read buffer belongs to one socket: bytes of the old connection must not leak into the new one."""
    subscriber = Subscriber(broker, "restart")
    reconnected = threading.Event()

    def on_connect(client, *_args):  # set once connected: called only for the new connection
        client.subscribe("t/#", qos=1)
        reconnected.set()

    subscriber.client.on_connect = on_connect
    subscriber.client.reconnect_delay_set(min_delay=1, max_delay=1)
    publisher = MqttPublisher(broker)
    try:
        publisher.publish("t/a", "before")
        wait_for(lambda: len(subscriber.messages) == 1, 20, what="the first message")
        subscriber.client.ack_many([subscriber.messages[0].mid])
        broker.restart()
        assert reconnected.wait(30)
        publisher.publish("t/a", "after" * 10_000)
        wait_for(lambda: any(m.payload.startswith(b"after") for m in subscriber.messages), 30, what="the second")
        assert [m.payload for m in subscriber.messages if m.payload.startswith(b"after")] == [b"after" * 10_000]
    finally:
        publisher.close()
        subscriber.close()
