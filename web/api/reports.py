"""API: the open-sharing report (design.md §7) and where its figures come from. Lab managers see their
facilities, finance staff and admins all; `format=csv|xlsx` downloads the per-instrument annual layout."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import urlencode

from flask import url_for
from flask.views import MethodView
from sqlalchemy import select

from billing.models import BillingPeriod
from reports import exports
from reports.sharing import compute, grouped, scope_for, session_sources, year_range
from web.api.auth import current_api_user
from web.api.billing import EXPORT_DOC, ChargeSchema, _charges_out, _download
from web.api.blueprint import blp
from web.api.report_schemas import (
    GroupSchema,
    InstrumentSchema,
    RangeQuery,
    SessionSourceSchema,
    SharingQuery,
    SharingReportSchema,
)
from web.api.schemas import page_of
from web.database import get_db


def _range(args) -> tuple:
    return year_range(args["year"]) if "year" in args else (args["start"], args["end"])


def _instrument_out(figures, start, end, locale: str) -> dict:
    data = InstrumentSchema().dump(figures)
    query = urlencode({"start": start.isoformat(), "end": end.isoformat()})
    data["fee_standard"] = exports.fee_standard(figures.rate_card, locale)
    data["sessions_url"] = url_for("api_v1.SharingSessions", resource_id=figures.resource_id) + "?" + query
    data["charges_url"] = url_for("api_v1.SharingCharges", resource_id=figures.resource_id) + "?" + query
    return data


@blp.route("/reports/sharing")
class SharingReport(MethodView):
    @blp.arguments(SharingQuery, location="query")
    @blp.response(200, SharingReportSchema)
    @blp.doc(responses={"200": {"content": EXPORT_DOC["responses"]["200"]["content"]}})
    def get(self, args):
        """Open-sharing figures per instrument, facility, organisation or city for a year or a range of days.

        Hours come from measured usage sessions, income from issued charges; each instrument carries the
        URLs of the sessions and charges behind its figures. `format=csv` or `xlsx` returns the
        per-instrument annual report."""
        db, user = get_db(), current_api_user()
        start, end = _range(args)
        scope = scope_for(db, user, start, end, facility_id=args.get("facility_id"), city=args.get("city"))
        report = compute(db, scope)
        if args["format"] != "json":
            body = (exports.report_csv if args["format"] == "csv" else exports.report_xlsx)(report,
                                                                                           locale=args["locale"])
            return _download(body, args["format"], f"sharing-{start.isoformat()}-{end.isoformat()}.{args['format']}")
        page, per_page = args["page"], args["per_page"]
        if args["group"] == "instrument":
            rows = report.instruments
            items = [_instrument_out(f, start, end, args["locale"])
                     for f in rows[(page - 1) * per_page:page * per_page]]
        else:
            rows = grouped(report.instruments, args["group"])
            items = GroupSchema(many=True).dump(rows[(page - 1) * per_page:page * per_page])
        return {"start": start, "end": end, "group": args["group"], "totals": report.total, "items": items,
                "page": page, "per_page": per_page, "total": len(rows)}


@blp.route("/reports/sharing/resources/<id:resource_id>/sessions")
class SharingSessions(MethodView):
    @blp.arguments(RangeQuery, location="query")
    @blp.response(200, page_of(SessionSourceSchema))
    def get(self, args, resource_id: int):
        """The usage sessions behind a resource's hours in the range, each with whom it was counted for."""
        _db, shown, paging = _drill_down(args, resource_id, session_sources)
        items = [{**source.__dict__, "counted_hours": (Decimal(source.counted_s) / 3600).quantize(
            Decimal("0.01"), rounding=ROUND_HALF_UP)} for source in shown]
        return {"items": items, **paging}


@blp.route("/reports/sharing/resources/<id:resource_id>/charges")
class SharingCharges(MethodView):
    @blp.arguments(RangeQuery, location="query")
    @blp.response(200, page_of(ChargeSchema))
    def get(self, args, resource_id: int):
        """The charges and credit notes behind a resource's income in the range, by service date."""
        from reports.sharing import charge_sources

        db, shown, paging = _drill_down(args, resource_id, charge_sources)
        months = dict(db.execute(select(BillingPeriod.id, BillingPeriod.month)
                                 .where(BillingPeriod.id.in_({c.period_id for c in shown}))).all())
        rows = [(charge, months[charge.period_id]) for charge in shown]
        return {"items": _charges_out(rows), **paging}


def _drill_down(args, resource_id: int, find) -> tuple:
    """The database, one page of what `find(db, scope, resource_id)` lists for a resource in the caller's scope
    (checked: 404 unknown, 403 outside it), and the page's numbers."""
    db, user = get_db(), current_api_user()
    scope = scope_for(db, user, args["start"], args["end"])
    _visible(db, scope, resource_id)
    found = find(db, scope, resource_id)
    page, per_page = args["page"], args["per_page"]
    return db, found[(page - 1) * per_page:page * per_page], {"page": page, "per_page": per_page,
                                                               "total": len(found)}


def _visible(db, scope, resource_id: int) -> None:
    from booking.models import Resource
    from core.errors import Forbidden, NotFound

    resource = db.get(Resource, resource_id)
    if resource is None:
        raise NotFound("resource", resource_id)
    if scope.facility_ids is not None and resource.facility_id not in scope.facility_ids:
        raise Forbidden()
