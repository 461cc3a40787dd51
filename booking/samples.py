"""Technician-run sample service (送样): a request with samples and hazards, scheduled into a slot later."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from booking import notifications
from booking.errors import InvalidTransition, RuleViolation
from booking.locking import lock_resource
from booking.models import (
    Reservation,
    ReservationKind,
    ReservationState,
    Resource,
    ResourceStatus,
    SampleRequest,
    SampleRequestState,
)
from booking.permissions import can_manage_facility, managed_facility_ids
from booking.reservations import BookingRequest, _flush_guarded, _raise_for, check_request
from core import audit
from core.accounts.models import User
from core.errors import N_, Forbidden, InvalidInput, NotFound
from core.timeutil import as_utc, utcnow


def create_sample_request(db: Session, actor: User, resource_id: int, *, sample_count: int, description: str,
                          hazards: str = "", billed_org_id: int | None = None) -> SampleRequest:
    resource = db.get(Resource, resource_id)
    if resource is None:
        raise NotFound("resource", resource_id)
    if resource.status != ResourceStatus.ACTIVE:
        raise RuleViolation("resource_unavailable")
    if not resource.offers_technician_service:
        raise RuleViolation("technician_service_not_offered")
    errors: dict[str, list[str]] = {}
    if not isinstance(sample_count, int) or not 0 < sample_count <= 10_000:
        errors["sample_count"] = [N_("Give a number of samples between 1 and 10000.")]
    if not (description or "").strip() or len(description) > 4000:
        errors["description"] = [N_("Describe the samples and the analysis wanted (up to 4000 characters).")]
    if len(hazards or "") > 2000:
        errors["hazards"] = [N_("At most 2000 characters.")]
    if billed_org_id not in (None, actor.organisation_id):
        errors["billed_org_id"] = [N_("You can only bill your own organisation.")]
    if errors:
        raise InvalidInput(errors)
    request = SampleRequest(resource_id=resource_id, user_id=actor.id, billed_org_id=actor.organisation_id,
                            sample_count=sample_count, description=description.strip(),
                            hazards=(hazards or "").strip())
    db.add(request)
    db.flush()
    audit.record(db, actor, "sample_request.created", request, resource_id=resource_id, samples=sample_count)
    return request


def _managed_request(db: Session, actor: User, request_id: int) -> SampleRequest:
    request = db.get(SampleRequest, request_id)
    if request is None:
        raise NotFound("sample_request", request_id)
    if not can_manage_facility(db, actor, request.resource.facility_id):
        raise Forbidden()
    return request


def schedule_sample_request(db: Session, actor: User, request_id: int, starts_at: datetime, ends_at: datetime,
                            *, now: datetime | None = None) -> Reservation:
    """A technician (facility manager) books a slot for the samples; the requester is told."""
    now = now or utcnow()
    request = _managed_request(db, actor, request_id)
    if request.state != SampleRequestState.REQUESTED:
        raise InvalidTransition(state=request.state, action="scheduled")
    resource = lock_resource(db, request.resource_id)
    booking = BookingRequest(resource.id, as_utc(starts_at), as_utc(ends_at), request.description[:2000],
                             request.sample_count, request.billed_org_id, ReservationKind.TECHNICIAN)
    _raise_for(check_request(db, actor, resource, booking, now), resource.facility.timezone)
    reservation = Reservation(resource_id=resource.id, user_id=request.user_id, billed_org_id=request.billed_org_id,
                              starts_at=booking.starts_at, ends_at=booking.ends_at, purpose=booking.purpose,
                              sample_count=request.sample_count, kind=ReservationKind.TECHNICIAN,
                              state=ReservationState.CONFIRMED, decided_by_id=actor.id, decided_at=now)
    _flush_guarded(db, reservation)
    request.state, request.reservation_id = SampleRequestState.SCHEDULED, reservation.id
    audit.record(db, actor, "sample_request.scheduled", request, reservation_id=reservation.id,
                 starts_at=booking.starts_at.isoformat(), ends_at=booking.ends_at.isoformat())
    notifications.reservation_event(db, reservation, "confirmed")
    return reservation


def reject_sample_request(db: Session, actor: User, request_id: int, note: str) -> SampleRequest:
    request = _managed_request(db, actor, request_id)
    if request.state != SampleRequestState.REQUESTED:
        raise InvalidTransition(state=request.state, action="rejected")
    request.state, request.note = SampleRequestState.REJECTED, (note or "").strip()[:2000]
    audit.record(db, actor, "sample_request.rejected", request, note=request.note)
    return request


def cancel_sample_request(db: Session, actor: User, request_id: int) -> SampleRequest:
    request = db.get(SampleRequest, request_id)
    if request is None or request.user_id != actor.id:
        raise NotFound("sample_request", request_id)
    if request.state != SampleRequestState.REQUESTED:
        raise InvalidTransition(state=request.state, action="cancelled")
    request.state = SampleRequestState.CANCELLED
    audit.record(db, actor, "sample_request.cancelled", request)
    return request


def open_sample_requests(db: Session, actor: User) -> list[SampleRequest]:
    scope = managed_facility_ids(db, actor)
    query = select(SampleRequest).join(Resource).where(SampleRequest.state == SampleRequestState.REQUESTED)
    if scope is not None:
        query = query.where(Resource.facility_id.in_(scope or [-1]))
    return list(db.scalars(query.order_by(SampleRequest.created_at)))
