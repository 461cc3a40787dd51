"""Tables of the catalog and booking area."""

from booking.models.facility import Facility, FacilityManager
from booking.models.resource import OperationMode, Resource, ResourceKind, ResourceStatus

__all__ = ["Facility", "FacilityManager", "OperationMode", "Resource", "ResourceKind", "ResourceStatus"]
