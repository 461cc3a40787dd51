"""A paho-mqtt client for a subscriber that takes thousands of QoS 1 messages a second.

paho 2.2 reads an incoming packet with at least three `recv()` calls (the command byte, the remaining length
byte by byte, then the rest) and handles one packet per turn of its network loop, each turn a `select()` and
a keep-alive check; and each manual acknowledgement is its own queued packet, its own wake-up of the network
loop and its own `send()`. For the ingest that was most of the network thread's work, done under the same
GIL as the processing: a bare QoS 1 subscriber spent 54 µs of CPU per message, 38 µs reading as here
(bench/ingest.py backlog of 100,000 messages, 18,400 → 26,300 msg/s).

So this class changes only how bytes move:
- `_sock_recv` serves paho's small reads from a buffer filled by one `recv()` of up to 64 KiB, and
  `loop_read` keeps handling packets while bytes are buffered (`select()` cannot see the buffer, so it is
  asked only once the buffer is empty);
- `ack_many` queues the PUBACKs of a whole batch as one write;
- a message goes straight to `on_message` while no per-topic callback is registered: paho matched every
  topic against its (empty) tree of them, 7 % of the ingest's CPU time.
Packet parsing, the session, reconnection and TLS stay paho's. The class relies on four methods of paho's
`Client` (`_sock_recv`, `loop_read`, `_packet_queue`, `_handle_on_message`), which is why paho-mqtt is
pinned in pyproject.toml; tests/telemetry/test_mqtt_client.py checks it against a real Mosquitto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

CHUNK_BYTES = 64 * 1024
_PUBACK = struct.Struct("!BBH")  # fixed header, remaining length 2, packet id: success, no properties


class IngestClient(mqtt.Client):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._read_sock: object | None = None  # the socket the buffer came from: a reconnect starts afresh
        self._read_buffer = b""
        self._read_pos = 0
        self._topic_callbacks = False

    def _buffered(self) -> bool:
        return self._read_sock is self._sock and self._read_pos < len(self._read_buffer)

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._read_sock is not self._sock:
            self._read_sock, self._read_buffer, self._read_pos = self._sock, b"", 0
        if self._read_pos >= len(self._read_buffer):
            data = super()._sock_recv(max(bufsize, CHUNK_BYTES))  # raises BlockingIOError when nothing is there
            if len(data) <= bufsize:
                return data  # also b"": the broker closed the connection
            self._read_buffer, self._read_pos = data, 0
        start = self._read_pos
        self._read_pos = min(start + bufsize, len(self._read_buffer))
        return self._read_buffer[start:self._read_pos]

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None and self._buffered():
            rc = super().loop_read(max_packets)
        return rc

    def ack_many(self, mids: Iterable[int]) -> MQTTErrorCode:
        """Acknowledge QoS 1 messages (manual acknowledgement), in the order given, with one write."""
        packet = b"".join(_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids)
        if not packet:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._packet_queue(mqtt.PUBACK, packet, 0, 1)

    def message_callback_add(self, sub: str, callback) -> None:
        self._topic_callbacks = True
        super().message_callback_add(sub, callback)

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        on_message = self.on_message
        if self._topic_callbacks or on_message is None:
            super()._handle_on_message(message)
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise
