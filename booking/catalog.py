"""The catalog: search (free text, filters, time-first) and resource editing by lab managers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Select, exists, func, select
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


def _filtered(query: CatalogQuery) -> Select:
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
            ~exists().where(Reservation.resource_id == Resource.id, Reservation.state.in_(LIVE_STATES),
                            Reservation.starts_at < end, Reservation.ends_at > start),
            ~exists().where(Blackout.resource_id == Resource.id, Blackout.starts_at < end, Blackout.ends_at > start),
        )
    return stmt


def search(db: Session, query: CatalogQuery, *, now: datetime | None = None) -> dict[str, Any]:
    """A page of resources and the total. With free_from/free_to, only resources bookable in that window:
    nothing booked or blacked out there (in SQL), and the window fits their hours and length rules."""
    stmt = _filtered(query).order_by(*SORTS.get(query.sort, SORTS["name"]))
    offset = (query.page - 1) * query.per_page
    if not (query.free_from and query.free_to):
        total = db.scalar(select(func.count()).select_from(_filtered(query).subquery()))
        items = db.scalars(stmt.limit(query.per_page).offset(offset)).unique().all()
        return {"items": list(items), "total": total, "page": query.page, "per_page": query.per_page}
    start, end = as_utc(query.free_from), as_utc(query.free_to)
    hard_rules = {"outside_bookable_hours", "too_short", "too_long", "granularity", "whole_days", "batch_length"}
    from core.timeutil import utcnow

    reference = now or utcnow()
    # The rules are checked in Python for every candidate, on the few columns they need: loading each of ~1,000
    # candidates whole (specs, texts, facility) cost most of the time. Only the page is loaded as resources.
    rule_columns = stmt.with_only_columns(
        Resource.id, Resource.kind, Resource.bookable_hours, Resource.granularity_min, Resource.min_duration_min,
        Resource.max_duration_min, Resource.lead_time_min, Resource.horizon_days, Resource.batch_days,
        Facility.opening_hours, Facility.timezone)
    matching = [row.id for row in db.execute(rule_columns)
                if not any(v["code"] in hard_rules for v in window_violations(Rules.of(row, row), start, end,
                                                                               reference))]
    page_ids = matching[offset:offset + query.per_page]
    loaded = {r.id: r for r in db.scalars(select(Resource).where(Resource.id.in_(page_ids))).unique()}
    return {"items": [loaded[i] for i in page_ids], "total": len(matching), "page": query.page,
            "per_page": query.per_page}


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


def create_resource(db: Session, actor: User, facility_id: int, values: dict[str, Any]) -> Resource:
    facility = db.get(Facility, facility_id)
    if facility is None:
        raise NotFound("facility", facility_id)
    if not can_manage_facility(db, actor, facility_id):
        raise Forbidden()
    required = {"kind", "name_zh", "name_en", "original_value", "category", "operation_mode"}
    missing = required - set(values)
    if missing:
        raise InvalidInput({name: [N_("This field is required.")] for name in sorted(missing)})
    clean = _validated(values)
    resource = Resource(**clean)  # attached to the facility only once valid: a refused one must not be flushed
    for column in Resource.__table__.columns:  # column defaults apply at INSERT; the rule checks below need them now
        if column.key not in clean and column.default is not None and column.default.is_scalar:
            setattr(resource, column.key, column.default.arg)
    if resource.kind == ResourceKind.PILOT_LINE and "granularity_min" not in clean:
        resource.granularity_min, resource.min_duration_min, resource.max_duration_min = 1440, 1440, 43200
    _check_rule_consistency(resource)
    resource.search_text = search_text_of(resource)
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


