"""API: catalog, availability, reservations (with series and previews), blackouts, qualifications,
waitlist, sample requests and calendar feeds. Thin: schema in, service call, schema out."""

from __future__ import annotations

from flask import url_for
from flask.views import MethodView
from sqlalchemy import select

from booking import blackouts, catalog, feeds, qualifications, reservations, samples, waitlist
from booking.availability import Busy, free_busy
from booking.models import Blackout, Reservation, Resource, SampleRequest
from booking.permissions import can_manage_facility, managed_facility_ids
from booking.rules import Rules
from core.accounts.models import Role
from core.errors import N_, Forbidden, InvalidInput, NotFound
from web.api.auth import current_api_user
from web.api.blueprint import blp
from web.api.booking_schemas import (
    AvailabilityQuery,
    AvailabilitySchema,
    BlackoutCreate,
    BlackoutSchema,
    DecisionSchema,
    FeedCreate,
    FeedSchema,
    PreviewSchema,
    QualificationCreate,
    QualificationSchema,
    ReservationCreate,
    ReservationPatch,
    ReservationQuery,
    ReservationSchema,
    ResourceQuery,
    ResourceSchema,
    ResourceWrite,
    SampleRequestCreate,
    SampleRequestSchema,
    ScheduleSchema,
    SeriesCreate,
    SeriesResult,
    WaitlistCreate,
    WaitlistSchema,
)
from web.api.pagination import paginate
from web.api.schemas import page_of
from web.database import get_db
from web.i18n import violation_text


def _commit():
    get_db().commit()


def _booking_request(body) -> reservations.BookingRequest:
    return reservations.BookingRequest(body["resource_id"], body["starts_at"], body["ends_at"],
                                       body.get("purpose", ""), body.get("sample_count"), body.get("billed_org_id"))


def _problems_json(problems: reservations.Problems) -> dict:
    return {"bookable": not problems,
            "violations": [{**v, "message": violation_text(v)} for v in problems.violations],
            "clashes": [c.as_dict() for c in problems.clashes]}


# --- catalog ---------------------------------------------------------------------------------------------

@blp.route("/resources")
class Resources(MethodView):
    @blp.arguments(ResourceQuery, location="query")
    @blp.response(200, page_of(ResourceSchema))
    def get(self, args):
        """Search the catalog. `q` matches substrings of names, model, manufacturer and specifications;
        `free_from`+`free_to` keeps only resources bookable in that window."""
        return catalog.search(get_db(), catalog.CatalogQuery(**args))

    @blp.arguments(ResourceWrite)
    @blp.response(201, ResourceSchema)
    def post(self, body):
        """Add a resource to a facility you manage."""
        facility_id = body.pop("facility_id", None)
        if facility_id is None:
            raise InvalidInput({"facility_id": [N_("This field is required.")]})
        resource = catalog.create_resource(get_db(), current_api_user(), facility_id, body)
        _commit()
        return resource


@blp.route("/resources/<id:resource_id>")
class ResourceById(MethodView):
    @blp.response(200, ResourceSchema)
    def get(self, resource_id: int):
        """One resource with its specifications and booking rules."""
        return catalog.get_resource(get_db(), resource_id)

    @blp.arguments(ResourceWrite)
    @blp.response(200, ResourceSchema)
    def patch(self, body, resource_id: int):
        """Change a resource of a facility you manage (rules, status, texts, …)."""
        body.pop("facility_id", None)
        resource = catalog.update_resource(get_db(), current_api_user(), resource_id, body)
        _commit()
        return resource


@blp.route("/resources/<id:resource_id>/availability")
class Availability(MethodView):
    @blp.arguments(AvailabilityQuery, location="query")
    @blp.response(200, AvailabilitySchema)
    def get(self, args, resource_id: int):
        """Free and busy intervals between `start` and `end` (at most 62 days)."""
        db = get_db()
        resource = catalog.get_resource(db, resource_id)
        start, end = args["start"], args["end"]
        busy = [Busy(r.starts_at, r.ends_at, r.state, r.id) for r in
                reservations.live_intervals(db, [resource_id], start, end)]
        busy += [Busy(b.starts_at, b.ends_at, b.kind, b.id, is_blackout=True) for b in db.execute(
            select(Blackout.starts_at, Blackout.ends_at, Blackout.kind, Blackout.id).where(
                Blackout.resource_id == resource_id, Blackout.starts_at < end, Blackout.ends_at > start))]
        rules = Rules.of(resource)
        return {"resource_id": resource_id, "timezone": resource.facility.timezone,
                "spans": free_busy(rules.hours, rules.tz, start, end, busy)}


# --- reservations -----------------------------------------------------------------------------------------

@blp.route("/reservations")
class Reservations(MethodView):
    @blp.arguments(ReservationQuery, location="query")
    @blp.response(200, page_of(ReservationSchema))
    def get(self, args):
        """Reservations you may see: `scope=mine` (default), `managed` (your facilities) or `all` (admin,
        finance)."""
        db, user = get_db(), current_api_user()
        query = select(Reservation).order_by(Reservation.starts_at, Reservation.id)
        if args["scope"] == "mine":
            query = query.where(Reservation.user_id == user.id)
        elif args["scope"] == "managed":
            scope = managed_facility_ids(db, user)
            if scope is not None:
                query = query.join(Resource).where(Resource.facility_id.in_(scope or [-1]))
        elif not user.has_role(Role.ADMIN, Role.FINANCE):
            raise Forbidden()
        if "resource_id" in args:
            query = query.where(Reservation.resource_id == args["resource_id"])
        if "state" in args:
            query = query.where(Reservation.state == args["state"])
        if args.get("start"):
            query = query.where(Reservation.ends_at > args["start"], Reservation.starts_at < args["end"])
        return paginate(db, query, args["page"], args["per_page"])

    @blp.arguments(ReservationCreate)
    @blp.response(201, ReservationSchema)
    @blp.alt_response(409, description="reservation_conflict: the window overlaps a live reservation or blackout")
    @blp.alt_response(422, description="a booking rule is broken (code names it) or the input is invalid")
    def post(self, body):
        """Book a resource. Confirmed at once, or pending when the resource needs approval."""
        reservation = reservations.create_reservation(get_db(), current_api_user(), _booking_request(body))
        _commit()
        return reservation


@blp.route("/reservations/preview")
class ReservationPreview(MethodView):
    @blp.arguments(ReservationCreate)
    @blp.response(200, PreviewSchema)
    def post(self, body):
        """What would stand in the way of this booking (rules and clashes), without booking."""
        return _problems_json(reservations.preview(get_db(), current_api_user(), _booking_request(body)))


@blp.route("/reservations/series")
class ReservationSeries(MethodView):
    @blp.arguments(SeriesCreate)
    @blp.response(201, SeriesResult)
    def post(self, body):
        """Repeat a booking daily or weekly. `dry_run` lists every occurrence and what blocks it;
        otherwise all-or-nothing, or only the bookable ones with `skip_conflicts`."""
        db, user = get_db(), current_api_user()
        req = _booking_request(body)
        if body["dry_run"]:
            planned = reservations.preview_series(db, user, req, body["frequency"], body["occurrences"])
            return {"series_id": None, "created": [], "occurrences": [
                {"starts_at": occ.starts_at, "ends_at": occ.ends_at, **_problems_json(p)} for occ, p in planned]}
        outcome = reservations.create_series(db, user, req, body["frequency"], body["occurrences"],
                                             skip_conflicts=body["skip_conflicts"])
        _commit()
        return {"series_id": outcome.series.id if outcome.series else None, "created": outcome.created,
                "occurrences": [{"starts_at": occ.starts_at, "ends_at": occ.ends_at, **_problems_json(p)}
                                for occ, p in outcome.skipped]}


def _visible(reservation_id: int) -> Reservation:
    db, user = get_db(), current_api_user()
    reservation = reservations.get_reservation(db, reservation_id)
    if not reservations.can_see(db, user, reservation):
        raise NotFound("reservation", reservation_id)
    return reservation


@blp.route("/reservations/<id:reservation_id>")
class ReservationById(MethodView):
    @blp.response(200, ReservationSchema)
    def get(self, reservation_id: int):
        """One reservation (yours, or of a facility you manage)."""
        return _visible(reservation_id)

    @blp.arguments(ReservationPatch)
    @blp.response(200, ReservationSchema)
    def patch(self, body, reservation_id: int):
        """Move, resize or re-describe a live reservation before it starts."""
        _visible(reservation_id)
        reservation = reservations.modify_reservation(get_db(), current_api_user(), reservation_id, **body)
        _commit()
        return reservation

    @blp.response(200, ReservationSchema)
    def delete(self, reservation_id: int):
        """Cancel. Inside the resource's cancellation deadline it is recorded as a late cancellation."""
        _visible(reservation_id)
        reservation = reservations.cancel_reservation(get_db(), current_api_user(), reservation_id)
        _commit()
        return reservation


def _decision_route(path: str, name: str, action):
    @blp.route(path, endpoint=name)
    class Decision(MethodView):
        @blp.arguments(DecisionSchema)
        @blp.response(200, ReservationSchema)
        def post(self, body, reservation_id: int):
            _visible(reservation_id)
            reservation = action(get_db(), current_api_user(), reservation_id, body["note"])
            _commit()
            return reservation

    Decision.post.__doc__ = f"{name.replace('_', ' ').capitalize()} (lab managers of the resource's facility)."
    return Decision


_decision_route("/reservations/<id:reservation_id>/approve", "approve_reservation", reservations.approve_reservation)
_decision_route("/reservations/<id:reservation_id>/reject", "reject_reservation", reservations.reject_reservation)
_decision_route("/reservations/<id:reservation_id>/complete", "complete_reservation",
                lambda db, actor, rid, note: reservations.close_reservation(db, actor, rid, no_show=False))
_decision_route("/reservations/<id:reservation_id>/no-show", "mark_no_show",
                lambda db, actor, rid, note: reservations.close_reservation(db, actor, rid, no_show=True))


# --- blackouts and qualifications -------------------------------------------------------------------------

def _managed_resource(resource_id: int) -> Resource:
    db = get_db()
    resource = catalog.get_resource(db, resource_id)
    if not can_manage_facility(db, current_api_user(), resource.facility_id):
        raise Forbidden()
    return resource


@blp.route("/resources/<id:resource_id>/blackouts")
class Blackouts(MethodView):
    @blp.response(200, BlackoutSchema(many=True))
    def get(self, resource_id: int):
        """Blackouts of a resource (anyone may see when it is closed)."""
        catalog.get_resource(get_db(), resource_id)
        return get_db().scalars(select(Blackout).where(Blackout.resource_id == resource_id)
                                .order_by(Blackout.starts_at)).all()

    @blp.arguments(BlackoutCreate)
    @blp.response(201, BlackoutSchema)
    def post(self, body, resource_id: int):
        """Block a window (lab managers). Live reservations inside are a 409, unless cancel_conflicting."""
        blackout = blackouts.create_blackout(get_db(), current_api_user(), resource_id, body["starts_at"],
                                             body["ends_at"], body["kind"], body["reason"],
                                             cancel_conflicting=body["cancel_conflicting"])
        _commit()
        return blackout


@blp.route("/blackouts/<id:blackout_id>")
class BlackoutById(MethodView):
    @blp.response(204)
    def delete(self, blackout_id: int):
        """Remove a blackout (lab managers); waiting users are told if their time is now free."""
        blackouts.delete_blackout(get_db(), current_api_user(), blackout_id)
        _commit()


@blp.route("/resources/<id:resource_id>/qualifications")
class Qualifications(MethodView):
    @blp.response(200, QualificationSchema(many=True))
    def get(self, resource_id: int):
        """Who may operate the resource alone (lab managers)."""
        _managed_resource(resource_id)
        return qualifications.qualifications_for_resource(get_db(), resource_id)

    @blp.arguments(QualificationCreate)
    @blp.response(201, QualificationSchema)
    def post(self, body, resource_id: int):
        """Grant (or renew) a qualification, optionally until `expires_at`."""
        qualification = qualifications.grant_qualification(get_db(), current_api_user(), body["user_id"],
                                                           resource_id, body.get("expires_at"))
        _commit()
        return qualification


@blp.route("/qualifications/<id:qualification_id>")
class QualificationById(MethodView):
    @blp.response(200, QualificationSchema)
    def delete(self, qualification_id: int):
        """Revoke a qualification."""
        qualification = qualifications.revoke_qualification(get_db(), current_api_user(), qualification_id)
        _commit()
        return qualification


# --- waitlist, sample requests, calendar feeds ---------------------------------------------------------------

@blp.route("/waitlist")
class Waitlist(MethodView):
    @blp.response(200, WaitlistSchema(many=True))
    def get(self):
        """Your waitlist entries."""
        return waitlist.waitlist_of(get_db(), current_api_user())

    @blp.arguments(WaitlistCreate)
    @blp.response(201, WaitlistSchema)
    def post(self, body):
        """Be told by e-mail when this busy window frees up (409 waitlist_not_needed if it is free)."""
        entry = waitlist.join_waitlist(get_db(), current_api_user(), body["resource_id"], body["starts_at"],
                                       body["ends_at"])
        _commit()
        return entry


@blp.route("/waitlist/<id:entry_id>")
class WaitlistById(MethodView):
    @blp.response(204)
    def delete(self, entry_id: int):
        """Leave the waitlist."""
        waitlist.leave_waitlist(get_db(), current_api_user(), entry_id)
        _commit()


@blp.route("/sample-requests")
class SampleRequests(MethodView):
    @blp.response(200, SampleRequestSchema(many=True))
    def get(self):
        """Your sample requests, and the open ones of facilities you manage."""
        db, user = get_db(), current_api_user()
        mine = db.scalars(select(SampleRequest).where(SampleRequest.user_id == user.id)).all()
        managed = samples.open_sample_requests(db, user) if user.has_role(Role.LAB_MANAGER, Role.ADMIN) else []
        return sorted({r.id: r for r in [*mine, *managed]}.values(), key=lambda r: r.id)

    @blp.arguments(SampleRequestCreate)
    @blp.response(201, SampleRequestSchema)
    def post(self, body):
        """Ask a technician to run your samples (送样) on a resource that offers it."""
        request = samples.create_sample_request(get_db(), current_api_user(), body["resource_id"],
                                                sample_count=body["sample_count"], description=body["description"],
                                                hazards=body["hazards"])
        _commit()
        return request


@blp.route("/sample-requests/<id:request_id>/schedule")
class SampleSchedule(MethodView):
    @blp.arguments(ScheduleSchema)
    @blp.response(201, ReservationSchema)
    def post(self, body, request_id: int):
        """Schedule the samples into a slot (technicians, i.e. the facility's lab managers)."""
        reservation = samples.schedule_sample_request(get_db(), current_api_user(), request_id, body["starts_at"],
                                                      body["ends_at"])
        _commit()
        return reservation


@blp.route("/sample-requests/<id:request_id>")
class SampleRequestById(MethodView):
    @blp.response(200, SampleRequestSchema)
    def delete(self, request_id: int):
        """Withdraw your sample request before it is scheduled."""
        request = samples.cancel_sample_request(get_db(), current_api_user(), request_id)
        _commit()
        return request


@blp.route("/calendar-feeds")
class CalendarFeeds(MethodView):
    @blp.arguments(FeedCreate)
    @blp.response(201, FeedSchema)
    def post(self, body):
        """A new secret iCal URL for your reservations, or for a resource you manage (`resource_id`).
        The previous URL stops working."""
        secret = feeds.regenerate_feed(get_db(), current_api_user(), resource_id=body.get("resource_id"))
        _commit()
        return {"url": url_for("calendar.feed", secret=secret, _external=True)}


