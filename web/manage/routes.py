"""Lab managers' view of the facilities they run (admins see all)."""

from __future__ import annotations

from flask import Blueprint, abort, render_template
from flask_login import current_user
from sqlalchemy import func, select

from booking.models import Facility, Resource
from booking.permissions import can_manage_facility, managed_facility_ids
from core.accounts.models import Role
from web.authz import roles_required
from web.database import get_db

bp = Blueprint("manage", __name__, url_prefix="/manage")


@bp.get("/facilities")
@roles_required(Role.LAB_MANAGER, Role.ADMIN)
def facilities():
    db = get_db()
    scope = managed_facility_ids(db, current_user)
    query = select(Facility, func.count(Resource.id)).outerjoin(Resource).group_by(Facility.id).order_by(Facility.id)
    if scope is not None:
        query = query.where(Facility.id.in_(scope))
    return render_template("manage/facilities.html", rows=db.execute(query).all())


@bp.get("/facilities/<int:facility_id>")
@roles_required(Role.LAB_MANAGER, Role.ADMIN)
def facility(facility_id: int):
    db = get_db()
    facility = db.get(Facility, facility_id)
    if facility is None:
        abort(404)
    if not can_manage_facility(db, current_user, facility_id):
        abort(403)
    resources = db.scalars(select(Resource).where(Resource.facility_id == facility_id)
                           .order_by(Resource.kind, Resource.id)).all()
    return render_template("manage/facility.html", facility=facility, resources=resources)
