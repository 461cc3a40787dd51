"""Open-sharing figures per instrument (design.md §7), computed from measured usage sessions and charges.

For each resource and a range of days (in its facility's time zone, both ends inclusive):

- 有效工作机时 (effective hours): the union of its devices' usage sessions, clipped to the range. A resource
  without any device cannot be measured; its effective hours are then the booked time of its completed
  reservations, and the figure says so (`metered` is False).
- 对外服务机时 (external hours): the part of that union whose sessions belong to an outside organisation.
  A session belongs to the reservation on the resource it overlaps most (so an overrun stays with the
  booking it overran); a session no reservation overlaps belongs to whoever billing charged for it (an
  unbooked-use charge), else to the facility itself. Outside means the billed organisation's customer
  class at the facility is not internal (neither the owner nor a declared affiliate) — the same rule
  billing prices by.
- 共享率 (sharing rate) = external ÷ effective hours.
- 对外服务收入 (external income): issued charges (credit notes subtract) of non-internal customer classes
  by service date; the voucher share is the innovation-voucher subsidy applied to those charges.
- users and organisations served (of sessions' bookings and unbooked-use charges), no-show rate (due
  reservations that were marked no-show or, on a metered resource, that no session overlapped), and the
  idle share of bookable hours (the booking rules' open hours minus blackouts, not covered by use).

Everything is streamed resource by resource (sessions and reservations ordered by resource), so a
province's year — millions of sessions — runs in bounded memory.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import String, and_, func, or_, select, type_coerce
from sqlalchemy.orm import Session

from billing.charges import CustomerClasses
from billing.models import Charge, ChargeKind, CustomerClass, RateCard
from billing.rate_cards import pick_card
from billing.reconcile import cards_by_resource
from billing.voucher_models import VoucherApplication
from booking.hours import open_intervals
from booking.models import Blackout, Facility, Reservation, ReservationState, Resource, ResourceKind
from booking.permissions import managed_facility_ids
from booking.rules import ALL_DAY
from core.accounts.models import Organisation, Role, User
from core.errors import N_, Forbidden, InvalidInput
from core.timeutil import utcnow
from devices.models import Device, UsageSession
from reports.intervals import Interval, clipped, intersection_length, length, merged, subtract
from reports.sql import epoch_seconds, stream_rows

# Reservations that held their slot and could have been used (pending ones were never approved).
COUNTED_STATES = (ReservationState.CONFIRMED, ReservationState.COMPLETED, ReservationState.NO_SHOW)
BENCHMARK_HOURS = (800, 1200, 1400)  # national yardsticks of effective hours a year (design.md §7)
MAX_RANGE_DAYS = 5 * 366
STREAM_BATCH = 20_000
NO_SHOW, COMPLETED = str(ReservationState.NO_SHOW), str(ReservationState.COMPLETED)
HOUR = Decimal(3600)
ZERO = Decimal("0.00")


def _hours(seconds: int) -> Decimal:
    return (Decimal(seconds) / HOUR).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _ratio(part: Decimal | int, whole: Decimal | int) -> Decimal | None:
    """part ÷ whole to four places (0.1234 = 12.34 %); None when there is nothing to divide."""
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


# --- what is asked for --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportScope:
    """Days `start`..`end` (inclusive, each facility's local days) and which resources: None = no filter."""

    start: date
    end: date
    facility_ids: frozenset[int] | None = None
    resource_ids: frozenset[int] | None = None
    owner_ids: frozenset[int] | None = None
    cities: frozenset[str] | None = None


def year_range(year: int) -> tuple[date, date]:
    return date(year, 1, 1), date(year, 12, 31)


def may_see_reports(db: Session, actor: User) -> frozenset[int] | None:
    """The facilities whose figures `actor` may see: None = all (admins, finance); lab managers theirs."""
    if actor.has_role(Role.ADMIN) or actor.has_role(Role.FINANCE):
        return None
    if actor.has_role(Role.LAB_MANAGER):
        return frozenset(managed_facility_ids(db, actor) or ())
    raise Forbidden()


def scope_for(db: Session, actor: User, start: date, end: date, *, facility_id: int | None = None,
              resource_id: int | None = None, owner_id: int | None = None, city: str | None = None) -> ReportScope:
    """The scope `actor` asked for, narrowed to what they may see; a facility outside it is refused."""
    if start.year < 1900 or end.year > 2999:
        raise InvalidInput({"start": [N_("Give a day between the years 1900 and 2999.")]})
    if end < start:
        raise InvalidInput({"end": [N_("The end must not be before the start.")]})
    if (end - start).days >= MAX_RANGE_DAYS:
        raise InvalidInput({"end": [N_("A report covers at most five years.")]})
    allowed = may_see_reports(db, actor)
    facilities = allowed
    if facility_id is not None:
        if allowed is not None and facility_id not in allowed:
            raise Forbidden()
        facilities = frozenset({facility_id})
    return ReportScope(start, end, facility_ids=facilities,
                       resource_ids=None if resource_id is None else frozenset({resource_id}),
                       owner_ids=None if owner_id is None else frozenset({owner_id}),
                       cities=None if not city else frozenset({city}))


# --- what comes out -----------------------------------------------------------------------------------------

@dataclass
class Totals:
    """Figures that add up over instruments (the organisation sets are unions, not sums)."""

    instruments: int = 0
    metered_instruments: int = 0
    effective_s: int = 0
    external_s: int = 0
    bookable_s: int = 0
    used_in_bookable_s: int = 0
    sessions: int = 0
    external_sessions: int = 0
    reservations_due: int = 0
    no_shows: int = 0
    income: Decimal = ZERO
    external_income: Decimal = ZERO
    voucher_subsidy: Decimal = ZERO
    users: set[int] = field(default_factory=set)
    organisations: set[int] = field(default_factory=set)
    external_organisations: set[int] = field(default_factory=set)

    def add(self, other: Totals) -> None:
        for name in ("instruments", "metered_instruments", "effective_s", "external_s", "bookable_s",
                     "used_in_bookable_s", "sessions", "external_sessions", "reservations_due", "no_shows",
                     "income", "external_income", "voucher_subsidy"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.users |= other.users
        self.organisations |= other.organisations
        self.external_organisations |= other.external_organisations

    @property
    def effective_hours(self) -> Decimal:
        return _hours(self.effective_s)

    @property
    def external_hours(self) -> Decimal:
        return _hours(self.external_s)

    @property
    def bookable_hours(self) -> Decimal:
        return _hours(self.bookable_s)

    @property
    def sharing_rate(self) -> Decimal | None:
        return _ratio(self.external_s, self.effective_s)

    @property
    def no_show_rate(self) -> Decimal | None:
        return _ratio(self.no_shows, self.reservations_due)

    @property
    def idle_share(self) -> Decimal | None:
        return _ratio(self.bookable_s - self.used_in_bookable_s, self.bookable_s)

    @property
    def voucher_share(self) -> Decimal | None:
        return _ratio(self.voucher_subsidy, self.external_income) if self.external_income > 0 else None

    @property
    def users_served(self) -> int:
        return len(self.users)

    @property
    def organisations_served(self) -> int:
        return len(self.organisations)

    @property
    def external_organisations_served(self) -> int:
        return len(self.external_organisations)


@dataclass
class InstrumentFigures(Totals):
    resource_id: int = 0
    name_zh: str = ""
    name_en: str = ""
    kind: str = ""
    category: str = ""
    model: str = ""
    manufacturer: str = ""
    original_value: Decimal = ZERO
    operation_mode: str = ""
    facility_id: int = 0
    facility_zh: str = ""
    facility_en: str = ""
    owner_id: int = 0
    owner_zh: str = ""
    owner_en: str = ""
    city: str = ""
    metered: bool = False
    rate_card: RateCard | None = None

    @property
    def benchmark_band(self) -> int:
        """How many of the 800 / 1,200 / 1,400 hour yardsticks the effective hours reach (0–3)."""
        return sum(self.effective_s >= hours * 3600 for hours in BENCHMARK_HOURS)


@dataclass
class SharingReport:
    scope: ReportScope
    instruments: list[InstrumentFigures]
    total: Totals
    heatmap: list[list[int]] | None = None  # [weekday 0=Monday][hour] → seconds of use, facility-local


# --- the computation -------------------------------------------------------------------------------------------

def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _bounds(scope: ReportScope, tz_name: str) -> tuple[int, int]:
    tz = ZoneInfo(tz_name)
    return (_epoch(datetime.combine(scope.start, time(0), tz)),
            _epoch(datetime.combine(scope.end + timedelta(days=1), time(0), tz)))


def _resource_filter(stmt, scope: ReportScope, resource_column, facility_column=None):
    if scope.resource_ids is not None:
        stmt = stmt.where(resource_column.in_(scope.resource_ids))
    if scope.facility_ids is not None:
        stmt = stmt.where((facility_column if facility_column is not None else Resource.facility_id)
                          .in_(scope.facility_ids))
    return stmt


def _resources(db: Session, scope: ReportScope) -> list[Any]:
    stmt = (select(Resource.id, Resource.name_zh, Resource.name_en, Resource.kind, Resource.category,
                   Resource.model, Resource.manufacturer, Resource.original_value, Resource.operation_mode,
                   Resource.bookable_hours, Facility.id.label("facility_id"), Facility.name_zh.label("facility_zh"),
                   Facility.name_en.label("facility_en"), Facility.city, Facility.timezone, Facility.opening_hours,
                   Facility.owner_id, Organisation.name_zh.label("owner_zh"), Organisation.name_en.label("owner_en"))
            .join(Facility, Resource.facility_id == Facility.id)
            .join(Organisation, Facility.owner_id == Organisation.id)
            .order_by(Resource.id))
    return db.execute(_facility_filter(_resource_filter(stmt, scope, Resource.id, Facility.id), scope)).all()


def _facility_filter(stmt, scope: ReportScope):
    """The scope's owning organisations and cities; `stmt` has Facility joined."""
    if scope.owner_ids is not None:
        stmt = stmt.where(Facility.owner_id.in_(scope.owner_ids))
    if scope.cities is not None:
        stmt = stmt.where(Facility.city.in_(scope.cities))
    return stmt


def _grouped(rows: Iterable[Any]) -> Iterator[tuple[int, list[Any]]]:
    """(resource id, its rows) from rows ordered by resource id (first column)."""
    current, bucket = None, []
    for row in rows:
        if row[0] != current:
            if bucket:
                yield current, bucket
            current, bucket = row[0], []
        bucket.append(row)
    if bucket:
        yield current, bucket


class _Cursor:
    """Hands out a resource-ordered stream's rows for one resource at a time, resources asked in order."""

    def __init__(self, groups: Iterator[tuple[int, list[Any]]]):
        self._groups = groups
        self._head = next(groups, None)

    def take(self, resource_id: int) -> list[Any]:
        while self._head is not None and self._head[0] < resource_id:
            self._head = next(self._groups, None)
        if self._head is not None and self._head[0] == resource_id:
            rows, self._head = self._head[1], next(self._groups, None)
            return rows
        return []


@dataclass
class _Context:
    """What one pass needs besides the streams: loaded once, small next to sessions and reservations."""

    scope: ReportScope
    now: int
    classes: CustomerClasses
    metered: set[int]
    blackouts: dict[int, list[Interval]]
    unbooked: dict[int, tuple[int, int | None, bool]]  # session id → (org, user, external) from charges
    money: dict[int, tuple[Decimal, Decimal]]  # resource → (income, external income)
    vouchers: dict[int, Decimal]
    cards: dict[int, list[RateCard]]
    open_hours: dict[tuple[str, str], list[Interval]] = field(default_factory=dict)
    _outside: dict[int, Callable[[int], bool]] = field(default_factory=dict)

    def outside_for(self, owner_id: int) -> Callable[[int], bool]:
        """Is an organisation an outside customer of this owner's facilities? (cached: a few hundred
        organisations against millions of sessions)"""
        if owner_id not in self._outside:
            answers: dict[int, bool] = {}

            def outside(org_id: int) -> bool:
                answer = answers.get(org_id)
                if answer is None:
                    answer = answers[org_id] = self.classes.of(org_id, owner_id) != CustomerClass.INTERNAL
                return answer

            self._outside[owner_id] = outside
        return self._outside[owner_id]


def _load_context(db: Session, scope: ReportScope, lo: int, hi: int, now: datetime) -> _Context:
    lo_dt, hi_dt = datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC)
    metered = set(db.scalars(select(Device.resource_id).distinct()))
    blackouts: dict[int, list[Interval]] = defaultdict(list)
    for rid, starts, ends in db.execute(
            _resource_filter(select(Blackout.resource_id, Blackout.starts_at, Blackout.ends_at)
                             .join(Resource, Blackout.resource_id == Resource.id)
                             .where(Blackout.starts_at < hi_dt, Blackout.ends_at > lo_dt),
                             scope, Blackout.resource_id)):
        blackouts[rid].append((_epoch(starts), _epoch(ends)))
    days = (scope.start - timedelta(days=1), scope.end + timedelta(days=1))
    unbooked = {sid: (org, user, cls != CustomerClass.INTERNAL) for sid, org, user, cls in db.execute(
        select(Charge.usage_session_id, Charge.organisation_id, Charge.user_id, Charge.customer_class)
        .where(Charge.usage_session_id.is_not(None), Charge.reservation_id.is_(None),
               Charge.kind == ChargeKind.CHARGE, Charge.service_date.between(*days)))}
    in_range = Charge.service_date.between(scope.start, scope.end)
    money: dict[int, tuple[Decimal, Decimal]] = {}
    for rid, cls, total in db.execute(
            _resource_filter(select(Charge.resource_id, Charge.customer_class, func.sum(Charge.total))
                             .where(in_range).group_by(Charge.resource_id, Charge.customer_class),
                             scope, Charge.resource_id, Charge.facility_id)):
        income, external = money.get(rid, (ZERO, ZERO))
        total = Decimal(total or 0)
        money[rid] = (income + total, external + (total if cls != CustomerClass.INTERNAL else ZERO))
    vouchers = {rid: Decimal(amount or 0) for rid, amount in db.execute(
        _resource_filter(select(Charge.resource_id, func.sum(VoucherApplication.amount))
                         .join(Charge, VoucherApplication.charge_id == Charge.id)
                         .where(in_range, Charge.customer_class != CustomerClass.INTERNAL)
                         .group_by(Charge.resource_id), scope, Charge.resource_id, Charge.facility_id))}
    return _Context(scope, _epoch(now), CustomerClasses(db), metered, dict(blackouts), unbooked, money, vouchers,
                    cards_by_resource(db))


def _bookable(ctx: _Context, row: Any, lo: int, hi: int) -> list[Interval]:
    hours = row.bookable_hours or (ALL_DAY if row.kind == ResourceKind.PILOT_LINE else row.opening_hours) or {}
    key = (json.dumps(hours, sort_keys=True), row.timezone)
    if key not in ctx.open_hours:  # the same hours in the same zone: most resources share a handful
        spans = open_intervals(hours, ZoneInfo(row.timezone), datetime.fromtimestamp(lo, UTC),
                               datetime.fromtimestamp(hi, UTC))
        ctx.open_hours[key] = [(_epoch(s), _epoch(e)) for s, e in spans]
    intervals = ctx.open_hours[key]
    return subtract(intervals, merged(ctx.blackouts.get(row.id, ()))) if row.id in ctx.blackouts else intervals


def _figures_of(ctx: _Context, row: Any, sessions: list[Any], reservations: list[Any],
                heatmap: list[list[int]] | None) -> InstrumentFigures:
    lo, hi = _bounds(ctx.scope, row.timezone)
    figures = InstrumentFigures(
        instruments=1, resource_id=row.id, name_zh=row.name_zh, name_en=row.name_en, kind=str(row.kind),
        category=str(row.category), model=row.model, manufacturer=row.manufacturer,
        original_value=row.original_value, operation_mode=str(row.operation_mode), facility_id=row.facility_id,
        facility_zh=row.facility_zh, facility_en=row.facility_en, owner_id=row.owner_id, owner_zh=row.owner_zh,
        owner_en=row.owner_en, city=row.city, metered=row.id in ctx.metered,
        rate_card=pick_card(ctx.cards.get(row.id, []), ctx.scope.end))
    figures.metered_instruments = int(figures.metered)
    outside_org = ctx.outside_for(row.owner_id)
    unbooked = ctx.unbooked
    shown: set[int] = set()  # reservations some session overlapped
    used: list[Interval] = []
    used_external: list[Interval] = []
    users, organisations, external_organisations = figures.users, figures.organisations, figures.external_organisations
    n, j, now = len(reservations), 0, ctx.now
    # This loop runs for every session of the province: plain comparisons instead of min()/max() calls.
    # sessions: (resource, id, start_ns, end_ns); reservations: (resource, id, starts, ends, state, user, org)
    for _rid, session_id, start_ns, end_ns in sessions:
        start = start_ns // 1_000_000_000
        end = now if end_ns is None else end_ns // 1_000_000_000
        while j < n and reservations[j][3] <= start:
            j += 1
        best, best_overlap, k = None, 0, j
        while k < n:
            r = reservations[k]
            if r[2] >= end:
                break
            overlap = (end if end < r[3] else r[3]) - (start if start > r[2] else r[2])
            if overlap > 0:
                shown.add(r[1])
                if overlap > best_overlap:
                    best, best_overlap = r, overlap
            k += 1
        part_start, part_end = (start if start > lo else lo), (end if end < hi else hi)
        if part_start >= part_end:
            continue
        part = (part_start, part_end)
        figures.sessions += 1
        used.append(part)
        if best is not None:
            org, user = best[6], best[5]
            outside = outside_org(org)
        elif session_id in unbooked:
            org, user, outside = unbooked[session_id]
        else:
            continue  # unbooked, unbilled use: the facility's own
        organisations.add(org)
        if user is not None:
            users.add(user)
        if outside:
            figures.external_sessions += 1
            external_organisations.add(org)
            used_external.append(part)
    due_until = min(hi, ctx.now)
    for r in reservations:
        starts, ends = r[2], r[3]
        if lo <= ends <= due_until:
            figures.reservations_due += 1
            if r[4] == NO_SHOW or (figures.metered and r[1] not in shown):
                figures.no_shows += 1
        if not figures.metered and r[4] == COMPLETED:
            part = clipped(starts, ends, lo, hi)
            if part is not None:  # not measurable: the booked time of completed bookings stands in for use
                used.append(part)
                figures.users.add(r[5])
                figures.organisations.add(r[6])
                if outside_org(r[6]):
                    used_external.append(part)
                    figures.external_organisations.add(r[6])
    union = merged(used)
    figures.effective_s = length(union)
    figures.external_s = length(merged(used_external))
    bookable = _bookable(ctx, row, lo, hi)
    figures.bookable_s = length(bookable)
    figures.used_in_bookable_s = intersection_length(union, bookable)
    figures.income, figures.external_income = ctx.money.get(row.id, (ZERO, ZERO))
    figures.voucher_subsidy = ctx.vouchers.get(row.id, ZERO)
    if heatmap is not None:
        _add_to_heatmap(heatmap, union, ZoneInfo(row.timezone))
    return figures


def _add_to_heatmap(heatmap: list[list[int]], union: list[Interval], tz: ZoneInfo) -> None:
    for start, end in union:
        # the zone's offset at the start holds for the session (a DST change inside one is rare and the
        # heatmap is a picture of habits, not an account)
        offset = int(datetime.fromtimestamp(start, tz).utcoffset().total_seconds())
        cursor = start
        while cursor < end:
            local = cursor + offset
            hour_end = local - local % 3600 + 3600
            step = min(end - cursor, hour_end - local)
            days, seconds = divmod(local, 86400)
            heatmap[(days + 3) % 7][seconds // 3600] += step  # 1970-01-01 was a Thursday (weekday 3)
            cursor += step


def _streams(db: Session, scope: ReportScope, lo: int, hi: int, now: int):
    """The two ordered streams of a pass: every session that overlaps the range or a reservation due in it,
    and every counted reservation such a session overlaps (so a session's best booking is always among them,
    however long either is). Two aggregates find how far back and forward that reaches."""
    counted = type_coerce(Reservation.state, String).in_([str(s) for s in COUNTED_STATES])
    lo_dt, hi_dt = datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC)
    earliest_due = db.scalar(_resource_filter(
        select(func.min(epoch_seconds(Reservation.starts_at))).join(Resource, Reservation.resource_id == Resource.id)
        .where(counted, Reservation.ends_at >= lo_dt, Reservation.starts_at < hi_dt), scope, Reservation.resource_id))
    sessions_from = min(lo, earliest_due if earliest_due is not None else lo) * 1_000_000_000
    in_reach = (UsageSession.start_ns < hi * 1_000_000_000,
                or_(UsageSession.end_ns.is_(None), UsageSession.end_ns > sessions_from))
    first_start, last_end = db.execute(_resource_filter(
        select(func.min(UsageSession.start_ns), func.max(func.coalesce(UsageSession.end_ns, now * 1_000_000_000)))
        .join(Device, UsageSession.device_pk == Device.id).join(Resource, Device.resource_id == Resource.id)
        .where(*in_reach), scope, Device.resource_id)).one()
    reservations_from = min(lo, first_start // 1_000_000_000 if first_start is not None else lo)
    reservations_to = max(hi, last_end // 1_000_000_000 + 1 if last_end is not None else hi)
    session_stmt = _resource_filter(
        select(Device.resource_id, UsageSession.id, UsageSession.start_ns, UsageSession.end_ns)
        .join(Device, UsageSession.device_pk == Device.id).join(Resource, Device.resource_id == Resource.id)
        .where(*in_reach).order_by(Device.resource_id, UsageSession.start_ns), scope, Device.resource_id)
    reservation_stmt = _resource_filter(
        select(Reservation.resource_id, Reservation.id, epoch_seconds(Reservation.starts_at),
               epoch_seconds(Reservation.ends_at), type_coerce(Reservation.state, String), Reservation.user_id,
               Reservation.billed_org_id)
        .join(Resource, Reservation.resource_id == Resource.id)
        .where(counted, Reservation.starts_at < datetime.fromtimestamp(reservations_to, UTC),
               Reservation.ends_at > datetime.fromtimestamp(reservations_from, UTC))
        .order_by(Reservation.resource_id, Reservation.starts_at), scope, Reservation.resource_id)
    return session_stmt, reservation_stmt


def compute(db: Session, scope: ReportScope, *, now: datetime | None = None, heatmap: bool = False,
            progress: Callable[[int, int], None] | None = None) -> SharingReport:
    """Every resource's figures in `scope` and their total; `progress(done, total)` every 200 resources."""
    now = now or utcnow()
    resources = _resources(db, scope)
    zones = {row.timezone for row in resources} or {"Asia/Shanghai"}
    lo = min(_bounds(scope, tz)[0] for tz in zones)
    hi = max(_bounds(scope, tz)[1] for tz in zones)
    ctx = _load_context(db, scope, lo, hi, now)
    session_stmt, reservation_stmt = _streams(db, scope, lo, hi, _epoch(now))
    sessions = _Cursor(_grouped(stream_rows(db, session_stmt, STREAM_BATCH)))
    reservations = _Cursor(_grouped(stream_rows(db, reservation_stmt, STREAM_BATCH)))
    grid = [[0] * 24 for _ in range(7)] if heatmap else None
    total = Totals()
    instruments = []
    for done, row in enumerate(resources, start=1):
        figures = _figures_of(ctx, row, sessions.take(row.id), reservations.take(row.id), grid)
        instruments.append(figures)
        total.add(figures)
        if progress is not None and (done % 200 == 0 or done == len(resources)):
            progress(done, len(resources))
    return SharingReport(scope, instruments, total, grid)


def instrument_figures(db: Session, start: date | datetime, end: date | datetime) -> list[InstrumentFigures]:
    """Every resource's figures for the days start..end (what bench/catalog.py times for a year)."""
    start = start.date() if isinstance(start, datetime) else start
    end = end.date() if isinstance(end, datetime) else end
    return compute(db, ReportScope(start, end)).instruments


# --- groups -------------------------------------------------------------------------------------------------

GROUPINGS = ("facility", "organisation", "city")


@dataclass
class GroupFigures(Totals):
    key: Any = None
    name_zh: str = ""
    name_en: str = ""


def grouped(instruments: Iterable[InstrumentFigures], by: str) -> list[GroupFigures]:
    """Totals per facility, owning organisation or city (市州), largest effective hours first."""
    if by not in GROUPINGS:
        raise InvalidInput({"group": [N_("Choose facility, organisation or city.")]})
    groups: dict[Any, GroupFigures] = {}
    for figures in instruments:
        if by == "facility":
            key, zh, en = figures.facility_id, figures.facility_zh, figures.facility_en
        elif by == "organisation":
            key, zh, en = figures.owner_id, figures.owner_zh, figures.owner_en
        else:
            key, zh, en = figures.city, figures.city, figures.city
        group = groups.setdefault(key, GroupFigures(key=key, name_zh=zh, name_en=en))
        group.add(figures)
    return sorted(groups.values(), key=lambda g: (-g.effective_s, str(g.key)))


# --- drill-down: where a figure comes from ------------------------------------------------------------------

@dataclass(frozen=True)
class SessionSource:
    session_id: int
    device_id: str
    started_at: datetime
    ended_at: datetime | None
    counted_s: int  # inside the range
    reservation_id: int | None
    organisation_id: int | None
    user_id: int | None
    external: bool


def session_sources(db: Session, scope: ReportScope, resource_id: int, *, now: datetime | None = None
                    ) -> list[SessionSource]:
    """The usage sessions behind one resource's hours, each with whom it was counted for."""
    now = now or utcnow()
    row = next(iter(_resources(db, ReportScope(scope.start, scope.end, facility_ids=scope.facility_ids,
                                               resource_ids=frozenset({resource_id})))), None)
    if row is None:
        return []
    lo, hi = _bounds(scope, row.timezone)
    ctx = _load_context(db, ReportScope(scope.start, scope.end, resource_ids=frozenset({resource_id})), lo, hi, now)
    sessions = db.execute(
        select(UsageSession, Device.device_id).join(Device, UsageSession.device_pk == Device.id)
        .where(Device.resource_id == resource_id, UsageSession.start_ns < hi * 1_000_000_000,
               or_(UsageSession.end_ns.is_(None), UsageSession.end_ns > lo * 1_000_000_000))
        .order_by(UsageSession.start_ns)).all()
    if not sessions:
        return []
    # every reservation any of these sessions overlaps, in start order: the first of equal overlaps wins, as in
    # compute()
    span_from = datetime.fromtimestamp(min(s.start_ns for s, _ in sessions) // 1_000_000_000, UTC)
    span_to = datetime.fromtimestamp(max(ctx.now if s.end_ns is None else s.end_ns // 1_000_000_000
                                         for s, _ in sessions) + 1, UTC)
    reservations = [(_epoch(r.starts_at), _epoch(r.ends_at), r) for r in db.execute(
        select(Reservation.id, Reservation.starts_at, Reservation.ends_at, Reservation.user_id,
               Reservation.billed_org_id)
        .where(Reservation.resource_id == resource_id, Reservation.state.in_(COUNTED_STATES),
               Reservation.starts_at < span_to, Reservation.ends_at > span_from)
        .order_by(Reservation.starts_at))]
    result = []
    for session, device_id in sessions:
        start = session.start_ns // 1_000_000_000
        end = ctx.now if session.end_ns is None else session.end_ns // 1_000_000_000
        part = clipped(start, end, lo, hi)
        overlaps = [(min(end, e) - max(start, s), r) for s, e, r in reservations if s < end and e > start]
        best = max(overlaps, key=lambda pair: pair[0], default=None)
        if best is not None:
            r = best[1]
            org, user, reservation_id = r.billed_org_id, r.user_id, r.id
        elif session.id in ctx.unbooked:
            org, user, _ = ctx.unbooked[session.id]
            reservation_id = None
        else:
            org = user = reservation_id = None
        result.append(SessionSource(
            session.id, device_id, session.started_at, session.ended_at,
            0 if part is None else part[1] - part[0], reservation_id, org, user,
            org is not None and ctx.classes.of(org, row.owner_id) != CustomerClass.INTERNAL))
    return result


def charge_sources(db: Session, scope: ReportScope, resource_id: int) -> list[Charge]:
    """The issued charges (and credit notes) behind one resource's income, by service date."""
    stmt = (select(Charge).join(Resource, Charge.resource_id == Resource.id)
            .where(Charge.resource_id == resource_id, Charge.service_date.between(scope.start, scope.end))
            .order_by(Charge.service_date, Charge.id))
    if scope.facility_ids is not None:
        stmt = stmt.where(and_(Charge.facility_id.in_(scope.facility_ids)))
    return list(db.scalars(stmt))


# --- money by month ---------------------------------------------------------------------------------------------

@dataclass
class MonthFigures:
    month: date  # the first day
    income: Decimal = ZERO
    external_income: Decimal = ZERO
    voucher_subsidy: Decimal = ZERO


@dataclass
class ProgrammeBurndown:
    """A voucher programme's budget and what was left of it at the end of each month of the range."""

    programme_id: int
    code: str
    name_zh: str
    name_en: str
    budget: Decimal
    remaining: list[tuple[date, Decimal]]  # (month, budget left at its end), programme-wide


def _months(start: date, end: date) -> list[date]:
    months, month = [], start.replace(day=1)
    while month <= end:
        months.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return months


def monthly_money(db: Session, scope: ReportScope) -> list[MonthFigures]:
    """Income, external income and voucher subsidy of the scope's charges per month of service."""
    months = {m: MonthFigures(m) for m in _months(scope.start, scope.end)}
    in_range = Charge.service_date.between(scope.start, scope.end)

    def scoped(stmt):
        stmt = _resource_filter(stmt.join(Resource, Charge.resource_id == Resource.id), scope, Charge.resource_id,
                                Charge.facility_id)
        if scope.owner_ids is not None or scope.cities is not None:
            stmt = _facility_filter(stmt.join(Facility, Charge.facility_id == Facility.id), scope)
        return stmt

    for day, cls, total in db.execute(scoped(
            select(Charge.service_date, Charge.customer_class, func.sum(Charge.total)).where(in_range)
            .group_by(Charge.service_date, Charge.customer_class))):
        figures = months[day.replace(day=1)]
        figures.income += Decimal(total or 0)
        if cls != CustomerClass.INTERNAL:
            figures.external_income += Decimal(total or 0)
    for day, amount in db.execute(scoped(
            select(Charge.service_date, func.sum(VoucherApplication.amount))
            .select_from(VoucherApplication).join(Charge, VoucherApplication.charge_id == Charge.id)
            .where(in_range).group_by(Charge.service_date))):
        months[day.replace(day=1)].voucher_subsidy += Decimal(amount or 0)
    return list(months.values())


def voucher_burndown(db: Session, scope: ReportScope) -> list[ProgrammeBurndown]:
    """Programme-wide budgets left month by month (for admins and finance: a programme spans facilities)."""
    from billing.voucher_models import VoucherProgramme

    months = _months(scope.start, scope.end)
    result = []
    programmes = db.scalars(select(VoucherProgramme).where(
        VoucherProgramme.year.between(scope.start.year, scope.end.year)).order_by(VoucherProgramme.id))
    for programme in programmes:
        spent = dict(db.execute(
            select(VoucherApplication.service_date, func.sum(VoucherApplication.amount))
            .where(VoucherApplication.programme_id == programme.id)
            .group_by(VoucherApplication.service_date)).all())
        remaining = []
        for month in months:
            next_month = (month + timedelta(days=32)).replace(day=1)
            used = sum((Decimal(v or 0) for d, v in spent.items() if d < next_month), ZERO)
            remaining.append((month, programme.budget - used))
        result.append(ProgrammeBurndown(programme.id, programme.code, programme.name_zh, programme.name_en,
                                        programme.budget, remaining))
    return result


@dataclass(frozen=True)
class BookingSource:
    """A completed reservation whose booked time stands in for use on a resource without a device."""

    reservation_id: int
    starts_at: datetime
    ends_at: datetime
    counted_s: int  # inside the range
    organisation_id: int
    user_id: int
    external: bool


def booking_sources(db: Session, scope: ReportScope, resource_id: int) -> list[BookingSource]:
    """The completed reservations behind an unmetered resource's hours (none for a metered resource)."""
    row = next(iter(_resources(db, ReportScope(scope.start, scope.end, facility_ids=scope.facility_ids,
                                               resource_ids=frozenset({resource_id})))), None)
    if row is None or db.scalar(select(Device.id).where(Device.resource_id == resource_id).limit(1)) is not None:
        return []
    lo, hi = _bounds(scope, row.timezone)
    classes = CustomerClasses(db)
    result = []
    lo_dt, hi_dt = datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC)
    for r in db.scalars(select(Reservation).where(
            Reservation.resource_id == resource_id, Reservation.state == ReservationState.COMPLETED,
            Reservation.starts_at < hi_dt, Reservation.ends_at > lo_dt).order_by(Reservation.starts_at)):
        part = clipped(_epoch(r.starts_at), _epoch(r.ends_at), lo, hi)
        if part is not None:
            result.append(BookingSource(r.id, r.starts_at, r.ends_at, part[1] - part[0], r.billed_org_id, r.user_id,
                                        classes.of(r.billed_org_id, row.owner_id) != CustomerClass.INTERNAL))
    return result
