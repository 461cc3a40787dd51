"""The demo's MQTT broker: a private Mosquitto when it is installed, else the embedded amqtt broker.

Mosquitto runs with the durability settings of docs/mosquitto/mosquitto.conf (persistence, autosave every
second, unbounded queue count with a byte bound, inflight window) and the registry's password file and
ACL, so the demo uses per-device credentials as production does. amqtt is the fallback for machines
without Mosquitto; it is demo-only (MQTT 3.1.1, no shared subscriptions, anonymous, and it drops
unacknowledged QoS 1 messages after a few seconds — see ../shared/environment.md).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

# What docs/mosquitto/mosquitto.conf says about durability (design.md §2); the rest is per instance.
DURABILITY = """persistence true
autosave_interval 1
max_queued_messages 0
max_queued_bytes 104857600
max_inflight_messages 1000
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout_s: float, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if not alive():
            break
        time.sleep(0.05)
    raise RuntimeError(f"the MQTT broker did not open port {port}")


class PrivateMosquitto:
    kind = "mosquitto"
    protocol = 5
    shared_subscriptions = True

    def __init__(self, workdir: Path, password_file: Path, acl_file: Path, port: int | None = None) -> None:
        self.workdir, self.port = workdir, port or free_port()
        self.password_file, self.acl_file = password_file, acl_file
        self._process: subprocess.Popen | None = None

    @staticmethod
    def available() -> str | None:
        return shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)

    def start(self) -> None:
        binary = self.available()
        if binary is None:
            raise RuntimeError("mosquitto is not installed")
        data = self.workdir / "mosquitto"
        data.mkdir(parents=True, exist_ok=True)
        config = data / "mosquitto.conf"
        config.write_text(DURABILITY + f"""listener {self.port} 127.0.0.1
persistence_location {data.resolve()}/
log_dest file {(data / 'mosquitto.log').resolve()}
allow_anonymous false
password_file {self.password_file.resolve()}
acl_file {self.acl_file.resolve()}
user root
""", encoding="utf-8")
        self._process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,  # noqa: S603
                                         stderr=subprocess.DEVNULL)
        _wait_for_port(self.port, 10, lambda: self._process is not None and self._process.poll() is None)

    def url(self, username: str = "", password: str = "") -> str:
        credentials = f"{username}:{password}@" if username else ""
        return f"mqtt://{credentials}127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None


class EmbeddedAmqtt:
    kind = "amqtt"
    protocol = 311
    shared_subscriptions = False

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from amqtt.broker import Broker

        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            config = {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
            self._broker = Broker(config, loop=loop)
            loop.run_until_complete(self._broker.start())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="amqtt", daemon=True)
        self._thread.start()
        ready.wait(10)
        _wait_for_port(self.port, 10)

    def url(self, username: str = "", password: str = "") -> str:
        return f"mqtt://127.0.0.1:{self.port}"  # anonymous: amqtt's password files use another hash format

    def stop(self) -> None:
        if self._loop is None or self._broker is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            future.result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
