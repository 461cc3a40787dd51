"""The home page: one dashboard whose sections fit the user's roles."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import func, select

from booking.models import Facility, Resource, ResourceKind, ResourceStatus
from booking.permissions import managed_facility_ids
from core.accounts.models import Organisation, OrganisationKind, Role, User, UserRole
from core.audit import AuditEntry
from web.database import get_db
from web.templating import category_name

bp = Blueprint("home", __name__)


@bp.get("/")
def index():
    if not current_user.is_authenticated:  # visitors start at the public catalog
        return redirect(url_for("booking.catalog_page"))
    db = get_db()
    user = current_user
    context: dict = {}
    active = Resource.status == ResourceStatus.ACTIVE
    context["resource_counts"] = dict(
        db.execute(select(Resource.kind, func.count()).where(active).group_by(Resource.kind)).all())
    context["by_category"] = db.execute(
        select(Resource.category, func.count()).where(active).group_by(Resource.category)
        .order_by(func.count().desc())).all()
    context["category_chart"] = {
        "tooltip": {"trigger": "item"},
        "legend": {"type": "scroll", "bottom": 0},
        "series": [{"type": "pie", "radius": ["35%", "65%"], "center": ["50%", "42%"],
                    "itemStyle": {"borderRadius": 6, "borderColor": "#fff", "borderWidth": 2},
                    "label": {"position": "inside", "formatter": "{c}", "color": "#fff", "fontWeight": "bold"},
                    "data": [{"name": category_name(c), "value": n} for c, n in context["by_category"]]}],
    }
    context["featured"] = db.scalars(
        select(Resource).where(active).order_by(Resource.original_value.desc()).limit(6)).all()
    if user.has_role(Role.LAB_MANAGER, Role.ADMIN):
        scope = managed_facility_ids(db, user)
        query = select(Facility, func.count(Resource.id)).outerjoin(Resource).group_by(Facility.id)
        if scope is not None:
            query = query.where(Facility.id.in_(scope))
        context["facilities"] = db.execute(query.order_by(Facility.id)).all()
    if user.has_role(Role.FINANCE, Role.ADMIN):
        context["org_counts"] = dict(
            db.execute(select(Organisation.kind, func.count()).group_by(Organisation.kind)).all())
        context["tech_smes"] = db.scalar(select(func.count()).where(
            Organisation.tech_sme, Organisation.kind == OrganisationKind.ENTERPRISE))
        context["pooled_value"] = db.scalar(select(func.sum(Resource.original_value)).where(active))
    if user.has_role(Role.ADMIN):
        context["users_by_role"] = dict(
            db.execute(select(UserRole.role, func.count()).group_by(UserRole.role)).all())
        context["user_count"] = db.scalar(select(func.count()).select_from(User))
        context["recent_audit"] = db.scalars(
            select(AuditEntry).order_by(AuditEntry.id.desc()).limit(8)).all()
    return render_template("home/dashboard.html", ResourceKind=ResourceKind, Role=Role, **context)
