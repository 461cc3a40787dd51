"""Facility management by platform admins: creating and editing facilities and choosing their lab managers."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from booking.hours import validate_hours
from booking.models import Facility, FacilityManager
from booking.permissions import grant_facility_manager
from core import audit
from core.accounts.models import Organisation, Role, User
from core.errors import N_, Forbidden, InvalidInput, Message, NotFound
from core.regions import SICHUAN_CITIES
from core.timeutil import DEFAULT_TIMEZONE, zone

EDITABLE_FIELDS = ("name_zh", "name_en", "owner_id", "city", "address_zh", "address_en", "timezone", "opening_hours")
REQUIRED_FIELDS = ("name_zh", "name_en", "owner_id", "city")


def _require_admin(actor: User | None) -> None:
    if actor is None or not actor.has_role(Role.ADMIN):
        raise Forbidden()


def _validated(db: Session, values: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    for name, value in values.items():
        if name not in EDITABLE_FIELDS:
            errors[name] = [N_("Unknown field.")]
            continue
        clean[name] = value
    for name in ("name_zh", "name_en"):
        if name in clean:
            if isinstance(clean[name], str) and 0 < len(clean[name].strip()) <= 200:
                clean[name] = clean[name].strip()
            else:
                errors[name] = [N_("Enter a name of 1 to 200 characters.")]
    for name in ("address_zh", "address_en"):
        if name in clean:
            if isinstance(clean[name], str) and len(clean[name].strip()) <= 300:
                clean[name] = clean[name].strip()
            else:
                errors[name] = [Message(N_("At most %(limit)s characters."), limit=300)]
    if "owner_id" in clean:
        owner_id = clean["owner_id"]
        if isinstance(owner_id, bool) or not isinstance(owner_id, int) or db.get(Organisation, owner_id) is None:
            errors["owner_id"] = [N_("Choose a registered organisation.")]
    if "city" in clean and clean["city"] not in SICHUAN_CITIES:
        errors["city"] = [N_("Unknown city or prefecture.")]
    if "timezone" in clean:
        try:
            if not isinstance(clean["timezone"], str) or not clean["timezone"].strip():
                raise ValueError
            clean["timezone"] = clean["timezone"].strip()
            zone(clean["timezone"])
        except ValueError:
            errors["timezone"] = [N_("Choose a time zone such as Asia/Shanghai.")]
    if "opening_hours" in clean:
        try:
            hours = clean["opening_hours"]
            if hours is not None and not isinstance(hours, dict):
                raise ValueError
            clean["opening_hours"] = validate_hours(hours or {})
        except (ValueError, AttributeError, TypeError):
            errors["opening_hours"] = [N_("Give hours per weekday as HH:MM-HH:MM.")]
    if errors:
        raise InvalidInput(errors)
    return clean


def get_facility(db: Session, facility_id: int) -> Facility:
    facility = db.get(Facility, facility_id)
    if facility is None:
        raise NotFound("facility", facility_id)
    return facility


def create_facility(db: Session, actor: User, values: dict[str, Any]) -> Facility:
    _require_admin(actor)
    missing = [name for name in REQUIRED_FIELDS if values.get(name) in (None, "")]
    if missing:
        raise InvalidInput({name: [N_("This field is required.")] for name in missing})
    clean = _validated(db, values)
    clean.setdefault("timezone", DEFAULT_TIMEZONE)
    clean.setdefault("address_zh", "")
    clean.setdefault("address_en", "")
    clean.setdefault("opening_hours", {})
    facility = Facility(**clean)
    db.add(facility)
    db.flush()
    audit.record(db, actor, "facility.created", facility, name=facility.name_zh, owner_id=facility.owner_id)
    return facility


def update_facility(db: Session, actor: User, facility_id: int, values: dict[str, Any]) -> Facility:
    _require_admin(actor)
    facility = get_facility(db, facility_id)
    clean = _validated(db, values)
    changed = {k: v for k, v in clean.items() if getattr(facility, k) != v}
    before = {k: getattr(facility, k) for k in changed}
    for name, value in changed.items():
        setattr(facility, name, value)
    if "owner_id" in changed:
        db.expire(facility, ["owner"])  # the joined owner still names the old organisation
    if changed:
        audit.record(db, actor, "facility.updated", facility, before=before, after=changed)
    return facility


def assign_manager(db: Session, actor: User, facility_id: int, user: User) -> bool:
    """Make `user` a lab manager of the facility; False if they already were one."""
    _require_admin(actor)
    facility = get_facility(db, facility_id)
    granted = grant_facility_manager(db, actor, facility_id, user)
    db.flush()
    db.expire(facility, ["managers"])  # the link rows were written directly, not through the relationship
    return granted


def remove_manager(db: Session, actor: User, facility_id: int, user_id: int) -> bool:
    """Stop `user_id` managing the facility; False if they did not. Their lab_manager role stays: they may
    manage other facilities, and roles are granted and withdrawn on the users page."""
    _require_admin(actor)
    facility = get_facility(db, facility_id)
    link = db.get(FacilityManager, (facility_id, user_id))
    if link is None:
        return False
    db.delete(link)
    db.flush()
    db.expire(facility, ["managers"])
    audit.record(db, actor, "facility.manager_removed", db.get(User, user_id), facility_id=facility_id)
    return True
