"""The disk spool keeps points while the time-series store is down: bounded, in order, crash-safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from telemetry.points import metric_point
from telemetry.spool import SUFFIX, DiskSpool, SpoolFull, encode_batch
from telemetry.tsdb import InfluxStore
from tests.services import REPO_ROOT, InfluxDBServer

T0 = 1_764_000_000_000_000_000


def batch(i: int, size: int = 3) -> list:
    """Batch i: `size` points of device dev-1 at distinct nanoseconds, values that must survive exactly."""
    return [metric_point("dev-1", T0 + i * 1000 + j, {"power_w": i + j / 10 + 0.01, "on": j % 2 == 0})
            for j in range(size)]


def segment_files(spool: DiskSpool) -> list[str]:
    return sorted(p.name for p in spool.directory.glob("*" + SUFFIX))


class Recording:
    """A real store, wrapped to record what it accepted (and optionally to stop a server mid-replay)."""

    def __init__(self, store, stop_after: int | None = None, server: InfluxDBServer | None = None):
        self.store, self.stop_after, self.server = store, stop_after, server
        self.accepted: list[list] = []

    def write(self, points):
        self.store.write(points)
        self.accepted.append(list(points))
        if self.stop_after is not None and len(self.accepted) == self.stop_after:
            self.server.stop()

    def query(self, *args, **kwargs):
        return self.store.query(*args, **kwargs)

    def ping(self):
        return self.store.ping()

    def close(self):
        self.store.close()


@pytest.fixture
def influx_store(influxdb):
    database = f"spool_{os.urandom(4).hex()}"
    influxdb.create_database(database)
    store = InfluxStore(influxdb.url, database, mode="v1")
    yield store
    store.close()


def test_appended_batches_survive_a_reopen_in_order_and_exactly(tmp_path):
    spool = DiskSpool(tmp_path / "spool", max_bytes=1_000_000)
    for i in range(5):
        spool.append(batch(i))

    reopened = DiskSpool(tmp_path / "spool", max_bytes=1_000_000)

    assert reopened.pending_batches() == [batch(i) for i in range(5)]
    assert reopened.pending_count == 5
    assert reopened.depth_bytes == spool.depth_bytes == sum(len(encode_batch(batch(i))) for i in range(5))
    reopened.append(batch(5))
    assert reopened.pending_batches()[-1] == batch(5)  # numbering continues after the old segments


def test_a_batch_past_the_bound_raises_spool_full_and_writes_nothing(tmp_path):
    bound = sum(len(encode_batch(batch(i))) for i in range(3))  # exactly three batches fit
    spool = DiskSpool(tmp_path, max_bytes=bound)
    for i in range(3):
        spool.append(batch(i))
    files = segment_files(spool)

    with pytest.raises(SpoolFull):
        spool.append([metric_point("dev-1", T0, {"x": 1.0})])

    assert segment_files(spool) == files
    assert spool.depth_bytes == bound
    assert DiskSpool(tmp_path, max_bytes=bound).pending_batches() == [batch(i) for i in range(3)]


def test_replay_frees_room_for_new_batches(tmp_path, influx_store):
    spool = DiskSpool(tmp_path, max_bytes=len(encode_batch(batch(0))) + len(encode_batch(batch(1))))
    assert len(encode_batch(batch(2))) <= len(encode_batch(batch(0)))
    spool.append(batch(0))
    spool.append(batch(1))
    with pytest.raises(SpoolFull):
        spool.append(batch(2))

    assert spool.replay(influx_store, max_batches=1) == 1

    spool.append(batch(2))
    assert spool.pending_batches() == [batch(1), batch(2)]


def test_replay_writes_batches_in_order_and_removes_each_after_the_store_accepted_it(tmp_path, influx_store):
    spool = DiskSpool(tmp_path, max_bytes=1_000_000)
    # The same point, rewritten with a new value by each batch: the store keeps the last one written.
    same_point = [[metric_point("dev-1", T0, {"power_w": float(i)})] for i in range(6)]
    for points in same_point:
        spool.append(points)
    store = Recording(influx_store)

    assert spool.replay(store) == 6

    assert store.accepted == same_point
    assert influx_store.query("dev-1", T0, T0 + 1) == same_point[-1]
    assert spool.pending_count == 0
    assert segment_files(spool) == []
    assert spool.depth_bytes == 0


def test_replay_stops_when_the_store_goes_down_and_resumes_without_loss_or_duplicates(tmp_path):
    spool = DiskSpool(tmp_path / "spool", max_bytes=1_000_000)
    for i in range(10):
        spool.append(batch(i))
    with InfluxDBServer() as server:
        server.create_database("spooled")
        store = Recording(InfluxStore(server.url, "spooled", mode="v1"), stop_after=4, server=server)

        assert spool.replay(store) == 4  # the server stops after the 4th write; the 5th fails and stays
        assert spool.pending_batches() == [batch(i) for i in range(4, 10)]
        assert spool.replay(store) == 0  # still down
        assert spool.pending_count == 6

        server.start()
        store.stop_after = None
        reopened = DiskSpool(tmp_path / "spool", max_bytes=1_000_000)  # and across a restart of the worker
        assert reopened.replay(store, max_batches=2) == 2
        assert reopened.replay(store) == 4

        assert store.accepted == [batch(i) for i in range(10)]  # each batch once, in order
        assert store.query("dev-1", 0, T0 * 2) == [p for i in range(10) for p in batch(i)]
        assert reopened.pending_count == 0


def test_a_batch_the_store_rejects_for_good_is_set_aside_and_replay_goes_on(tmp_path, influx_store):
    spool = DiskSpool(tmp_path, max_bytes=1_000_000)
    spool.append([metric_point("dev-1", T0, {"door_open": True})])
    poison = [metric_point("dev-1", T0 + 1, {"door_open": 1.0})]  # field type conflict: InfluxDB answers 400
    spool.append(poison)
    spool.append([metric_point("dev-1", T0 + 2, {"door_open": False})])

    assert spool.replay(influx_store) == 2

    assert spool.pending_count == 0
    assert spool.rejected_batches() == [poison]
    assert [p.ts_ns for p in influx_store.query("dev-1", T0, T0 + 3)] == [T0, T0 + 2]
    spool.append(batch(9))  # a new segment never overwrites a set-aside one
    assert DiskSpool(tmp_path, max_bytes=1_000_000).rejected_batches() == [poison]


@pytest.mark.parametrize("damage", ["cut-payload", "cut-header", "empty", "flipped-byte"])
def test_a_torn_last_record_is_dropped_on_open_and_nothing_else(tmp_path, damage):
    spool = DiskSpool(tmp_path, max_bytes=1_000_000)
    for i in range(4):
        spool.append(batch(i, size=50))
    last = tmp_path / segment_files(spool)[-1]
    data = last.read_bytes()
    damaged = {
        "cut-payload": data[: len(data) // 2],
        "cut-header": data[:5],
        "empty": b"",
        "flipped-byte": data[:-10] + bytes([data[-10] ^ 0x01]) + data[-9:],
    }[damage]
    last.write_bytes(damaged)

    reopened = DiskSpool(tmp_path, max_bytes=1_000_000)

    assert reopened.pending_batches() == [batch(i, size=50) for i in range(3)]
    assert not last.exists()
    reopened.append(batch(7))
    assert reopened.pending_batches()[-1] == batch(7)


APPENDER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from tests.telemetry.test_spool import batch
    from telemetry.spool import DiskSpool

    spool = DiskSpool({directory!r}, max_bytes=100_000_000)
    i = 0
    while True:
        spool.append(batch(i, size=20))
        sys.stdout.write(f"{{i}}\\n")
        sys.stdout.flush()
        i += 1
    """
)


def test_after_a_kill_9_every_batch_whose_append_returned_is_there_exactly_once(tmp_path):
    directory = tmp_path / "spool"
    script = APPENDER.format(root=str(REPO_ROOT), directory=str(directory))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO_ROOT)
    confirmed = -1
    try:
        assert child.stdout is not None
        while confirmed < 200:
            line = child.stdout.readline()
            assert line, f"the appender exited with {child.poll()}"
            confirmed = int(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        unread = child.stdout.read().split()  # confirmations printed before the kill but not read yet
        child.stdout.close()
    confirmed = max([confirmed, *map(int, unread)])

    batches = DiskSpool(directory, max_bytes=100_000_000).pending_batches()

    assert len(batches) >= confirmed + 1
    assert len(batches) <= confirmed + 2  # plus at most the one whose append was cut short by the kill
    assert batches == [batch(i, size=20) for i in range(len(batches))]  # each once, in order, none missing
