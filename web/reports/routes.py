"""Report pages: the open-sharing figures per instrument, facility, organisation and city with their downloads,
the sessions and charges behind an instrument's figures, and the dashboard of charts. Lab managers see their
facilities, finance and admins all of them (reports.sharing.may_see_reports decides)."""

from __future__ import annotations

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from wtforms import SelectChoice

from booking.models import Facility, Resource
from core.accounts.models import Organisation, Role
from core.errors import Forbidden
from core.regions import SICHUAN_CITIES
from reports import exports
from reports.sharing import (
    booking_sources,
    charge_sources,
    grouped,
    may_see_reports,
    monthly_money,
    scope_for,
    session_sources,
    voucher_burndown,
)
from web.authz import roles_required
from web.database import get_db
from web.errors import error_page
from web.reports import views
from web.reports.forms import GROUPS, RangeForm, ReportForm
from web.templating import current_locale

bp = Blueprint("reports", __name__)

READERS = (Role.LAB_MANAGER, Role.FINANCE, Role.ADMIN)
EXPORT_TYPES = {"csv": "text/csv; charset=utf-8",
                "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
RANGE_ARGS = ("year", "start", "end", "facility", "owner", "city")


def _reader_required(view):
    """Lab managers, finance and admins; researchers 403, visitors to the sign-in page."""
    return roles_required(*READERS)(view)


@bp.context_processor
def _helpers():
    return {"hours_text": views.hours_text, "percent_text": views.percent_text, "group_name": views.group_name,
            "instrument_name": views.instrument_name, "seconds_hours": views.seconds_to_hours}


# --- the query ---------------------------------------------------------------------------------------------------

def _visible_facilities(db) -> list[Facility]:
    allowed = may_see_reports(db, current_user)
    stmt = select(Facility).order_by(Facility.city, Facility.name_zh)
    if allowed is not None:
        stmt = stmt.where(Facility.id.in_(allowed))
    return list(db.scalars(stmt))


def _form(form_class, facilities: list[Facility]):
    form = form_class(formdata=request.args)
    cities = {f.city for f in facilities}
    form.city.choices = [SelectChoice("", _("All cities"))] + [
        SelectChoice(code, views.city_name(code)) for code in SICHUAN_CITIES if code in cities]
    return form


def _scope(db, form, now_day):
    """The range and the scope of a valid form; 404 for a facility or organisation that does not exist, 403
    for a facility outside the reader's (scope_for)."""
    span = views.resolve_range(form.year.data, form.start.data, form.end.data, now_day)
    if form.facility.data is not None and db.get(Facility, form.facility.data) is None:
        abort(404)
    if form.owner.data is not None and db.get(Organisation, form.owner.data) is None:
        abort(404)
    scope = _scope_for(db, span, facility_id=form.facility.data, owner_id=form.owner.data,
                       city=form.city.data or None)
    return span, scope


def _scope_for(db, span: views.Range, **filters):
    """scope_for, with a facility outside the reader's answered like any page they may not see (403)."""
    try:
        return scope_for(db, current_user, span.start, span.end, **filters)
    except Forbidden:
        abort(403)


def _args(form, **changes) -> dict:
    """The query parameters of the current view, for links that change one of them."""
    args = {name: request.args[name] for name in (*RANGE_ARGS, "group", "sort", "dir") if request.args.get(name)}
    args.update(changes)
    return {k: v for k, v in args.items() if v not in (None, "")}


def _query_of(form) -> dict:
    """The range and filters only (what the report and the dashboard share)."""
    return {name: request.args[name] for name in RANGE_ARGS if request.args.get(name)}


def _range_args(span: views.Range) -> dict:
    return {"start": span.start.isoformat(), "end": span.end.isoformat()}


# --- the report ----------------------------------------------------------------------------------------------------

@bp.get("/reports")
@_reader_required
def index():
    return redirect(url_for(".sharing"))


@bp.get("/reports/sharing")
@_reader_required
def sharing():
    db = get_db()
    facilities = _visible_facilities(db)
    form = _form(ReportForm, facilities)
    context = {"form": form, "facilities": facilities, "now_day": views.today(), "groups": GROUPS}
    if not form.validate():
        return render_template("reports/sharing.html", report=None, **context), 422
    span, scope = _scope(db, form, context["now_day"])
    province_wide = scope.facility_ids is None and scope.cities is None and scope.owner_ids is None
    # A province's instrument list runs to thousands of rows: admins and finance start from the 市州.
    group = form.group.data or ("city" if province_wide else "instrument")
    descending = (form.dir.data or "desc") == "desc"
    sort = form.sort.data or "effective"
    report = views.report_for(db, scope)
    if group == "instrument":
        rows = views.sorted_rows(report.instruments, sort, descending, views.instrument_name)
    else:
        rows = views.sorted_rows(grouped(report.instruments, group), sort, descending,
                                 lambda g: views.group_name(g, group))
    shown, page, pages = views.paged(rows, form.page.data or 1)
    return render_template(
        "reports/sharing.html", report=report, span=span, group=group, sort=sort, descending=descending,
        rows=shown, row_count=len(rows), page=page, pages=pages, args=_args(form, group=group),
        link_args=_args(form), range_args=_query_of(form), source_args=_range_args(span), **context)


@bp.get("/reports/sharing.<fmt>")
@_reader_required
def download(fmt: str):
    if fmt not in EXPORT_TYPES:
        abort(404)
    db = get_db()
    form = _form(RangeForm, _visible_facilities(db))
    if not form.validate():
        messages = "; ".join(str(m) for errors in form.errors.values() for m in errors)
        return error_page(422, messages)
    span, scope = _scope(db, form, views.today())
    report = views.report_for(db, scope)
    locale = current_locale()
    body = exports.report_xlsx(report, locale=locale) if fmt == "xlsx" else exports.report_csv(report, locale=locale)
    response = Response(body, content_type=EXPORT_TYPES[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="sharing-{span.label}.{fmt}"'
    return response


# --- where a figure comes from -----------------------------------------------------------------------------------

def _resource_scope(resource_id: int):
    db = get_db()
    resource = db.get(Resource, resource_id)
    if resource is None:
        abort(404)
    form = _form(RangeForm, [resource.facility])
    if not form.validate():
        return db, resource, form, None, None
    span = views.resolve_range(form.year.data, form.start.data, form.end.data, views.today())
    scope = _scope_for(db, span, facility_id=resource.facility_id)  # 403 outside the reader's facilities
    return db, resource, form, span, scope


@bp.get("/reports/sharing/resources/<int:resource_id>/sessions")
@_reader_required
def sessions(resource_id: int):
    db, resource, form, span, scope = _resource_scope(resource_id)
    if scope is None:
        return render_template("reports/sessions.html", resource=resource, form=form, sources=None), 422
    figures = views.single(db, scope, resource_id)
    sources = session_sources(db, scope, resource_id)
    # a resource without a device: the booked time of its completed reservations stands in for use
    bookings = booking_sources(db, scope, resource_id) if figures is not None and not figures.metered else []
    counted_s = sum(s.counted_s for s in [*sources, *bookings])
    external_s = sum(s.counted_s for s in [*sources, *bookings] if s.external)
    return render_template(
        "reports/sessions.html", resource=resource, form=form, span=span, sources=sources, figures=figures,
        bookings=bookings,
        counted_hours=views.seconds_to_hours(counted_s), external_hours=views.seconds_to_hours(external_s),
        organisations=views.organisations(db, (s.organisation_id for s in [*sources, *bookings])),
        users=views.users(db, (s.user_id for s in [*sources, *bookings])),
        may_open_reservations=current_user.has_role(Role.LAB_MANAGER, Role.ADMIN),
        source_args=_range_args(span))


@bp.get("/reports/sharing/resources/<int:resource_id>/charges")
@_reader_required
def charges(resource_id: int):
    db, resource, form, span, scope = _resource_scope(resource_id)
    if scope is None:
        return render_template("reports/charges.html", resource=resource, form=form, charges=None), 422
    rows = charge_sources(db, scope, resource_id)
    vouchers = views.voucher_by_charge(db, [c.id for c in rows])
    return render_template(
        "reports/charges.html", resource=resource, form=form, span=span, charges=rows, vouchers=vouchers,
        totals=views.charge_totals(rows, vouchers), figures=views.single(db, scope, resource_id),
        organisations=views.organisations(db, (c.organisation_id for c in rows)),
        statements=views.statements(db, (c.statement_id for c in rows)),
        may_open_statements=current_user.has_role(Role.FINANCE, Role.ADMIN), source_args=_range_args(span))


# --- the dashboard -------------------------------------------------------------------------------------------------

@bp.get("/reports/dashboard")
@_reader_required
def dashboard():
    db = get_db()
    facilities = _visible_facilities(db)
    form = _form(RangeForm, facilities)
    context = {"form": form, "facilities": facilities, "now_day": views.today()}
    if not form.validate():
        return render_template("reports/dashboard.html", report=None, **context), 422
    span, scope = _scope(db, form, context["now_day"])
    report = views.report_for(db, scope)
    benchmarks = views.Benchmarks.for_range(span.days)
    least, most = views.ranked_instruments(report)
    counts = views.band_counts(report, benchmarks)
    by_facility = grouped(report.instruments, "facility")[:views.CHART_FACILITIES]
    by_city = grouped(report.instruments, "city")
    months = monthly_money(db, scope)
    sees_all = may_see_reports(db, current_user) is None
    programmes = voucher_burndown(db, scope) if sees_all else []
    facility_names = [views.group_name(g, "facility") for g in by_facility]
    city_names = [views.group_name(g, "city") for g in by_city]
    return render_template(
        "reports/dashboard.html", report=report, span=span, benchmarks=benchmarks, least=least, most=most,
        counts=counts, by_facility=by_facility, by_city=by_city, facility_names=facility_names,
        city_names=city_names, months=months, programmes=programmes, sees_all=sees_all,
        heatmap=views.heatmap_chart(report.heatmap), heatmap_table=views.heatmap_table(report.heatmap),
        most_chart=views.benchmark_chart(most, benchmarks, "#198754"),
        least_chart=views.benchmark_chart(least, benchmarks, "#dc3545"),
        band_chart=views.band_chart(counts, benchmarks),
        facility_chart=views.rate_chart(by_facility, facility_names, horizontal=True),
        city_chart=views.rate_chart(by_city, city_names, horizontal=False),
        money_chart=views.money_chart(months), burndown_chart=views.burndown_chart(programmes, current_locale()),
        range_args=_query_of(form), rounded_rate=views.rounded_rate, **context)
