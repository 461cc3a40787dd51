"""Lab managers' booking pages (admins: every facility): the approvals queue with sample requests, the
facility calendar, and each resource's settings, blackouts, qualifications and calendar feed."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from booking import blackouts, catalog, feeds, qualifications, reservations, samples
from booking.categories import CATEGORY_NAMES
from booking.errors import InvalidTransition, ReservationConflict, RuleViolation
from booking.models import (
    Blackout,
    CalendarFeed,
    Facility,
    OperationMode,
    Resource,
    ResourceKind,
    ResourceStatus,
    SampleRequest,
)
from booking.models import ReservationState as State
from booking.permissions import can_manage_facility
from core.accounts.models import Role, User
from core.accounts.services import normalise_email
from core.errors import InvalidInput
from core.timeutil import utcnow
from web.authz import roles_required
from web.booking import calendar_view, texts
from web.booking.forms import BlackoutForm, DecisionForm, QualificationForm, ResourceForm, ScheduleForm, choices
from web.database import get_db
from web.forms import apply_field_errors, safe_next
from web.i18n import error_text, violation_text
from web.templating import category_name, current_locale

bp = Blueprint("booking_manage", __name__, url_prefix="/manage")

MANAGERS = (Role.LAB_MANAGER, Role.ADMIN)
CLOSED_STATES = (State.PENDING, State.CONFIRMED, State.COMPLETED, State.NO_SHOW)


def _managed_facility(facility_id: int) -> Facility:
    db = get_db()
    facility = db.get(Facility, facility_id)
    if facility is None:
        abort(404)
    if not can_manage_facility(db, current_user, facility_id):
        abort(403)
    return facility


def _managed_resource(resource_id: int) -> Resource:
    db = get_db()
    resource = db.get(Resource, resource_id)
    if resource is None:
        abort(404)
    if not can_manage_facility(db, current_user, resource.facility_id):
        abort(403)
    return resource


# --- approvals ----------------------------------------------------------------------------------------------------

def _render_approvals(schedule_forms: dict[int, ScheduleForm] | None = None, status: int = 200):
    db = get_db()
    pending = reservations.pending_for_manager(db, current_user)
    open_requests = samples.open_sample_requests(db, current_user)
    forms = {sr.id: ScheduleForm(prefix=f"s{sr.id}", formdata=None) for sr in open_requests}
    forms.update(schedule_forms or {})
    return render_template("manage/approvals.html", pending=pending, sample_requests=open_requests,
                           schedule_forms=forms, decision_form=DecisionForm(formdata=None)), status


@bp.get("/approvals")
@roles_required(*MANAGERS)
def approvals():
    return _render_approvals()


def _decide(reservation_id: int, action, done: str):
    db = get_db()
    form = DecisionForm()
    target = safe_next(form.next.data, url_for(".approvals"))
    if not form.validate_on_submit():
        flash(_("The note is too long (at most 500 characters)."), "danger")
        return redirect(target)
    try:
        action(db, current_user, reservation_id, form.note.data or "")
    except (InvalidTransition, RuleViolation) as exc:
        db.rollback()
        flash(error_text(exc), "danger")
        return redirect(target)
    db.commit()
    flash(done, "success")
    return redirect(target)


@bp.post("/reservations/<int:reservation_id>/approve")
@roles_required(*MANAGERS)
def approve(reservation_id: int):
    return _decide(reservation_id, reservations.approve_reservation, _("The booking is approved."))


@bp.post("/reservations/<int:reservation_id>/reject")
@roles_required(*MANAGERS)
def reject(reservation_id: int):
    return _decide(reservation_id, reservations.reject_reservation, _("The booking is rejected."))


@bp.post("/reservations/<int:reservation_id>/complete")
@roles_required(*MANAGERS)
def complete(reservation_id: int):
    return _decide(reservation_id, lambda db, actor, rid, _note: reservations.close_reservation(
        db, actor, rid, no_show=False), _("The booking is marked as completed."))


@bp.post("/reservations/<int:reservation_id>/no-show")
@roles_required(*MANAGERS)
def no_show(reservation_id: int):
    return _decide(reservation_id, lambda db, actor, rid, _note: reservations.close_reservation(
        db, actor, rid, no_show=True), _("The booking is marked as a no-show."))


def _managed_sample_request(request_id: int) -> SampleRequest:
    db = get_db()
    sample_request = db.get(SampleRequest, request_id)
    if sample_request is None:
        abort(404)
    if not can_manage_facility(db, current_user, sample_request.resource.facility_id):
        abort(403)
    return sample_request


@bp.post("/sample-requests/<int:request_id>/schedule")
@roles_required(*MANAGERS)
def schedule_samples(request_id: int):
    db = get_db()
    sample_request = _managed_sample_request(request_id)
    form = ScheduleForm(prefix=f"s{request_id}")
    if not form.validate_on_submit():
        return _render_approvals({request_id: form}, 422)
    tz = ZoneInfo(sample_request.resource.facility.timezone)
    try:
        samples.schedule_sample_request(db, current_user, request_id, *form.window(tz))
    except RuleViolation as exc:
        db.rollback()
        form.form_errors.extend(violation_text(v) for v in exc.details.get("violations", []))
        return _render_approvals({request_id: form}, 422)
    except (ReservationConflict, InvalidTransition) as exc:
        db.rollback()
        form.form_errors.append(error_text(exc))
        return _render_approvals({request_id: form}, 409)
    db.commit()
    flash(_("The samples are scheduled; the user has been told."), "success")
    return redirect(url_for(".approvals"))


@bp.post("/sample-requests/<int:request_id>/reject")
@roles_required(*MANAGERS)
def reject_samples(request_id: int):
    db = get_db()
    _managed_sample_request(request_id)
    form = DecisionForm()
    if not form.validate_on_submit():
        flash(_("The note is too long (at most 500 characters)."), "danger")
        return redirect(url_for(".approvals"))
    try:
        samples.reject_sample_request(db, current_user, request_id, form.note.data or "")
    except InvalidTransition as exc:
        db.rollback()
        flash(error_text(exc), "danger")
        return redirect(url_for(".approvals"))
    db.commit()
    flash(_("The sample request is rejected."), "success")
    return redirect(url_for(".approvals"))


# --- facility calendar ------------------------------------------------------------------------------------------------

@bp.get("/facilities/<int:facility_id>/calendar")
@roles_required(*MANAGERS)
def facility_calendar(facility_id: int):
    db, now = get_db(), utcnow()
    facility = _managed_facility(facility_id)
    tz = ZoneInfo(facility.timezone)
    try:
        day = date.fromisoformat(request.args.get("date", ""))
    except ValueError:
        day = now.astimezone(tz).date()
    view = "week" if request.args.get("view") == "week" else "day"
    if view == "week":
        day -= timedelta(days=day.weekday())
    resources = list(db.scalars(select(Resource).where(Resource.facility_id == facility_id,
                                                       Resource.status == ResourceStatus.ACTIVE)
                                .order_by(Resource.kind, Resource.id)))
    window = calendar_view.facility_window(resources, day, view, tz)
    schedule = calendar_view.schedule_of(db, resources, *window)
    cal = calendar_view.facility_view(resources, schedule, day, view, tz, now, window,
                                      [str(d) for d in texts.SHORT_WEEKDAYS])
    listed = reservations.reservations_overlapping(db, [r.id for r in resources], *window, states=CLOSED_STATES)
    return render_template("manage/facility_calendar.html", facility=facility, cal=cal, listed=listed, now=now,
                           decision_form=DecisionForm(formdata=None))


# --- resources ----------------------------------------------------------------------------------------------------

def _resource_form(**kwargs) -> ResourceForm:
    form = ResourceForm(**kwargs)
    form.category.choices = choices(*((c.value, category_name(c.value)) for c in CATEGORY_NAMES))
    return form


def _feed_of(resource: Resource) -> CalendarFeed | None:
    return get_db().scalar(select(CalendarFeed).where(CalendarFeed.resource_id == resource.id))


@bp.route("/facilities/<int:facility_id>/resources/new", methods=["GET", "POST"])
@roles_required(*MANAGERS)
def new_resource(facility_id: int):
    db = get_db()
    facility = _managed_facility(facility_id)
    form = _resource_form()
    status = 200
    if request.method == "GET":
        pilot = request.args.get("kind") == ResourceKind.PILOT_LINE
        form.fill_from(SimpleNamespace(
            kind=ResourceKind.PILOT_LINE if pilot else ResourceKind.INSTRUMENT, name_zh="", name_en="",
            description_zh="", description_en="", model="", manufacturer="", original_value=None, category=None,
            operation_mode=OperationMode.TECHNICIAN if pilot else OperationMode.BOTH, voucher_eligible=True,
            status=ResourceStatus.ACTIVE, specs=[], granularity_min=1440 if pilot else 30,
            min_duration_min=1440 if pilot else 30, max_duration_min=43200 if pilot else 480,
            lead_time_min=0 if pilot else 60, horizon_days=365 if pilot else 90,
            cancellation_deadline_h=72 if pilot else 24, max_active_per_user=None, batch_days=None,
            bookable_hours={}, approval_required=pilot, qualification_required=False))
    elif form.validate_on_submit():
        try:
            resource = catalog.create_resource(db, current_user, facility_id, form.values())
        except InvalidInput as exc:
            db.rollback()
            apply_field_errors(form, exc)
            status = 422
        else:
            db.commit()
            flash(_("The resource “%(name)s” has been added.", name=resource.name(current_locale())), "success")
            return redirect(url_for(".edit_resource", resource_id=resource.id))
    else:
        status = 422
    return render_template("manage/resource_form.html", form=form, facility=facility, resource=None), status


@bp.route("/resources/<int:resource_id>/edit", methods=["GET", "POST"])
@roles_required(*MANAGERS)
def edit_resource(resource_id: int):
    db = get_db()
    resource = _managed_resource(resource_id)
    form = _resource_form()
    status = 200
    if request.method == "GET":
        form.fill_from(resource)
    elif form.validate_on_submit():
        try:
            catalog.update_resource(db, current_user, resource_id, form.values())
            db.flush()
        except InvalidInput as exc:
            db.rollback()
            apply_field_errors(form, exc)
            status = 422
        else:
            db.commit()
            flash(_("The changes have been saved."), "success")
            return redirect(url_for(".edit_resource", resource_id=resource_id))
    else:
        status = 422
    return render_template("manage/resource_form.html", form=form, facility=resource.facility, resource=resource,
                           feed=_feed_of(resource)), status


@bp.post("/resources/<int:resource_id>/feed")
@roles_required(*MANAGERS)
def regenerate_resource_feed(resource_id: int):
    db = get_db()
    resource = _managed_resource(resource_id)
    secret = feeds.regenerate_feed(db, current_user, resource_id=resource_id)
    db.commit()
    url = url_for("calendar.feed", secret=secret, _external=True)
    regenerate_url = url_for(".regenerate_resource_feed", resource_id=resource_id)
    if request.headers.get("HX-Request"):
        return render_template("booking/_feed.html", feed_url=url, feed=True, regenerate_url=regenerate_url)
    form = _resource_form()
    form.fill_from(resource)
    return render_template("manage/resource_form.html", form=form, facility=resource.facility, resource=resource,
                           feed=_feed_of(resource), feed_url=url)


# --- blackouts ----------------------------------------------------------------------------------------------------

def _render_blackouts(resource: Resource, form: BlackoutForm, status: int = 200, clashes=None):
    db, now = get_db(), utcnow()
    rows = db.scalars(select(Blackout).where(Blackout.resource_id == resource.id, Blackout.ends_at > now
                                             - timedelta(days=30)).order_by(Blackout.starts_at)).all()
    return render_template("manage/blackouts.html", resource=resource, form=form, blackouts=rows, now=now,
                           clashes=clashes or []), status


@bp.route("/resources/<int:resource_id>/blackouts", methods=["GET", "POST"])
@roles_required(*MANAGERS)
def resource_blackouts(resource_id: int):
    db = get_db()
    resource = _managed_resource(resource_id)
    form = BlackoutForm()
    if request.method == "GET":
        return _render_blackouts(resource, form)
    if not form.validate_on_submit():
        return _render_blackouts(resource, form, 422)
    tz = ZoneInfo(resource.facility.timezone)
    try:
        blackouts.create_blackout(db, current_user, resource_id, form.starts_at.data.replace(tzinfo=tz),
                                  form.ends_at.data.replace(tzinfo=tz), form.kind.data, form.reason.data or "",
                                  cancel_conflicting=form.cancel_conflicting.data)
    except InvalidInput as exc:
        db.rollback()
        apply_field_errors(form, exc)
        return _render_blackouts(resource, form, 422)
    except RuleViolation as exc:
        db.rollback()
        form.form_errors.append(error_text(exc))
        return _render_blackouts(resource, form, 422)
    except ReservationConflict as exc:
        db.rollback()
        form.form_errors.append(error_text(exc))
        found = [reservations.get_reservation(db, c["id"]) for c in exc.details.get("clashes", [])]
        return _render_blackouts(resource, form, 409, clashes=found)
    db.commit()
    flash(_("The blackout has been added."), "success")
    return redirect(url_for(".resource_blackouts", resource_id=resource_id))


@bp.post("/blackouts/<int:blackout_id>/delete")
@roles_required(*MANAGERS)
def delete_blackout(blackout_id: int):
    db = get_db()
    blackout = db.get(Blackout, blackout_id)
    if blackout is None:
        abort(404)
    resource_id = blackout.resource_id
    _managed_resource(resource_id)
    form = DecisionForm()
    if not form.validate_on_submit():
        abort(400)
    blackouts.delete_blackout(db, current_user, blackout_id)
    db.commit()
    flash(_("The blackout has been removed."), "success")
    return redirect(url_for(".resource_blackouts", resource_id=resource_id))


# --- qualifications ---------------------------------------------------------------------------------------------

def _render_qualifications(resource: Resource, form: QualificationForm, status: int = 200):
    rows = qualifications.qualifications_for_resource(get_db(), resource.id)
    return render_template("manage/qualifications.html", resource=resource, form=form, rows=rows,
                           now=utcnow()), status


@bp.route("/resources/<int:resource_id>/qualifications", methods=["GET", "POST"])
@roles_required(*MANAGERS)
def resource_qualifications(resource_id: int):
    db = get_db()
    resource = _managed_resource(resource_id)
    form = QualificationForm()
    if request.method == "GET":
        return _render_qualifications(resource, form)
    if not form.validate_on_submit():
        return _render_qualifications(resource, form, 422)
    user = db.scalar(select(User).where(User.email == normalise_email(form.email.data)))
    if user is None:
        form.email.errors.append(_("No user has this e-mail address."))
        return _render_qualifications(resource, form, 422)
    tz = ZoneInfo(resource.facility.timezone)
    expires = (datetime.combine(form.expires_at.data + timedelta(days=1), time(0), tzinfo=tz)
               if form.expires_at.data else None)  # valid through the whole day given
    try:
        qualifications.grant_qualification(db, current_user, user.id, resource_id, expires)
    except InvalidInput as exc:
        db.rollback()
        apply_field_errors(form, exc)
        return _render_qualifications(resource, form, 422)
    db.commit()
    flash(_("%(user)s may now operate %(resource)s alone.", user=user.name(current_locale()),
            resource=resource.name(current_locale())), "success")
    return redirect(url_for(".resource_qualifications", resource_id=resource_id))


@bp.post("/qualifications/<int:qualification_id>/revoke")
@roles_required(*MANAGERS)
def revoke_qualification(qualification_id: int):
    db = get_db()
    form = DecisionForm()
    if not form.validate_on_submit():
        abort(400)
    qualification = qualifications.revoke_qualification(db, current_user, qualification_id)
    db.commit()
    flash(_("The qualification is revoked."), "success")
    return redirect(url_for(".resource_qualifications", resource_id=qualification.resource_id))
