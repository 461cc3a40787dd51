"""No two live reservations of a resource overlap, whatever the application does.

PostgreSQL: the exclusion constraint `reservation_no_overlap` refuses it, even for rows written behind the
services' back. SQLite has no such constraint: booking writes must hold the database's write lock (BEGIN
IMMEDIATE), so check-then-insert cannot interleave. Tests that only make sense on one backend are
parametrized for that backend alone (an empty selection shows up as a skip with pytest's own reason).
"""

from __future__ import annotations

import sqlite3
import threading

import pytest
from sqlalchemy import func, make_url, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from booking import reservations
from booking.errors import ReservationConflict
from booking.locking import lock_resource
from booking.models import Reservation, ReservationState, Resource
from booking.reservations import BookingRequest, create_reservation, modify_reservation
from core.accounts.models import User
from core.db import begin_write, make_engine
from migrations import runner
from tests.booking.helpers import NOW, OFFICE_HOURS, sh, written
from tests.conftest import BACKENDS, drop_pg_database, fresh_database_url
from tests.factories import make_facility, make_reservation, make_resource, make_user

S = ReservationState
on_postgresql = pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "postgresql"], indirect=True)
on_sqlite = pytest.mark.parametrize("backend", [b for b in BACKENDS if b == "sqlite"], indirect=True)


def insert_refused(db: Session, **row) -> IntegrityError:
    """Write a row directly with the ORM inside a savepoint; return the IntegrityError the database raised."""
    with pytest.raises(IntegrityError) as exc, db.begin_nested():
        make_reservation(db, **row)
    return exc.value


def assert_exclusion_violation(error: IntegrityError) -> None:
    assert error.orig.sqlstate == "23P01"  # exclusion_violation
    assert "reservation_no_overlap" in str(error.orig)


def live_rows(db: Session, resource: Resource) -> int:
    return db.scalar(select(func.count()).select_from(Reservation).where(
        Reservation.resource_id == resource.id, Reservation.state.in_((S.PENDING, S.CONFIRMED))))


# --- PostgreSQL: the exclusion constraint ------------------------------------------------------------------

@on_postgresql
@pytest.mark.parametrize(("first", "second"), [
    (S.CONFIRMED, S.CONFIRMED), (S.PENDING, S.CONFIRMED), (S.CONFIRMED, S.PENDING), (S.PENDING, S.PENDING)])
@pytest.mark.parametrize(("start", "end"), [
    (sh(2, 10), sh(2, 12)), (sh(2, 11), sh(2, 11, 30)), (sh(2, 9), sh(2, 13)), (sh(2, 11), sh(2, 14))],
    ids=["same", "inside", "around", "overlapping"])
def test_overlapping_live_rows_are_refused(db, backend, resource, first, second, start, end):
    make_reservation(db, resource=resource, starts_at=sh(2, 10), ends_at=sh(2, 12), state=first)
    error = insert_refused(db, resource=resource, starts_at=start, ends_at=end, state=second)
    assert_exclusion_violation(error)
    assert live_rows(db, resource) == 1


@on_postgresql
@pytest.mark.parametrize("dead", [S.CANCELLED, S.REJECTED, S.COMPLETED, S.NO_SHOW])
def test_rows_that_are_not_live_may_overlap(db, backend, resource, dead):
    make_reservation(db, resource=resource, starts_at=sh(2, 10), ends_at=sh(2, 12), state=S.CONFIRMED)
    make_reservation(db, resource=resource, starts_at=sh(2, 10), ends_at=sh(2, 12), state=dead)
    make_reservation(db, resource=resource, starts_at=sh(2, 11), ends_at=sh(2, 13), state=dead)
    assert live_rows(db, resource) == 1


@on_postgresql
def test_back_to_back_and_other_resources_are_fine(db, backend, resource, facility):
    make_reservation(db, resource=resource, starts_at=sh(2, 10), ends_at=sh(2, 12))
    make_reservation(db, resource=resource, starts_at=sh(2, 12), ends_at=sh(2, 13))   # [10,12) + [12,13)
    make_reservation(db, resource=resource, starts_at=sh(2, 9), ends_at=sh(2, 10))    # [9,10) + [10,12)
    make_reservation(db, resource=make_resource(db, facility=facility), starts_at=sh(2, 10), ends_at=sh(2, 12))
    assert live_rows(db, resource) == 3


@on_postgresql
def test_reviving_a_cancelled_overlapping_row_is_refused(db, backend, resource):
    make_reservation(db, resource=resource, starts_at=sh(2, 10), ends_at=sh(2, 12))
    cancelled = make_reservation(db, resource=resource, starts_at=sh(2, 11), ends_at=sh(2, 13), state=S.CANCELLED)
    with pytest.raises(IntegrityError) as exc, db.begin_nested():
        db.execute(update(Reservation).where(Reservation.id == cancelled.id).values(state=S.CONFIRMED))
    assert_exclusion_violation(exc.value)
    db.expire_all()
    assert db.get(Reservation, cancelled.id).state == S.CANCELLED


@on_postgresql
def test_moving_a_row_onto_another_by_update_is_refused(db, backend, resource):
    make_reservation(db, resource=resource, starts_at=sh(2, 10), ends_at=sh(2, 12))
    later = make_reservation(db, resource=resource, starts_at=sh(2, 14), ends_at=sh(2, 16))
    savepoint = db.begin_nested()
    later.starts_at = sh(2, 11)
    with pytest.raises(IntegrityError) as exc:
        db.flush()
    savepoint.rollback()
    assert_exclusion_violation(exc.value)
    assert live_rows(db, resource) == 2


def skip_python_check(monkeypatch, *, always: bool) -> None:
    """Make the service's own overlap check find nothing (the first time, or always), as a racing request would."""
    real, calls = reservations.clashes, []

    def clashes(*args, **kwargs):
        calls.append(args)
        return [] if always or len(calls) == 1 else real(*args, **kwargs)

    monkeypatch.setattr(reservations, "clashes", clashes)


@on_postgresql
def test_service_turns_the_constraint_into_a_conflict_naming_the_clash(db, backend, resource, researcher,
                                                                      monkeypatch):
    existing = create_reservation(db, make_user(db), BookingRequest(resource.id, sh(2, 9), sh(2, 11)), now=NOW)
    skip_python_check(monkeypatch, always=False)
    before = written(db)
    with pytest.raises(ReservationConflict) as exc:
        create_reservation(db, researcher, BookingRequest(resource.id, sh(2, 10), sh(2, 12)), now=NOW)
    assert [c["id"] for c in exc.value.details["clashes"]] == [existing.id]
    assert "2026-12-02 09:00" in str(exc.value)
    assert written(db) == before
    # the session is still usable: the failed insert was undone by its savepoint only
    monkeypatch.undo()
    assert create_reservation(db, researcher, BookingRequest(resource.id, sh(2, 11), sh(2, 12)), now=NOW).id


@on_postgresql
def test_service_turns_the_constraint_into_a_conflict_even_when_nothing_is_found(db, backend, resource, researcher,
                                                                                monkeypatch):
    create_reservation(db, make_user(db), BookingRequest(resource.id, sh(2, 9), sh(2, 11)), now=NOW)
    skip_python_check(monkeypatch, always=True)
    before = written(db)
    with pytest.raises(ReservationConflict) as exc:
        create_reservation(db, researcher, BookingRequest(resource.id, sh(2, 10), sh(2, 12)), now=NOW)
    assert exc.value.details["clashes"][0]["state"] == "unknown"
    assert "2026-12-02 10:00" in str(exc.value)  # the refused window, in the facility's time
    assert written(db) == before


@on_postgresql
def test_modify_into_an_overlap_is_refused_by_the_constraint(db, backend, resource, researcher, monkeypatch):
    create_reservation(db, make_user(db), BookingRequest(resource.id, sh(2, 9), sh(2, 11)), now=NOW)
    mine = create_reservation(db, researcher, BookingRequest(resource.id, sh(2, 14), sh(2, 16)), now=NOW)
    skip_python_check(monkeypatch, always=True)
    before = written(db)
    with pytest.raises(ReservationConflict):
        modify_reservation(db, researcher, mine.id, starts_at=sh(2, 10), ends_at=sh(2, 12), now=NOW)
    assert written(db) == before
    db.expire_all()
    stored = db.get(Reservation, mine.id)
    assert (stored.starts_at, stored.ends_at) == (sh(2, 14), sh(2, 16))


# --- SQLite: the write lock --------------------------------------------------------------------------------

@on_sqlite
def test_sqlite_booking_refuses_to_run_without_the_write_lock(backend, engine):
    with Session(engine) as session:  # an ordinary (deferred) transaction, as a read-only request has
        with pytest.raises(RuntimeError, match="begin_write"):
            lock_resource(session, 1)
        with pytest.raises(RuntimeError, match="begin_write"):
            create_reservation(session, User(id=1), BookingRequest(1, sh(2, 9), sh(2, 11)), now=NOW)


@on_sqlite
def test_sqlite_write_lock_keeps_other_writers_out(backend, engine):
    with Session(engine) as session:
        begin_write(session)
        with Session(engine) as late:
            late.connection()  # a deferred transaction has begun: too late to ask for the lock
            with pytest.raises(RuntimeError, match="before the session's first statement"):
                begin_write(late)
        other = sqlite3.connect(make_url(engine.url).database, timeout=0.1, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()
        session.rollback()


# --- many clients race for one slot: exactly one wins -------------------------------------------------------

@pytest.fixture(scope="module")
def race_engine(backend, tmp_path_factory):
    """A database of its own: the racing clients commit, which the savepoint-per-test database must not see."""
    url = fresh_database_url(backend, tmp_path_factory)
    engine = make_engine(url)
    runner.upgrade(engine)
    yield engine
    engine.dispose()
    if backend == "postgresql":
        drop_pg_database(url)


def race(engine, clients: int) -> tuple[list[str], int]:
    with Session(engine) as db:
        begin_write(db)
        facility = make_facility(db, opening_hours=OFFICE_HOURS)
        resource = make_resource(db, facility=facility)
        users = [make_user(db) for _ in range(clients)]
        db.commit()
        resource_id, user_ids = resource.id, [u.id for u in users]
    start = threading.Barrier(clients)
    outcomes: list[str] = []

    def client(user_id: int) -> None:
        with Session(engine) as db:
            start.wait()
            begin_write(db)
            try:
                create_reservation(db, db.get(User, user_id),
                                   BookingRequest(resource_id, sh(2, 9), sh(2, 11)), now=NOW)
                db.commit()
                outcomes.append("won")
            except ReservationConflict:
                db.rollback()
                outcomes.append("conflict")

    threads = [threading.Thread(target=client, args=(uid,)) for uid in user_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    with Session(engine) as db:
        live = db.scalar(select(func.count()).select_from(Reservation).where(
            Reservation.resource_id == resource_id, Reservation.state.in_((S.PENDING, S.CONFIRMED))))
    return outcomes, live


def test_racing_clients_one_winner(backend, race_engine):
    outcomes, live = race(race_engine, clients=8)
    assert sorted(outcomes) == ["conflict"] * 7 + ["won"]
    assert live == 1


@on_postgresql
def test_racing_clients_one_winner_even_without_the_python_check(backend, race_engine, monkeypatch):
    monkeypatch.setattr(reservations, "clashes", lambda *args, **kwargs: [])
    outcomes, live = race(race_engine, clients=8)
    assert sorted(outcomes) == ["conflict"] * 7 + ["won"]
    assert live == 1
