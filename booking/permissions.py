"""Who may manage which facility: lab managers their own, admins all."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from booking.models import FacilityManager
from core import audit
from core.accounts.models import Role, User, UserRole
from core.errors import Forbidden


def managed_facility_ids(db: Session, user: User) -> set[int] | None:
    """The facilities a user manages; None means all of them (admins)."""
    if user.has_role(Role.ADMIN):
        return None
    if not user.has_role(Role.LAB_MANAGER):
        return set()
    return set(db.scalars(select(FacilityManager.facility_id).where(FacilityManager.user_id == user.id)))


def can_manage_facility(db: Session, user: User, facility_id: int) -> bool:
    scope = managed_facility_ids(db, user)
    return scope is None or facility_id in scope


def grant_facility_manager(db: Session, actor: User | None, facility_id: int, user: User) -> bool:
    """Make `user` a manager of the facility (giving them the lab_manager role); False if already one."""
    if actor is not None and not actor.has_role(Role.ADMIN):
        raise Forbidden()
    if db.get(FacilityManager, (facility_id, user.id)) is not None:
        return False
    if not user.has_role(Role.LAB_MANAGER):
        user.role_grants.append(UserRole(role=Role.LAB_MANAGER))
    db.add(FacilityManager(facility_id=facility_id, user_id=user.id))
    audit.record(db, actor, "facility.manager_granted", user, facility_id=facility_id)
    return True
