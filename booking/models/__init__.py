"""Tables of the catalog and booking area."""

from booking.models.facility import Facility, FacilityManager
from booking.models.reservation import (
    LIVE_STATES,
    TRANSITIONS,
    RepeatFrequency,
    Reservation,
    ReservationKind,
    ReservationSeries,
    ReservationState,
    SampleRequest,
    SampleRequestState,
    WaitlistEntry,
)
from booking.models.resource import OperationMode, Resource, ResourceKind, ResourcePhoto, ResourceStatus
from booking.models.schedule import Blackout, BlackoutKind, CalendarFeed, Qualification

__all__ = [
    "LIVE_STATES", "TRANSITIONS", "Blackout", "BlackoutKind", "CalendarFeed", "Facility", "FacilityManager",
    "OperationMode", "Qualification", "RepeatFrequency", "Reservation", "ReservationKind", "ReservationSeries",
    "ReservationState", "Resource", "ResourceKind", "ResourcePhoto", "ResourceStatus", "SampleRequest",
    "SampleRequestState", "WaitlistEntry",
]
