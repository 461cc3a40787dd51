"""No double booking under real concurrency, through the real HTTP API (style.md §3).

The app runs in a real multi-threaded server (and, in a second variant, in gunicorn with two worker processes)
against a fresh database per backend: a SQLite file in WAL mode, a fresh PostgreSQL database. Sixteen clients,
each with its own user and token and its own connection, are released together by a barrier for every round:

- all ask for the same slot: exactly one wins, every other gets 409 reservation_conflict naming the winner;
- each asks for an hour shifted by 15 minutes from the previous client's: the winners' windows never
  overlap, every loser gets 409 naming winners;
- the owner cancels while the others ask for the freed slot: the cancellation succeeds, at most one booker wins.

After every scenario the database itself is asked (in SQL) for live reservations that overlap: none.
"""

from __future__ import annotations

import functools
import http.client
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Engine
from werkzeug.serving import make_server

from booking.hours import ALL_DAY
from core.db import make_engine, make_sessionmaker
from core.settings import load_settings
from core.types import UtcDateTime
from migrations import runner
from tests.conftest import BACKENDS, create_pg_database, drop_pg_database
from tests.factories import make_facility, make_resource, make_token, make_user
from tests.services import free_port

CLIENTS = 16
ROUNDS = 20
PROCESS_ROUNDS = 10
TIMEOUT_S = 60.0
SH = ZoneInfo("Asia/Shanghai")
REPO_ROOT = Path(__file__).resolve().parents[2]

OVERLAPPING_LIVE = text("""
    SELECT count(*) FROM reservation a JOIN reservation b
      ON a.resource_id = b.resource_id AND a.id < b.id
     AND a.starts_at < b.ends_at AND b.starts_at < a.ends_at
     WHERE a.state IN ('pending', 'confirmed') AND b.state IN ('pending', 'confirmed')
""")
LIVE_IN_WINDOW = text("""
    SELECT count(*) FROM reservation
     WHERE resource_id = :resource_id AND state IN ('pending', 'confirmed')
       AND starts_at < :end AND ends_at > :start
""").bindparams(bindparam("start", type_=UtcDateTime()), bindparam("end", type_=UtcDateTime()))


@dataclass
class Deployment:
    url: str
    engine: Engine
    resource_id: int
    tokens: list[str]
    day: datetime  # local midnight, ten days ahead: every round books a new slot after it

    def overlapping_live_reservations(self) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(OVERLAPPING_LIVE)

    def live_in_window(self, start: datetime, end: datetime) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(LIVE_IN_WINDOW, {"resource_id": self.resource_id, "start": start, "end": end})


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(request, tmp_path_factory) -> Iterator[Deployment]:
    """A fresh, migrated database: one facility, one resource bookable around the clock in 15-minute steps,
    and CLIENTS researchers with a token each."""
    backend = request.param
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('race') / 'labshare.db'}"
    else:
        url = create_pg_database("labshare_race")
    runner.upgrade(url)
    engine = make_engine(url)
    if backend == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    with make_sessionmaker(engine)() as db:
        facility = make_facility(db, opening_hours=ALL_DAY)
        resource = make_resource(db, facility=facility, bookable_hours=ALL_DAY, granularity_min=15,
                                 min_duration_min=15, max_duration_min=480, lead_time_min=0, horizon_days=3660,
                                 cancellation_deadline_h=0)
        tokens = [make_token(db, make_user(db))[1] for _ in range(CLIENTS)]
        db.commit()
        resource_id = resource.id
    day = datetime.combine(datetime.now(SH).date() + timedelta(days=10), datetime.min.time(), tzinfo=SH)
    try:
        yield Deployment(url, engine, resource_id, tokens, day)
    finally:
        engine.dispose()
        if backend == "postgresql":
            drop_pg_database(url)


# --- servers ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def threaded_server(deployment) -> Iterator[int]:
    """The app in werkzeug's multi-threaded server on a free loopback port; yields the port."""
    from web import create_app

    app = create_app(load_settings(environ={}, env="test", database_url=deployment.url))
    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.ERROR)  # no line per request
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="race-server", daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        app.extensions["labshare.engine"].dispose()
        werkzeug_log.setLevel(level)


def _request(port: int, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else {}
    finally:
        conn.close()


def _together(calls: list) -> list[tuple[int, dict]]:
    """Run the calls in one thread each, released at the same moment by a barrier; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait(timeout=TIMEOUT_S)
        try:
            results[i] = calls[i]()
        except Exception as exc:  # reported by the assertion below, with the others' results
            results[i] = (0, {"exception": repr(exc)})

    threads = [threading.Thread(target=run, args=(i,), name=f"race-client-{i}") for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT_S * 2)
    assert not any(t.is_alive() for t in threads), "a client hung"
    return results


def _book(port: int, deployment: Deployment, token: str, start: datetime, end: datetime):
    body = {"resource_id": deployment.resource_id, "starts_at": start.isoformat(), "ends_at": end.isoformat()}
    return lambda: _request(port, "POST", "/api/v1/reservations", token, body)


def _conflict_ids(result: tuple[int, dict]) -> set[int]:
    status, body = result
    assert status == 409, result
    assert body["error"]["code"] == "reservation_conflict", result
    clashes = body["error"]["details"]["clashes"]
    assert clashes
    return {c["id"] for c in clashes}


# --- the scenarios, shared by both kinds of server ---------------------------------------------------------------

def race_for_one_slot(port: int, deployment: Deployment, first_slot: datetime, rounds: int) -> list[int]:
    winners_per_round = []
    for r in range(rounds):
        start = first_slot + timedelta(hours=r)
        end = start + timedelta(hours=1)
        results = _together([_book(port, deployment, token, start, end) for token in deployment.tokens])

        winners = [body for status, body in results if status == 201]
        winners_per_round.append(len(winners))
        assert len(winners) == 1, results
        for result in results:
            if result[0] != 201:
                assert _conflict_ids(result) == {winners[0]["id"]}
        assert deployment.live_in_window(start, end) == 1
    assert deployment.overlapping_live_reservations() == 0
    return winners_per_round


def race_for_shifted_hours(port: int, deployment: Deployment, first_slot: datetime, rounds: int) -> list[int]:
    winners_per_round = []
    for r in range(rounds):
        base = first_slot + timedelta(hours=6 * r)
        windows = [(base + timedelta(minutes=15 * i), base + timedelta(minutes=15 * i + 60)) for i in range(CLIENTS)]
        results = _together([_book(port, deployment, token, *window)
                             for token, window in zip(deployment.tokens, windows, strict=True)])

        won = {body["id"]: windows[i] for i, (status, body) in enumerate(results) if status == 201}
        winners_per_round.append(len(won))
        assert 1 <= len(won) <= 4, results  # an hour in quarter steps: at most every fourth client
        spans = sorted(won.values())
        for (_, end), (next_start, _) in itertools.pairwise(spans):
            assert end <= next_start, f"winners overlap: {spans}"
        for i, result in enumerate(results):
            if result[0] == 201:
                continue
            named = _conflict_ids(result)
            assert named <= set(won), (result, won)
            assert any(s < windows[i][1] and windows[i][0] < e for s, e in (won[n] for n in named))
    assert deployment.overlapping_live_reservations() == 0
    return winners_per_round


def race_cancel_against_bookings(port: int, deployment: Deployment, first_slot: datetime, rounds: int) -> None:
    owner, *others = deployment.tokens
    for r in range(rounds):
        start = first_slot + timedelta(hours=r)
        end = start + timedelta(hours=1)
        status, held = _request(port, "POST", "/api/v1/reservations", owner,
                                {"resource_id": deployment.resource_id, "starts_at": start.isoformat(),
                                 "ends_at": end.isoformat()})
        assert status == 201, held
        cancel = functools.partial(_request, port, "DELETE", f"/api/v1/reservations/{held['id']}", owner)
        results = _together([cancel] + [_book(port, deployment, token, start, end) for token in others])

        cancelled, bookings = results[0], results[1:]
        assert cancelled[0] == 200, cancelled
        assert cancelled[1]["state"] == "cancelled"
        winners = [body["id"] for status, body in bookings if status == 201]
        assert len(winners) <= 1, bookings
        for result in bookings:
            if result[0] != 201:
                assert _conflict_ids(result) <= {held["id"], *winners}
        assert deployment.live_in_window(start, end) == len(winners)
    assert deployment.overlapping_live_reservations() == 0


# --- one process, many threads ------------------------------------------------------------------------------------

def test_many_clients_for_one_slot_exactly_one_wins(threaded_server, deployment):
    winners = race_for_one_slot(threaded_server, deployment, deployment.day, ROUNDS)

    assert winners == [1] * ROUNDS


def test_clients_for_shifted_hours_never_overlap(threaded_server, deployment):
    winners = race_for_shifted_hours(threaded_server, deployment, deployment.day + timedelta(days=2), ROUNDS)

    assert len(winners) == ROUNDS


def test_cancelling_while_others_book_the_same_slot(threaded_server, deployment):
    race_cancel_against_bookings(threaded_server, deployment, deployment.day + timedelta(days=10), ROUNDS)


# --- two worker processes (gunicorn) ------------------------------------------------------------------------------

def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        conn.close()


@pytest.fixture(scope="module")
def gunicorn_server(deployment, tmp_path_factory) -> Iterator[int]:
    """`gunicorn -w 2 "web:create_app()"` on a free loopback port, configured through the environment."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("gunicorn")
    env = {**os.environ, "LABSHARE_DATABASE_URL": deployment.url, "LABSHARE_ENV": "test",
           "LABSHARE_DATA_DIR": str(workdir), "LABSHARE_LOG_LEVEL": "WARNING"}
    log = (workdir / "gunicorn.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", "--threads", "8", "-b", f"127.0.0.1:{port}",
         "--graceful-timeout", "5", "web:create_app()"],
        cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (workdir / "gunicorn.log").read_text(errors="replace")
            if _healthy(port):
                break
            assert time.monotonic() < deadline, "gunicorn did not answer /healthz within 30 s"
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def test_two_worker_processes_one_slot_one_winner(gunicorn_server, deployment):
    winners = race_for_one_slot(gunicorn_server, deployment, deployment.day + timedelta(days=20), PROCESS_ROUNDS)

    assert winners == [1] * PROCESS_ROUNDS


def test_two_worker_processes_shifted_hours_never_overlap(gunicorn_server, deployment):
    race_for_shifted_hours(gunicorn_server, deployment, deployment.day + timedelta(days=22), PROCESS_ROUNDS)
