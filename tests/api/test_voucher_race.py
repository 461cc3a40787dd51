"""Vouchers are never overdrawn under real concurrency, through the real HTTP API.

The app runs in werkzeug's multi-threaded server against a fresh database per backend (a SQLite file in WAL
mode; a fresh PostgreSQL database, where the row locks and CHECK constraints do the work). Sixteen clients,
each with its own user, token and connection, are released together by a barrier:

- all apply one voucher to the same charge line: exactly one wins, the others get 409
  charge_line_already_subsidised;
- each applies one voucher to its own line, asking 16 × 500 CNY of a voucher worth 3,250: the balance ends
  at exactly zero, never below;
- the clients of one holder share two vouchers and a 2,000 CNY annual cap: the cap is reached, not passed;
- the clients of four holders share a programme budget of 3,000 CNY: the budget is spent exactly, first come
  first served.

After each round the database is asked (in SQL) whether any line was subsidised twice, whether a voucher's
applications add up to its face value less its balance, and whether a cap or a budget was exceeded.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from billing import vouchers
from billing.models import ChargeLineKind
from core.db import make_engine, make_sessionmaker
from core.settings import load_settings
from migrations import runner
from tests.billing.voucher_factories import make_charge, make_holder
from tests.conftest import BACKENDS, create_pg_database, drop_pg_database
from tests.factories import make_resource, make_token, make_user

CLIENTS = 16
ROUNDS = 5
TIMEOUT_S = 60.0
SH = ZoneInfo("Asia/Shanghai")
D = Decimal
_codes = itertools.count(1)

LOSING_CODES = {"charge_line_already_subsidised", "voucher_exhausted", "voucher_annual_cap_reached",
                "voucher_budget_exhausted"}


@dataclass
class Deployment:
    url: str
    engine: Engine
    sessions: sessionmaker[Session]

    def scalar(self, sql: str, **params):
        with self.engine.connect() as conn:
            return conn.scalar(text(sql), params)

    def money(self, sql: str, **params) -> Decimal:
        """A money column or sum as Decimal CNY on either backend (SQLite stores integer fen)."""
        value = self.scalar(sql, **params) or 0
        return D(int(value)) / 100 if self.engine.dialect.name == "sqlite" else D(value).quantize(D("0.01"))


@pytest.fixture(scope="module", params=BACKENDS)
def deployment(request, tmp_path_factory) -> Iterator[Deployment]:
    backend = request.param
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('voucher-race') / 'labshare.db'}"
    else:
        url = create_pg_database("labshare_voucher_race")
    runner.upgrade(url)
    engine = make_engine(url)
    try:
        yield Deployment(url, engine, make_sessionmaker(engine))
    finally:
        engine.dispose()
        if backend == "postgresql":
            drop_pg_database(url)


@pytest.fixture(scope="module")
def port(deployment) -> Iterator[int]:
    from web import create_app

    app = create_app(load_settings(environ={}, env="test", database_url=deployment.url))
    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.ERROR)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="voucher-race-server", daemon=True)
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


def _together(calls: list[Callable[[], tuple[int, dict]]]) -> list[tuple[int, dict]]:
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait(timeout=TIMEOUT_S)
        try:
            results[i] = calls[i]()
        except Exception as exc:  # reported by the assertions, with the other results
            results[i] = (0, {"exception": repr(exc)})

    threads = [threading.Thread(target=run, args=(i,), name=f"voucher-client-{i}") for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT_S * 2)
    assert not any(t.is_alive() for t in threads), "a client hung"
    return results


def _apply(port: int, token: str, voucher_id: int, line_id: int):
    return lambda: _request(port, "POST", f"/api/v1/vouchers/{voucher_id}/applications", token,
                            {"charge_line_id": line_id})


@dataclass
class Setup:
    programme_id: int
    vouchers: list[int]  # per client
    lines: list[int]  # per client
    tokens: list[str]  # per client


def build(deployment: Deployment, *, holders: int, vouchers_per_holder: int, voucher_amount: str,
          annual_cap: str = "200000.00", budget: str = "1000000.00", same_line: bool = False) -> Setup:
    """CLIENTS users spread over `holders` tech SMEs, each holder with its vouchers; one 1,000 CNY line per
    client (or one line for all), serviced today at a provider's instrument."""
    today = datetime.now(SH).date()
    with deployment.sessions() as db:
        db.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
        data = vouchers.sichuan_reference_programme(today.year, budget=D(budget), code=f"RACE-{next(_codes)}")
        data.annual_cap, data.voucher_amount = D(annual_cap), D(voucher_amount)
        programme = vouchers.create_programme(db, None, data)
        resource = make_resource(db)
        orgs = [make_holder(db) for _ in range(holders)]
        granted = {org.id: [vouchers.grant_voucher(db, None, programme.id, org.id).id
                            for _ in range(vouchers_per_holder)] for org in orgs}
        tokens, voucher_ids, lines = [], [], []
        shared_line = make_charge(db, orgs[0], resource, service_date=today).lines[0].id if same_line else None
        for i in range(CLIENTS):
            org = orgs[i % holders]
            user = make_user(db, organisation=org)
            tokens.append(make_token(db, user)[1])
            voucher_ids.append(granted[org.id][(i // holders) % vouchers_per_holder])
            lines.append(shared_line or make_charge(db, org, resource, service_date=today,
                                                    lines=((ChargeLineKind.USAGE, "1000.00"),)).lines[0].id)
        db.commit()
        return Setup(programme.id, voucher_ids, lines, tokens)


def race(port: int, setup: Setup) -> list[tuple[int, dict]]:
    results = _together([_apply(port, token, vid, line)
                         for token, vid, line in zip(setup.tokens, setup.vouchers, setup.lines, strict=True)])
    for status, body in results:
        if status == 201:
            assert D(body["amount"]) > 0, body
            assert D(body["voucher_balance"]) >= 0, body
        else:
            assert status == 409, (status, body)
            assert body["error"]["code"] in LOSING_CODES, body
            assert body["error"]["message"]
    return results


def assert_invariants(deployment: Deployment, setup: Setup) -> None:
    assert deployment.scalar(
        "SELECT count(*) FROM (SELECT charge_line_id FROM voucher_application GROUP BY charge_line_id "
        "HAVING count(*) > 1) AS twice") == 0
    for voucher_id in set(setup.vouchers):
        amount = deployment.money("SELECT amount FROM voucher WHERE id = :id", id=voucher_id)
        balance = deployment.money("SELECT balance FROM voucher WHERE id = :id", id=voucher_id)
        applied = deployment.money("SELECT sum(amount) FROM voucher_application WHERE voucher_id = :id",
                                   id=voucher_id)
        assert balance >= 0
        assert applied == amount - balance, (voucher_id, amount, balance, applied)
    pid = setup.programme_id
    used = deployment.money("SELECT sum(amount) FROM voucher_application WHERE programme_id = :id", id=pid)
    assert used == deployment.money("SELECT budget_used FROM voucher_programme WHERE id = :id", id=pid)
    assert used <= deployment.money("SELECT budget FROM voucher_programme WHERE id = :id", id=pid)
    assert deployment.scalar("SELECT count(*) FROM voucher_cap_usage WHERE used > cap") == 0
    caps = deployment.scalar(
        "SELECT count(*) FROM voucher_cap_usage c WHERE c.programme_id = :id AND c.used <> "
        "(SELECT coalesce(sum(a.amount), 0) FROM voucher_application a WHERE a.programme_id = c.programme_id "
        "AND a.holder_id = c.holder_id AND a.cap_year = c.year)", id=pid)
    assert caps == 0


def _winners(results) -> list[dict]:
    return [body for status, body in results if status == 201]


def test_many_clients_one_line_exactly_one_subsidy(port, deployment):
    for _ in range(ROUNDS):
        setup = build(deployment, holders=1, vouchers_per_holder=1, voucher_amount="200000.00", same_line=True)
        results = race(port, setup)

        assert len(_winners(results)) == 1, results
        assert {body["error"]["code"] for status, body in results if status != 201} == \
            {"charge_line_already_subsidised"}
        assert_invariants(deployment, setup)


def test_many_clients_one_voucher_the_balance_never_goes_below_zero(port, deployment):
    for _ in range(ROUNDS):
        setup = build(deployment, holders=1, vouchers_per_holder=1, voucher_amount="3250.00")
        results = race(port, setup)

        amounts = sorted((D(b["amount"]) for b in _winners(results)), reverse=True)
        assert amounts == [D("500.00")] * 6 + [D("250.00")], results
        assert {body["error"]["code"] for status, body in results if status != 201} == {"voucher_exhausted"}
        assert deployment.money("SELECT balance FROM voucher WHERE id = :id", id=setup.vouchers[0]) == 0
        assert_invariants(deployment, setup)


def test_two_vouchers_of_one_holder_never_pass_the_annual_cap(port, deployment):
    for _ in range(ROUNDS):
        setup = build(deployment, holders=1, vouchers_per_holder=2, voucher_amount="1500.00",
                      annual_cap="2000.00")
        results = race(port, setup)

        assert sum(D(b["amount"]) for b in _winners(results)) == D("2000.00"), results
        assert {body["error"]["code"] for status, body in results if status != 201} <= \
            {"voucher_annual_cap_reached", "voucher_exhausted"}
        assert_invariants(deployment, setup)


def test_four_holders_never_pass_the_programme_budget(port, deployment):
    for _ in range(ROUNDS):
        setup = build(deployment, holders=4, vouchers_per_holder=1, voucher_amount="200000.00",
                      budget="3000.00")
        results = race(port, setup)

        assert sum(D(b["amount"]) for b in _winners(results)) == D("3000.00"), results
        assert len(_winners(results)) == 6
        assert {body["error"]["code"] for status, body in results if status != 201} == \
            {"voucher_budget_exhausted"}
        assert_invariants(deployment, setup)


def test_the_holder_sees_its_vouchers_and_others_do_not(port, deployment):
    setup = build(deployment, holders=1, vouchers_per_holder=1, voucher_amount="1000.00")
    token, voucher_id = setup.tokens[0], setup.vouchers[0]
    status, created = _apply(port, token, voucher_id, setup.lines[0])()
    assert status == 201, created

    status, page = _request(port, "GET", "/api/v1/vouchers", token)
    assert status == 200
    assert [(v["id"], v["balance"], v["used"], v["status"]) for v in page["items"]] == [
        (voucher_id, "500.00", "500.00", "active")]
    status, one = _request(port, "GET", f"/api/v1/vouchers/{voucher_id}", token)
    assert (status, one["days_left"] > 80, one["coverage_ratio"]) == (200, True, "0.5")
    status, applications = _request(port, "GET", f"/api/v1/vouchers/{voucher_id}/applications", token)
    assert [a["id"] for a in applications] == [created["id"]]

    status, again = _apply(port, token, voucher_id, setup.lines[0])()
    assert (status, again["error"]["code"]) == (409, "charge_line_already_subsidised")
    other = build(deployment, holders=1, vouchers_per_holder=1, voucher_amount="1000.00")
    status, body = _request(port, "GET", f"/api/v1/vouchers/{voucher_id}", other.tokens[0])
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body = _apply(port, other.tokens[0], other.vouchers[0], setup.lines[1])()
    assert (status, body["error"]["code"]) == (422, "not_holders_charge")
