"""Errors of the booking area, each with a stable code."""

from __future__ import annotations

from typing import Any, ClassVar

from core.errors import N_, Conflict, DomainError, Message


class RuleViolation(DomainError):
    """A booking breaks one of the resource's rules; `code` names which, `details` lists every one broken."""

    MESSAGES: ClassVar[dict[str, str]] = {
        "invalid_window": N_("The end must be after the start."),
        "starts_in_past": N_("The start is in the past."),
        "lead_time": N_("This resource must be booked at least %(lead)s in advance."),
        "beyond_horizon": N_("This resource can be booked at most %(days)s days ahead."),
        "too_short": N_("The booking is too short: at least %(minutes)s minutes."),
        "too_long": N_("The booking is too long: at most %(minutes)s minutes."),
        "granularity": N_("Start and end must fall on the %(minutes)s-minute grid of this resource."),
        "whole_days": N_("This pilot line is booked in whole days, from midnight to midnight."),
        "batch_length": N_("This pilot line is booked in batches of %(days)s days."),
        "outside_bookable_hours": N_("The time is outside the bookable hours of this resource."),
        "resource_unavailable": N_("This resource is retired and cannot be booked."),
        "self_service_not_offered": N_("This resource is only run by technicians: send a sample request."),
        "technician_service_not_offered": N_("This resource does not take sample requests."),
        "not_qualified": N_("You need a valid qualification to operate this resource alone."),
        "too_many_active": N_("You already have %(limit)s active bookings on this resource."),
        "billed_org_not_allowed": N_("You can only bill your own organisation."),
        "too_late_to_cancel": N_("This booking has already started or ended and cannot be cancelled."),
    }
    STATUS_HINT = 422

    def __init__(self, code: str, violations: list[dict[str, Any]] | None = None, **params: Any):
        self.code = code
        super().__init__(self.MESSAGES[code], details={"violations": violations or [{"code": code, **params}]},
                         **params)


class ReservationConflict(Conflict):
    """The window overlaps a live reservation or a blackout; `details["clashes"]` names them."""

    code = "reservation_conflict"
    message = N_("The time overlaps %(what)s from %(start)s to %(end)s.")


STATE_LABELS: dict[str, str] = {
    "pending": N_("waiting for approval"), "confirmed": N_("confirmed"), "rejected": N_("rejected"),
    "cancelled": N_("cancelled"), "completed": N_("completed"), "no_show": N_("no-show"),
    "requested": N_("requested"), "scheduled": N_("scheduled"),
}


class InvalidTransition(Conflict):
    """A state change the state machine does not allow; `details` has the state and the attempted action."""

    code = "invalid_state_transition"
    message = N_("Not possible: it is %(state)s.")

    def __init__(self, *, state: str, action: str, details: dict[str, Any] | None = None):
        label = Message(STATE_LABELS[state]) if state in STATE_LABELS else state
        super().__init__(state=label, details={"state": str(state), "action": action, **(details or {})})


class WaitlistNotNeeded(Conflict):
    code = "waitlist_not_needed"
    message = N_("This time is free: book it instead of joining the waitlist.")
