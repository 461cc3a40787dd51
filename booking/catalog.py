"""The catalog: search (free text, filters, time-first) and resource editing by lab managers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.orm import Session

from booking.categories import ServiceCategory
from booking.hours import validate_hours
from booking.models import (
    LIVE_STATES,
    Blackout,
    Facility,
    OperationMode,
    Reservation,
    Resource,
    ResourceKind,
    ResourceStatus,
)
from booking.permissions import can_manage_facility
from booking.rules import Rules, window_violations
from core import audit
from core.accounts.models import User
from core.errors import N_, Forbidden, InvalidInput, Message, NotFound
from core.timeutil import as_utc

SORTS = {
    "name": (Resource.name_zh, Resource.id),
    "value_desc": (Resource.original_value.desc(), Resource.id),
    "value_asc": (Resource.original_value, Resource.id),
    "newest": (Resource.created_at.desc(), Resource.id),
}


# The short names people type for instruments whose catalog names are spelled out: "电镜" must find a
# 扫描电子显微镜. A resource whose text contains the full term is also indexed under its short forms.
ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    "电子显微镜": ("电镜",),
    "扫描电子显微镜": ("扫描电镜", "sem"),
    "透射电子显微镜": ("透射电镜", "tem"),
    "冷冻电子显微镜": ("冷冻电镜", "cryo-em"),
    "核磁共振": ("核磁", "nmr"),
    "x射线衍射": ("xrd",),
    "液相色谱": ("液相",),
    "高效液相色谱": ("hplc",),
    "气相色谱": ("气相",),
    "电感耦合等离子体": ("icp",),
    "原子力显微镜": ("afm",),
    "光电子能谱": ("xps",),
    "激光共聚焦": ("共聚焦",),
    "流式细胞": ("流式",),
    "红外光谱": ("红外", "ftir"),
    "拉曼": ("raman",),
}


def search_text_of(resource: Resource) -> str:
    parts = [resource.name_zh, resource.name_en, resource.model, resource.manufacturer,
             resource.description_zh, resource.description_en]
    for spec in resource.specs or []:
        parts += [str(spec.get("key_zh", "")), str(spec.get("key_en", "")), str(spec.get("value", ""))]
    text = " ".join(p for p in parts if p).lower()
    aliases = [alias for term, short in ABBREVIATIONS.items() if term in text for alias in short]
    return f"{text} {' '.join(aliases)}" if aliases else text


@dataclass(frozen=True)
class CatalogQuery:
    q: str = ""
    category: str | None = None
    kind: str | None = None
    city: str | None = None
    facility_id: int | None = None
    operation_mode: str | None = None
    voucher_eligible: bool | None = None
    free_from: datetime | None = None
    free_to: datetime | None = None
    include_retired: bool = False
    sort: str = "name"
    page: int = 1
    per_page: int = 20


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _reservation_overlaps(start: datetime, end: datetime, dialect: str) -> ColumnElement[bool]:
    """A live reservation of the resource overlaps [start, end)."""
    if dialect == "postgresql" and end > start:
        # In the form of the partial GiST index ix_reservation_live_window (live reservations only, by their
        # [) range), so PostgreSQL finds the few live reservations in the window at once and anti-joins them.
        # The b-tree on (resource_id, starts_at, ends_at) would walk every past reservation of every resource,
        # and even the exclusion constraint's index, led by resource_id, is probed once per resource.
        # (Two non-empty [) ranges overlap exactly when each starts before the other ends.)
        return and_(Reservation.resource_id == Resource.id,
                    literal_column("reservation.state IN ('pending', 'confirmed')"),
                    func.tstzrange(Reservation.starts_at, Reservation.ends_at, literal_column("'[)'"))
                    .op("&&")(func.tstzrange(start, end, literal_column("'[)'"))))
    return and_(Reservation.resource_id == Resource.id, Reservation.state.in_(LIVE_STATES),
                Reservation.starts_at < end, Reservation.ends_at > start)


def _filtered(query: CatalogQuery, dialect: str = "") -> Select:
    stmt = select(Resource).join(Facility)
    if not query.include_retired:
        stmt = stmt.where(Resource.status == ResourceStatus.ACTIVE)
    for word in query.q.lower().split():
        # substring match: "电镜" finds 扫描电镜 (Chinese has no spaces between words to match on)
        stmt = stmt.where(Resource.search_text.like(f"%{_escape_like(word)}%", escape="\\"))
    if query.category:
        stmt = stmt.where(Resource.category == query.category)
    if query.kind:
        stmt = stmt.where(Resource.kind == query.kind)
    if query.city:
        stmt = stmt.where(Facility.city == query.city)
    if query.facility_id:
        stmt = stmt.where(Resource.facility_id == query.facility_id)
    if query.operation_mode:
        modes = {query.operation_mode, OperationMode.BOTH} if query.operation_mode != OperationMode.BOTH else {
            OperationMode.BOTH}
        stmt = stmt.where(Resource.operation_mode.in_(modes))
    if query.voucher_eligible is not None:
        stmt = stmt.where(Resource.voucher_eligible == query.voucher_eligible)
    if query.free_from and query.free_to:
        start, end = as_utc(query.free_from), as_utc(query.free_to)
        stmt = stmt.where(
            ~exists().where(_reservation_overlaps(start, end, dialect)),
            ~exists().where(Blackout.resource_id == Resource.id, Blackout.starts_at < end, Blackout.ends_at > start),
        )
    return stmt


# The rules that make a window unbookable whoever asks and whenever: time-first search keeps a resource when
# none of these is broken (lead time and horizon depend on when one asks, not on the resource's calendar).
HARD_RULES = frozenset({"outside_bookable_hours", "too_short", "too_long", "granularity", "whole_days",
                        "batch_length"})


_NO_LENGTH_LIMIT = 10 ** 9
_MAX_LISTED_RULE_SETS = 1000  # beyond this many in the shorter list, rule sets are matched in Python instead


def _rule_set_columns() -> tuple[ColumnElement, ...]:
    """What the hard rules of a resource read, as one group key: kind, own hours, the facility's hours and time
    zone, granularity, and — for resources booked in whole days only — length limits and batch length. (For
    resources booked in minutes, too_short and too_long compare the window's real minutes with their limits
    and nothing else: that is done in SQL, see _time_first_page.) JSON hours are compared as their text."""
    whole_days = Resource.granularity_min == 1440
    return (Resource.kind, func.coalesce(cast(Resource.bookable_hours, String), ""),
            func.coalesce(cast(Facility.opening_hours, String), ""), Facility.timezone, Resource.granularity_min,
            case((whole_days, Resource.min_duration_min), else_=0),
            case((whole_days, Resource.max_duration_min), else_=0),
            case((whole_days, func.coalesce(Resource.batch_days, 0)), else_=0))


def _accepts(rule_set: tuple, start: datetime, end: datetime, reference: datetime) -> bool:
    kind, hours, opening, timezone, granularity, shortest, longest, batch_days = rule_set
    if granularity != 1440:
        shortest, longest = 0, _NO_LENGTH_LIMIT
    resource = SimpleNamespace(kind=kind, bookable_hours=json.loads(hours) if hours else None,
                               granularity_min=granularity, min_duration_min=shortest, max_duration_min=longest,
                               lead_time_min=0, horizon_days=1, batch_days=batch_days or None)
    facility = SimpleNamespace(opening_hours=json.loads(opening) if opening else None, timezone=timezone)
    return not any(v["code"] in HARD_RULES
                   for v in window_violations(Rules.of(resource, facility), start, end, reference))


def _rule_set_key(rule_set: tuple[ColumnElement, ...]) -> ColumnElement[str]:
    """The rule set as one string (its parts joined by the unit separator, which JSON text cannot contain
    unescaped), so that the page query picks the accepted rule sets with one hashed IN list: a row-value IN
    list of eight expressions is compared row by row and cost hundreds of milliseconds."""
    parts = [cast(part, String) for part in rule_set]
    key = parts[0]
    for part in parts[1:]:
        key = key.concat(literal("\x1f", String)).concat(part)
    return key


def _time_first_page(db: Session, filtered: Select, order: tuple, start: datetime, end: datetime,
                     reference: datetime, offset: int, limit: int) -> tuple[list[int], int]:
    """The page's ids and the total of the candidates whose rules accept [start, end), exactly as
    window_violations on each resource would judge, with window_violations run once per distinct rule set.

    First the candidates' rule sets with their counts (GROUP BY: a few hundred rows, not one per resource),
    judged in Python; then the page, in SQL, of the candidates whose rule set passed."""
    if end > start:
        minutes = (end - start).total_seconds() / 60
        filtered = filtered.where(or_(Resource.granularity_min == 1440,
                                      and_(Resource.min_duration_min <= minutes, Resource.max_duration_min >= minutes)))
    rule_set = _rule_set_columns()
    key = _rule_set_key(rule_set).label("rule_set")
    passing, failing, total = [], [], 0
    for row in db.execute(filtered.with_only_columns(key, *rule_set, func.count(Resource.id)).group_by(*rule_set)):
        if _accepts(tuple(row[1:-1]), start, end, reference):
            passing.append(row[0])
            total += row[-1]
        else:
            failing.append(row[0])
    if not passing or offset >= total:
        return [], total
    page = filtered.with_only_columns(Resource.id).order_by(*order)
    if failing and min(len(passing), len(failing)) > _MAX_LISTED_RULE_SETS:
        accepted = set(passing)
        ids = [row[0] for row in db.execute(page.add_columns(key)) if row[1] in accepted]
        return ids[offset:offset + limit], total
    if failing:
        page = page.where(key.not_in(failing) if len(failing) <= len(passing) else key.in_(passing))
    return list(db.scalars(page.limit(limit).offset(offset))), total


def _resources(db: Session, ids: list[int]) -> list[Resource]:
    loaded = {r.id: r for r in db.scalars(select(Resource).where(Resource.id.in_(ids))).unique()}
    return [loaded[i] for i in ids]


def search(db: Session, query: CatalogQuery, *, now: datetime | None = None) -> dict[str, Any]:
    """A page of resources and the total. With free_from/free_to, only resources bookable in that window:
    nothing booked or blacked out there (in SQL), and the window fits their hours and length rules."""
    filtered = _filtered(query, db.get_bind().dialect.name)
    order = SORTS.get(query.sort, SORTS["name"])
    offset = (query.page - 1) * query.per_page
    if not (query.free_from and query.free_to):
        # One pass over the matching resources gives the page's ids and the total (a window count), and only
        # the page is then loaded whole: the resources with their facility and its owner are wide rows.
        rows = db.execute(filtered.with_only_columns(Resource.id, func.count().over().label("total"))
                          .order_by(*order).limit(query.per_page).offset(offset)).all()
        if rows or offset == 0:
            total = rows[0].total if rows else 0
        else:  # a page past the end: nothing to count along
            total = db.scalar(filtered.with_only_columns(func.count(Resource.id)))
        return {"items": _resources(db, [row.id for row in rows]), "total": total, "page": query.page,
                "per_page": query.per_page}
    start, end = as_utc(query.free_from), as_utc(query.free_to)
    from core.timeutil import utcnow

    ids, total = _time_first_page(db, filtered, order, start, end, now or utcnow(), offset, query.per_page)
    return {"items": _resources(db, ids), "total": total, "page": query.page, "per_page": query.per_page}


# --- editing ---------------------------------------------------------------------------------------------

EDITABLE_FIELDS = (
    "kind", "name_zh", "name_en", "description_zh", "description_en", "model", "manufacturer", "original_value",
    "category", "operation_mode", "voucher_eligible", "status", "specs", "granularity_min", "min_duration_min",
    "max_duration_min", "lead_time_min", "horizon_days", "bookable_hours", "approval_required",
    "qualification_required", "max_active_per_user", "cancellation_deadline_h", "batch_days",
)
INT_RULES = {"granularity_min": (1, 1440), "min_duration_min": (1, 60 * 24 * 366),
             "max_duration_min": (1, 60 * 24 * 366), "lead_time_min": (0, 60 * 24 * 366),
             "horizon_days": (1, 3660), "cancellation_deadline_h": (0, 24 * 366)}


def _validated(values: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    for name, value in values.items():
        if name not in EDITABLE_FIELDS:
            errors[name] = [N_("Unknown field.")]
            continue
        clean[name] = value
    for name in ("name_zh", "name_en"):
        if name in clean and not (isinstance(clean[name], str) and 0 < len(clean[name].strip()) <= 200):
            errors[name] = [N_("Enter a name of 1 to 200 characters.")]
    for name, limit in (("model", 200), ("manufacturer", 200), ("description_zh", 5000), ("description_en", 5000)):
        if name in clean and not (isinstance(clean[name], str) and len(clean[name]) <= limit):
            errors[name] = [Message(N_("At most %(limit)s characters."), limit=limit)]
    for name in ("voucher_eligible", "approval_required", "qualification_required"):
        if name in clean and not isinstance(clean[name], bool):
            errors[name] = [N_("Choose yes or no.")]
    if "original_value" in clean:
        try:
            value = Decimal(str(clean["original_value"]))
            if not value.is_finite() or value < 0 or value >= Decimal("1e12"):
                raise InvalidOperation
            clean["original_value"] = value
        except (InvalidOperation, ValueError):
            errors["original_value"] = [N_("Enter an amount in CNY, 0 or more.")]
    enums = {"kind": ResourceKind, "category": ServiceCategory, "operation_mode": OperationMode,
             "status": ResourceStatus}
    for name, enum_cls in enums.items():
        if name in clean and clean[name] not in {e.value for e in enum_cls}:
            errors[name] = [N_("Choose one of the listed values.")]
    for name, (low, high) in INT_RULES.items():
        if name in clean and not (isinstance(clean[name], int) and low <= clean[name] <= high):
            errors[name] = [N_("Enter a whole number in the allowed range.")]
    for name in ("max_active_per_user", "batch_days"):
        if clean.get(name) is not None and not (isinstance(clean[name], int) and 0 < clean[name] <= 1000):
            errors[name] = [N_("Leave empty or enter a whole number from 1 to 1000.")]
    if "bookable_hours" in clean:
        try:
            clean["bookable_hours"] = validate_hours(clean["bookable_hours"] or {})
        except (ValueError, AttributeError):
            errors["bookable_hours"] = [N_("Give hours per weekday as HH:MM-HH:MM.")]
    if "specs" in clean:
        specs = clean["specs"]
        if not isinstance(specs, list) or not all(
                isinstance(s, dict) and set(s) <= {"key_zh", "key_en", "value"} and str(s.get("value", "")).strip()
                for s in specs):
            errors["specs"] = [N_("Each specification needs a name and a value.")]
    if errors:
        raise InvalidInput(errors)
    return clean


REQUIRED_FIELDS = ("kind", "name_zh", "name_en", "original_value", "category", "operation_mode")


def build_resource(values: dict[str, Any]) -> Resource:
    """A new resource from `values`, validated and with its defaults, but in no session and on no facility:
    the caller attaches it (create_resource, one at a time; booking.imports, a whole file at once) or drops it.
    Raises InvalidInput with every field's problem."""
    errors = {name: [N_("This field is required.")] for name in REQUIRED_FIELDS if name not in values}
    try:
        clean = _validated(values)
    except InvalidInput as exc:
        errors = {**exc.fields, **errors}
    if errors:
        raise InvalidInput(errors)
    resource = Resource(**clean)  # attached to the facility only once valid: a refused one must not be flushed
    for column in Resource.__table__.columns:  # column defaults apply at INSERT; the rule checks below need them now
        if column.key not in clean and column.default is not None and column.default.is_scalar:
            setattr(resource, column.key, column.default.arg)
    if resource.kind == ResourceKind.PILOT_LINE and "granularity_min" not in clean:
        resource.granularity_min, resource.min_duration_min, resource.max_duration_min = 1440, 1440, 43200
    _check_rule_consistency(resource)
    resource.search_text = search_text_of(resource)
    return resource


def create_resource(db: Session, actor: User, facility_id: int, values: dict[str, Any]) -> Resource:
    facility = db.get(Facility, facility_id)
    if facility is None:
        raise NotFound("facility", facility_id)
    if not can_manage_facility(db, actor, facility_id):
        raise Forbidden()
    resource = build_resource(values)
    resource.facility = facility
    db.add(resource)
    db.flush()
    audit.record(db, actor, "resource.created", resource, facility_id=facility_id, name=resource.name_zh)
    return resource


def update_resource(db: Session, actor: User, resource_id: int, values: dict[str, Any]) -> Resource:
    resource = db.get(Resource, resource_id)
    if resource is None:
        raise NotFound("resource", resource_id)
    if not can_manage_facility(db, actor, resource.facility_id):
        raise Forbidden()
    clean = _validated(values)
    changed = {k: v for k, v in clean.items() if getattr(resource, k) != v}
    before = {k: getattr(resource, k) for k in changed}
    for name, value in changed.items():
        setattr(resource, name, value)
    try:
        _check_rule_consistency(resource)
    except InvalidInput:
        for name, value in before.items():  # leave nothing refused pending in the session
            setattr(resource, name, value)
        raise
    resource.search_text = search_text_of(resource)
    if changed:
        audit.record(db, actor, "resource.updated", resource, before=before, after=changed)
    return resource


def _check_rule_consistency(resource: Resource) -> None:
    if resource.min_duration_min > resource.max_duration_min:
        raise InvalidInput({"max_duration_min": [N_("The maximum length must not be below the minimum.")]})
    if resource.granularity_min not in (1440,) and 1440 % resource.granularity_min:
        raise InvalidInput({"granularity_min": [N_("The grid must divide a day evenly (e.g. 15, 30, 60).")]})


def get_resource(db: Session, resource_id: int) -> Resource:
    resource = db.get(Resource, resource_id)
    if resource is None:
        raise NotFound("resource", resource_id)
    return resource


