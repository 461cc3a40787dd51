"""A bounded, crash-safe disk spool for points while the time-series store is down (design.md §5).

Format. One batch per segment file, named by a 16-digit sequence number (`0000000000000042.seg`), so
the directory listing is the replay order and removing a replayed batch is one unlink. A segment holds one
record:

    length   4 bytes, big-endian: the payload's size
    crc32    4 bytes, big-endian: CRC-32 of the length bytes and the payload
    payload  UTF-8 JSON: [{"m": measurement, "t": {tags}, "f": {fields}, "ts": ns}, …]

JSON keeps floats exact (Python writes repr(), which reads back to the same float) and booleans as
booleans. `append` creates the file exclusively, writes, flushes and fsyncs it, then fsyncs the directory:
when it returns, the batch survives a crash or power loss. A crash mid-append leaves a segment that is
short or fails its CRC; opening the spool detects and deletes it (that append never returned). Nothing
else is ever dropped: `replay` unlinks a segment only after the store accepted its batch, so a crash
between the two replays that batch once more, which the stores make harmless (writes are idempotent).

A batch the store rejects for good (`StoreRejected`, a poison batch) is not deleted: it moves to
`rejected/` with its sequence number, is logged, and replay carries on with the next batch.

The bound (`max_bytes`) counts the bytes of all pending segments, headers included. An append that would
exceed it raises `SpoolFull` and writes nothing: the caller must then stop acknowledging messages so the
broker holds the backlog. One process owns a spool directory at a time; within it the spool is thread-safe.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path

from telemetry.points import Point, to_line_protocol
from telemetry.tsdb import StoreRejected, StoreUnavailable, TimeSeriesStore

log = logging.getLogger(__name__)

SUFFIX = ".seg"
HEADER = struct.Struct(">II")  # payload length, CRC-32


class SpoolFull(Exception):
    """The batch would take the spool past its bound; nothing was written."""


def encode_batch(points: Sequence[Point]) -> bytes:
    to_line_protocol(points)  # refuse what the store would refuse as malformed (NaN, empty names, …) now
    payload = json.dumps(
        [{"m": p.measurement, "t": dict(p.tags), "f": dict(p.fields), "ts": p.ts_ns} for p in points],
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")
    length = struct.pack(">I", len(payload))
    return length + struct.pack(">I", zlib.crc32(length + payload)) + payload


def decode_record(data: bytes) -> list[Point] | None:
    """The batch of a complete segment, or None when the record is torn or corrupt."""
    if len(data) < HEADER.size:
        return None
    length, crc = HEADER.unpack_from(data)
    payload = data[HEADER.size :]
    if len(payload) != length or zlib.crc32(struct.pack(">I", length) + payload) != crc:
        return None
    return [Point(r["m"], r["t"], r["f"], r["ts"]) for r in json.loads(payload)]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskSpool:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rejected_directory = self.directory / "rejected"
        self._lock = threading.Lock()  # guards the segment table and the sequence counter
        self._replay_lock = threading.Lock()  # one replay at a time
        self._segments: dict[int, int] = {}  # sequence number -> file size, pending only
        self._recover()

    # -- opening --

    def _recover(self) -> None:
        dropped = False
        for path in sorted(self.directory.glob("*" + SUFFIX)):
            try:
                seq = int(path.stem)
            except ValueError:
                continue
            data = path.read_bytes()
            if decode_record(data) is None:
                # A crash mid-append: that append never returned, so nobody was told the batch was safe.
                log.warning("spool %s: dropping the torn segment %s (%d bytes)", self.directory, path.name, len(data))
                path.unlink()
                dropped = True
                continue
            self._segments[seq] = len(data)
        if dropped:
            _fsync_directory(self.directory)
        rejected = [int(p.stem) for p in self.rejected_directory.glob("*" + SUFFIX) if p.stem.isdigit()]
        self._next_seq = max([*self._segments, *rejected], default=0) + 1

    # -- state --

    @property
    def depth_bytes(self) -> int:
        """Bytes of all pending segments (what `max_bytes` bounds)."""
        with self._lock:
            return sum(self._segments.values())

    @property
    def pending_count(self) -> int:
        with self._lock:
            return len(self._segments)

    def pending_batches(self) -> list[list[Point]]:
        """The pending batches, oldest first (read from disk)."""
        with self._lock:
            sequence = sorted(self._segments)
        batches = []
        for seq in sequence:
            batch = self._read(seq)
            if batch is not None:
                batches.append(batch)
        return batches

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:016d}{SUFFIX}"

    def _read(self, seq: int) -> list[Point] | None:
        try:
            data = self._path(seq).read_bytes()
        except FileNotFoundError:  # replayed meanwhile
            return None
        batch = decode_record(data)
        if batch is None:  # only a disk fault can do this to a segment whose append returned
            raise OSError(f"spool segment {self._path(seq)} is corrupt")
        return batch

    # -- writing --

    def append(self, points: Sequence[Point]) -> None:
        """Durably add one batch (write, flush, fsync file and directory) or raise SpoolFull."""
        if not points:
            return
        record = encode_batch(points)
        with self._lock:
            depth = sum(self._segments.values())
            if depth + len(record) > self.max_bytes:
                raise SpoolFull(
                    f"spool {self.directory} holds {depth} bytes; a batch of {len(record)} bytes would pass "
                    f"its bound of {self.max_bytes}"
                )
            seq = self._next_seq
            path = self._path(seq)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(record)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                path.unlink(missing_ok=True)
                raise
            os.close(fd)
            _fsync_directory(self.directory)
            self._segments[seq] = len(record)
            self._next_seq = seq + 1

    # -- replaying --

    def replay(self, store: TimeSeriesStore, max_batches: int | None = None) -> int:
        """Write pending batches to `store`, oldest first, deleting each only after the store accepted it.

        Stops at the first StoreUnavailable (the batch stays for the next replay) and returns the number of
        batches the store accepted. A StoreRejected batch moves to `rejected/` and replay goes on.
        """
        accepted = 0
        with self._replay_lock:
            while max_batches is None or accepted < max_batches:
                with self._lock:
                    if not self._segments:
                        break
                    seq = min(self._segments)
                batch = self._read(seq)
                if batch is None:  # deleted behind our back
                    with self._lock:
                        self._segments.pop(seq, None)
                    continue
                try:
                    store.write(batch)
                except StoreUnavailable:
                    break
                except StoreRejected as error:
                    self._quarantine(seq, error)
                    continue
                with self._lock:
                    self._path(seq).unlink()
                    _fsync_directory(self.directory)
                    del self._segments[seq]
                accepted += 1
        return accepted

    def _quarantine(self, seq: int, error: StoreRejected) -> None:
        log.error("spool %s: the store rejected batch %d for good, moved to rejected/: %s", self.directory, seq, error)
        self.rejected_directory.mkdir(exist_ok=True)
        with self._lock:
            os.replace(self._path(seq), self.rejected_directory / self._path(seq).name)
            _fsync_directory(self.rejected_directory)
            _fsync_directory(self.directory)
            del self._segments[seq]

    def rejected_batches(self) -> list[list[Point]]:
        """Batches the store rejected (poison batches), oldest first, for inspection."""
        if not self.rejected_directory.is_dir():
            return []
        batches = []
        for path in sorted(self.rejected_directory.glob("*" + SUFFIX)):
            batch = decode_record(path.read_bytes())
            if batch is not None:
                batches.append(batch)
        return batches
