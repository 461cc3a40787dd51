"""Pages for everyone who books: the catalog, a resource's page (calendar, booking form with live preview,
repeats, waitlist, sample requests), my reservations and one reservation. URL → service call → template."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select

from booking import catalog, feeds, reservations, samples, waitlist
from booking.categories import CATEGORY_NAMES
from booking.errors import InvalidTransition, ReservationConflict, RuleViolation
from booking.models import (
    CalendarFeed,
    Facility,
    Qualification,
    Reservation,
    ReservationState,
    ResourcePhoto,
    SampleRequest,
)
from booking.permissions import can_manage_facility
from booking.photos import photo_path
from booking.reservations import BookingRequest
from core.errors import DomainError, InvalidInput
from core.regions import SICHUAN_CITIES
from core.timeutil import utcnow
from web.booking import calendar_view, texts
from web.booking.forms import (
    BookingForm,
    CancelForm,
    CatalogForm,
    DecisionForm,
    ModifyForm,
    SampleRequestForm,
    choices,
)
from web.booking.prices import price_list
from web.database import get_db
from web.forms import apply_field_errors, safe_next
from web.i18n import error_text, violation_text
from web.photos import photo_dir
from web.templating import category_name, current_locale

bp = Blueprint("booking", __name__)

PER_PAGE = 12


@bp.record_once
def _register_template_helpers(state) -> None:
    texts.init_app(state.app)


def _now() -> datetime:
    return utcnow()


def _settings_tz() -> ZoneInfo:
    return ZoneInfo(current_app.config["LABSHARE_SETTINGS"].timezone)


# --- catalog ----------------------------------------------------------------------------------------------------

def _catalog_choices(db, form: CatalogForm) -> None:
    form.category.choices = choices(("", _("All categories")),
                                    *((c.value, category_name(c.value)) for c in CATEGORY_NAMES))
    facilities = db.scalars(select(Facility).order_by(Facility.id)).all()
    cities = sorted({f.city for f in facilities})
    form.city.choices = choices(("", _("All cities")), *(
        (code, SICHUAN_CITIES.get(code, (code, code))[1 if current_locale() == "en" else 0]) for code in cities))
    form.facility.choices = choices(("", _("All facilities")), *((str(f.id), f.name(current_locale()))
                                                                  for f in facilities))


def _choice(field) -> str | None:
    """A select's value if it is one of its choices (a hand-made URL may say anything)."""
    return field.data if field.data and field.data in {choice.value for choice in field.choices} else None


@bp.get("/resources")
def catalog_page():
    """Public: anyone may browse and search, signed in or not."""
    db = get_db()
    form = CatalogForm(formdata=request.args)
    _catalog_choices(db, form)
    form.validate()
    window = form.window(_settings_tz())
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    facility = _choice(form.facility)
    voucher = {"1": True, "0": False}.get(form.voucher.data or "")
    query = catalog.CatalogQuery(
        q=(form.q.data or "").strip()[:100], category=_choice(form.category), kind=_choice(form.kind),
        city=_choice(form.city), facility_id=int(facility) if facility else None, operation_mode=_choice(form.mode),
        voucher_eligible=voucher, free_from=window[0] if window else None, free_to=window[1] if window else None,
        sort=_choice(form.sort) or "name", page=page, per_page=PER_PAGE)
    result = catalog.search(db, query)
    pages = max(math.ceil(result["total"] / PER_PAGE), 1)
    args = {k: v for k, v in request.args.items() if k != "page" and v}
    prefill = ({"date": form.date.data.isoformat(), "time_from": f"{form.time_from.data:%H:%M}",
                "time_to": f"{form.time_to.data:%H:%M}"} if window else {})
    return render_template("booking/catalog.html", form=form, result=result, pages=pages, page=page, args=args,
                           window=window, prefill=prefill, filtered=bool(args))


# --- resource page ------------------------------------------------------------------------------------------------

def _parse_day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _calendar(resource, view: str | None, start: date | None, now: datetime) -> dict:
    tz = ZoneInfo(resource.facility.timezone)
    view = view if view in ("week", "month") else ("month" if resource.books_whole_days else "week")
    day = start or now.astimezone(tz).date()
    db = get_db()
    # Signed-in users see their own bookings marked; everybody else's are free/busy only (the template shows
    # names to the facility's managers alone). Anonymous visitors see free/busy only.
    signed_in = current_user.is_authenticated
    mine = ({r.id for r in reservations.reservations_of(db, current_user, upcoming_only=True, now=now)}
            if signed_in else set())
    if view == "month":
        first = day.replace(day=1)
        grid_start, grid_end = calendar_view.month_grid(first)
        schedule = calendar_view.schedule_of(db, [resource], calendar_view.local_day_start(grid_start, tz),
                                             calendar_view.local_day_start(grid_end, tz))
        cal = calendar_view.month_view(resource, schedule, first, now)
    else:
        monday = day - timedelta(days=day.weekday())
        schedule = calendar_view.schedule_of(db, [resource], calendar_view.local_day_start(monday, tz),
                                             calendar_view.local_day_start(monday + timedelta(days=7), tz))
        cal = calendar_view.week_view(resource, schedule, monday, now, mine=mine)
    return {"view": view, "cal": cal, "today": now.astimezone(tz).date(),
            "is_manager": signed_in and can_manage_facility(db, current_user, resource.facility_id)}


def _render_resource(resource, form: BookingForm, sample_form: SampleRequestForm, *, status: int = 200,
                     preview: dict | None = None, calendar_start: date | None = None):
    db, now = get_db(), _now()
    qualification = db.scalar(select(Qualification).where(Qualification.user_id == current_user.id,
                                                          Qualification.resource_id == resource.id)) \
        if current_user.is_authenticated else None
    context = _calendar(resource, request.args.get("view"),
                        _parse_day(request.args.get("start")) or calendar_start or form.date.data, now)
    return render_template(
        "booking/resource.html", resource=resource, form=form, sample_form=sample_form, preview=preview,
        rules=texts.rule_lines(resource), hours=texts.hours_table(resource),
        operation_note=texts.operation_note(resource), prices=price_list(db, resource, now),
        qualification=qualification if qualification and qualification.valid_at(now) else None, **context), status


@bp.get("/resources/<int:resource_id>")
def resource_page(resource_id: int):
    """Public: description, rules, prices and free/busy; the booking forms only for signed-in users."""
    resource = catalog.get_resource(get_db(), resource_id)
    prefill = {k: request.args[k] for k in ("date", "time_from", "time_to") if request.args.get(k)}
    form = BookingForm(formdata=request.args) if prefill else BookingForm(formdata=None)
    return _render_resource(resource, form, SampleRequestForm(prefix="sr", formdata=None))


@bp.get("/resources/<int:resource_id>/calendar")
def resource_calendar(resource_id: int):
    """The calendar partial (htmx swaps it when paging weeks or months)."""
    resource = catalog.get_resource(get_db(), resource_id)
    context = _calendar(resource, request.args.get("view"), _parse_day(request.args.get("start")), _now())
    return render_template("booking/_calendar.html", resource=resource, **context)


@bp.get("/resources/<int:resource_id>/photos/<int:photo_id>")
def resource_photo(resource_id: int, photo_id: int):
    """A resource's photo, public like the page that shows it."""
    photo = get_db().get(ResourcePhoto, photo_id)
    if photo is None or photo.resource_id != resource_id:
        abort(404)
    path = photo_path(photo_dir(), photo)
    if not path.is_file():
        abort(404)
    return send_file(path, mimetype=photo.content_type, max_age=86400)


def _request_of(resource, form: BookingForm, window) -> BookingRequest:
    return BookingRequest(resource.id, window[0], window[1], form.purpose.data or "", form.sample_count.data)


def _preview(resource, form: BookingForm, window) -> dict:
    """What the service would object to: one window, or every occurrence of a repeat."""
    db = get_db()
    req = _request_of(resource, form, window)
    if form.repeat_frequency:
        planned = reservations.preview_series(db, current_user, req, form.repeat_frequency,
                                              form.occurrences.data or 2)
        return {"window": window, "occurrences": planned, "blocked": sum(1 for _o, p in planned if p)}
    return {"window": window, "problems": reservations.preview(db, current_user, req)}


@bp.post("/resources/<int:resource_id>/preview")
@login_required
def booking_preview(resource_id: int):
    """The live check under the booking form (htmx, on every change): rules broken and clashes."""
    resource = catalog.get_resource(get_db(), resource_id)
    form = BookingForm()
    window = form.window(resource)
    context: dict = {"resource": resource, "form": form, "preview": None,
                     "is_manager": can_manage_facility(get_db(), current_user, resource.facility_id)}
    if window is not None:
        try:
            context["preview"] = _preview(resource, form, window)
        except InvalidInput as exc:
            apply_field_errors(form, exc)
        except DomainError as exc:
            context["error"] = error_text(exc)
    return render_template("booking/_preview.html", **context)


def _nothing_bookable(resource, skipped) -> DomainError:
    """Why a repeat that skips conflicts still booked nothing: the clashes, else the first broken rule."""
    found = [clash for _occurrence, problems in skipped for clash in problems.clashes]
    if found:
        return reservations.conflict_error(found, resource.facility.timezone)
    first = skipped[0][1].violations[0]
    return RuleViolation(first["code"], skipped[0][1].violations, **{k: v for k, v in first.items() if k != "code"})


@bp.post("/resources/<int:resource_id>/book")
@login_required
def book(resource_id: int):
    db = get_db()
    resource = catalog.get_resource(db, resource_id)
    form = BookingForm()
    sample_form = SampleRequestForm(prefix="sr", formdata=None)
    window = form.window(resource)
    if window is None:
        return _render_resource(resource, form, sample_form, status=422)
    req = _request_of(resource, form, window)
    try:
        if form.repeat_frequency:
            outcome = reservations.create_series(db, current_user, req, form.repeat_frequency,
                                                 form.occurrences.data or 2,
                                                 skip_conflicts=form.conflicts.data == "skip")
            if not outcome.created:
                raise _nothing_bookable(resource, outcome.skipped)
        else:
            reservation = reservations.create_reservation(db, current_user, req)
    except InvalidInput as exc:
        db.rollback()
        apply_field_errors(form, exc)
        return _render_resource(resource, form, sample_form, status=422)
    except (RuleViolation, ReservationConflict) as exc:
        db.rollback()
        form.form_errors.append(error_text(exc))
        return _render_resource(resource, form, sample_form, preview=_preview(resource, form, window),
                                status=409 if isinstance(exc, ReservationConflict) else 422)
    db.commit()
    name = resource.name(current_locale())
    if form.repeat_frequency:
        pending = any(r.state == ReservationState.PENDING for r in outcome.created)
        flash(_("%(n)s bookings of %(resource)s made, %(skipped)s times skipped.", n=len(outcome.created),
                resource=name, skipped=len(outcome.skipped)) + " "
              + (_("They wait for a lab manager's approval.") if pending else _("They are confirmed.")), "success")
    elif reservation.state == ReservationState.PENDING:
        flash(_("Your booking of %(resource)s on %(when)s is waiting for a lab manager's approval.",
                resource=name, when=texts.window_text(reservation)), "info")
    else:
        flash(_("Booked: %(resource)s on %(when)s. It is confirmed.", resource=name,
                when=texts.window_text(reservation)), "success")
    return redirect(url_for(".my_reservations"))


@bp.post("/resources/<int:resource_id>/waitlist")
@login_required
def join_waitlist(resource_id: int):
    db = get_db()
    resource = catalog.get_resource(db, resource_id)
    form = BookingForm()
    window = form.window(resource)
    if window is None:
        return _render_resource(resource, form, SampleRequestForm(prefix="sr", formdata=None), status=422)
    try:
        waitlist.join_waitlist(db, current_user, resource.id, *window)
    except (DomainError, ValueError) as exc:
        db.rollback()
        flash(error_text(exc) if isinstance(exc, DomainError) else str(exc), "warning")
        return redirect(url_for(".resource_page", resource_id=resource.id, date=form.date.data.isoformat()))
    db.commit()
    flash(_("You are on the waitlist for %(resource)s. We will e-mail you if the time frees up.",
            resource=resource.name(current_locale())), "success")
    return redirect(url_for(".my_reservations", _anchor="waitlist"))


@bp.post("/resources/<int:resource_id>/sample-requests")
@login_required
def request_samples(resource_id: int):
    db = get_db()
    resource = catalog.get_resource(db, resource_id)
    form = BookingForm(formdata=None)
    sample_form = SampleRequestForm(prefix="sr")
    if not sample_form.validate_on_submit():
        return _render_resource(resource, form, sample_form, status=422)
    try:
        samples.create_sample_request(db, current_user, resource.id, sample_count=sample_form.sample_count.data,
                                      description=sample_form.description.data or "",
                                      hazards=sample_form.hazards.data or "")
    except InvalidInput as exc:
        db.rollback()
        apply_field_errors(sample_form, exc)
        return _render_resource(resource, form, sample_form, status=422)
    except RuleViolation as exc:
        db.rollback()
        sample_form.form_errors.append(error_text(exc))
        return _render_resource(resource, form, sample_form, status=422)
    db.commit()
    flash(_("Your sample request has been sent. A technician will schedule it and you will be told when."),
          "success")
    return redirect(url_for(".my_reservations", _anchor="samples"))


# --- my reservations ------------------------------------------------------------------------------------------------

def _my_reservations_context(now: datetime) -> dict:
    db = get_db()
    mine = reservations.reservations_of(db, current_user)
    upcoming = [r for r in mine if r.ends_at > now]
    past = sorted((r for r in mine if r.ends_at <= now), key=lambda r: r.starts_at, reverse=True)[:50]
    sample_requests = db.scalars(select(SampleRequest).where(SampleRequest.user_id == current_user.id)
                                 .order_by(SampleRequest.created_at.desc())).all()
    feed = db.scalar(select(CalendarFeed).where(CalendarFeed.user_id == current_user.id))
    return {"upcoming": upcoming, "past": past, "waitlist": waitlist.waitlist_of(db, current_user),
            "sample_requests": sample_requests, "feed": feed, "now": now,
            "late": {r.id for r in upcoming if r.is_live and texts.cancellation_is_late(r, now)},
            "cancel_form": CancelForm(formdata=None)}


@bp.get("/reservations")
@login_required
def my_reservations():
    return render_template("booking/my_reservations.html", **_my_reservations_context(_now()))


@bp.post("/reservations/feed")
@login_required
def regenerate_feed():
    """A new secret URL for my iCal feed; shown once (only its digest is kept)."""
    db = get_db()
    secret = feeds.regenerate_feed(db, current_user)
    db.commit()
    url = url_for("calendar.feed", secret=secret, _external=True)
    if request.headers.get("HX-Request"):
        return render_template("booking/_feed.html", feed_url=url, feed=True,
                               regenerate_url=url_for(".regenerate_feed"))
    return render_template("booking/my_reservations.html", feed_url=url, **_my_reservations_context(_now()))


def _visible_reservation(reservation_id: int) -> Reservation:
    db = get_db()
    reservation = reservations.get_reservation(db, reservation_id)
    if not reservations.can_see(db, current_user, reservation):
        abort(404)
    return reservation


@bp.get("/reservations/<int:reservation_id>")
@login_required
def reservation(reservation_id: int):
    db, now = get_db(), _now()
    item = _visible_reservation(reservation_id)
    manager = can_manage_facility(db, current_user, item.resource.facility_id)
    return render_template("booking/reservation.html", r=item, manager=manager, now=now,
                           own=item.user_id == current_user.id,
                           late=item.is_live and texts.cancellation_is_late(item, now),
                           cancel_form=CancelForm(formdata=None), decision_form=DecisionForm(formdata=None))


@bp.post("/reservations/<int:reservation_id>/cancel")
@login_required
def cancel(reservation_id: int):
    db = get_db()
    _visible_reservation(reservation_id)
    form = CancelForm()
    target = safe_next(form.next.data, url_for(".my_reservations"))
    if not form.validate_on_submit():
        flash(_("The reason is too long (at most 500 characters)."), "danger")
        return redirect(target)
    try:
        cancelled = reservations.cancel_reservation(db, current_user, reservation_id, reason=form.reason.data or "")
    except (RuleViolation, InvalidTransition) as exc:
        db.rollback()
        flash(error_text(exc), "danger")
        return redirect(target)
    db.commit()
    if cancelled.late_cancellation:
        flash(_("The booking is cancelled. It was inside the cancellation deadline, so it counts as a late "
                "cancellation."), "warning")
    else:
        flash(_("The booking is cancelled."), "success")
    return redirect(target)


@bp.route("/reservations/<int:reservation_id>/edit", methods=["GET", "POST"])
@login_required
def edit_reservation(reservation_id: int):
    db = get_db()
    item = _visible_reservation(reservation_id)
    if item.user_id != current_user.id and not can_manage_facility(db, current_user, item.resource.facility_id):
        abort(403)
    tz = ZoneInfo(item.resource.facility.timezone)
    form = ModifyForm()
    if request.method == "GET":
        form.starts_at.data = item.starts_at.astimezone(tz).replace(tzinfo=None)
        form.ends_at.data = item.ends_at.astimezone(tz).replace(tzinfo=None)
        form.purpose.data = item.purpose
    status = 200
    if form.validate_on_submit():
        try:
            reservations.modify_reservation(db, current_user, reservation_id,
                                            starts_at=form.starts_at.data.replace(tzinfo=tz),
                                            ends_at=form.ends_at.data.replace(tzinfo=tz),
                                            purpose=form.purpose.data or "")
        except InvalidInput as exc:
            db.rollback()
            apply_field_errors(form, exc)
            status = 422
        except RuleViolation as exc:
            db.rollback()
            form.form_errors.extend(violation_text(v) for v in exc.details.get("violations", []))
            status = 422
        except (ReservationConflict, InvalidTransition) as exc:
            db.rollback()
            form.form_errors.append(error_text(exc))
            status = 409
        else:
            db.commit()
            flash(_("The booking has been changed."), "success")
            return redirect(url_for(".reservation", reservation_id=reservation_id))
    elif form.is_submitted():
        status = 422
    return render_template("booking/edit_reservation.html", r=item, form=form), status


@bp.post("/waitlist/<int:entry_id>/leave")
@login_required
def leave_waitlist(entry_id: int):
    db = get_db()
    waitlist.leave_waitlist(db, current_user, entry_id)
    db.commit()
    flash(_("You have left the waitlist."), "success")
    return redirect(url_for(".my_reservations", _anchor="waitlist"))


@bp.post("/sample-requests/<int:request_id>/cancel")
@login_required
def withdraw_sample_request(request_id: int):
    db = get_db()
    try:
        samples.cancel_sample_request(db, current_user, request_id)
    except InvalidTransition as exc:
        db.rollback()
        flash(error_text(exc), "danger")
    else:
        db.commit()
        flash(_("Your sample request has been withdrawn."), "success")
    return redirect(url_for(".my_reservations", _anchor="samples"))
