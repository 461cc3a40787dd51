"""Qualifications: lab managers allow a user to operate a resource alone, possibly until a date."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from booking.models import Qualification, Resource
from booking.permissions import can_manage_facility
from core import audit
from core.accounts.models import User
from core.errors import N_, Forbidden, InvalidInput, NotFound
from core.timeutil import as_utc, utcnow


def grant_qualification(db: Session, actor: User, user_id: int, resource_id: int,
                        expires_at: datetime | None = None, *, now: datetime | None = None) -> Qualification:
    resource = db.get(Resource, resource_id)
    if resource is None:
        raise NotFound("resource", resource_id)
    if not can_manage_facility(db, actor, resource.facility_id):
        raise Forbidden()
    user = db.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    now = now or utcnow()
    if expires_at is not None and as_utc(expires_at) <= now:
        raise InvalidInput({"expires_at": [N_("The expiry must be in the future.")]})
    qualification = db.scalar(select(Qualification).where(
        Qualification.user_id == user_id, Qualification.resource_id == resource_id))
    if qualification is None:
        qualification = Qualification(user_id=user_id, resource_id=resource_id)
        db.add(qualification)
    qualification.granted_by_id, qualification.granted_at = actor.id, now
    qualification.expires_at = as_utc(expires_at) if expires_at else None
    qualification.revoked_at = None
    db.flush()
    audit.record(db, actor, "qualification.granted", qualification, user_id=user_id, resource_id=resource_id,
                 expires_at=qualification.expires_at.isoformat() if qualification.expires_at else None)
    return qualification


def revoke_qualification(db: Session, actor: User, qualification_id: int, *,
                         now: datetime | None = None) -> Qualification:
    qualification = db.get(Qualification, qualification_id)
    if qualification is None:
        raise NotFound("qualification", qualification_id)
    if not can_manage_facility(db, actor, qualification.resource.facility_id):
        raise Forbidden()
    if qualification.revoked_at is None:
        qualification.revoked_at = now or utcnow()
        audit.record(db, actor, "qualification.revoked", qualification, user_id=qualification.user_id,
                     resource_id=qualification.resource_id)
    return qualification


def qualifications_for_resource(db: Session, resource_id: int) -> list[Qualification]:
    return list(db.scalars(select(Qualification).where(Qualification.resource_id == resource_id)
                           .order_by(Qualification.granted_at.desc())))
