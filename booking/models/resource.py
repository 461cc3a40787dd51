"""Resources: instruments and pilot lines offered for sharing."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from booking.categories import ServiceCategory
from booking.models.facility import Facility
from core.db import Base, str_enum
from core.timeutil import utcnow


class ResourceKind(enum.StrEnum):
    INSTRUMENT = "instrument"
    PILOT_LINE = "pilot_line"


class OperationMode(enum.StrEnum):
    SELF_SERVICE = "self_service"
    TECHNICIAN = "technician"  # 送样: technician-run sample service
    BOTH = "both"


class ResourceStatus(enum.StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"


class Resource(Base):
    __tablename__ = "resource"

    id: Mapped[int] = mapped_column(primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"), index=True)
    kind: Mapped[ResourceKind] = mapped_column(str_enum(ResourceKind, "resource_kind"))
    name_zh: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    description_zh: Mapped[str] = mapped_column(Text, default="")
    description_en: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(String(200), default="")
    manufacturer: Mapped[str] = mapped_column(String(200), default="")
    original_value: Mapped[Decimal]  # 原值, CNY
    category: Mapped[ServiceCategory] = mapped_column(str_enum(ServiceCategory, "service_category"))
    operation_mode: Mapped[OperationMode] = mapped_column(str_enum(OperationMode, "operation_mode"))
    voucher_eligible: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[ResourceStatus] = mapped_column(str_enum(ResourceStatus, "resource_status"),
                                                   default=ResourceStatus.ACTIVE)
    # [{"key_zh": "分辨率", "key_en": "Resolution", "value": "0.5 nm"}, ...]
    specs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Lower-cased names, model, manufacturer and specs in one column, so that free-text search is one
    # substring match (a trigram index serves it on PostgreSQL); kept current by booking.catalog.
    search_text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # Booking rules. Durations in minutes; a granularity of 1440 means whole days in the facility's zone.
    granularity_min: Mapped[int] = mapped_column(default=30)
    min_duration_min: Mapped[int] = mapped_column(default=30)
    max_duration_min: Mapped[int] = mapped_column(default=480)
    lead_time_min: Mapped[int] = mapped_column(default=60)
    horizon_days: Mapped[int] = mapped_column(default=90)
    # {"mon": "08:30-17:30", ...}; empty means the facility's opening hours; "00:00-24:00" is all day
    bookable_hours: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    approval_required: Mapped[bool] = mapped_column(Boolean, default=False)
    qualification_required: Mapped[bool] = mapped_column(Boolean, default=False)
    max_active_per_user: Mapped[int | None]
    cancellation_deadline_h: Mapped[int] = mapped_column(default=24)
    batch_days: Mapped[int | None]  # pilot lines booked in batches: a length that is a multiple of this

    facility: Mapped[Facility] = relationship(back_populates="resources", lazy="joined")
    photos: Mapped[list[ResourcePhoto]] = relationship(order_by="ResourcePhoto.id", cascade="all, delete-orphan")

    __table_args__ = (
        CheckConstraint("original_value >= 0", name="original_value_not_negative"),
        CheckConstraint("granularity_min > 0 AND granularity_min <= 1440", name="granularity_range"),
        CheckConstraint("min_duration_min > 0 AND max_duration_min >= min_duration_min", name="duration_range"),
        CheckConstraint("lead_time_min >= 0 AND horizon_days > 0 AND cancellation_deadline_h >= 0",
                        name="rule_values"),
        CheckConstraint("max_active_per_user IS NULL OR max_active_per_user > 0", name="max_active_positive"),
        CheckConstraint("batch_days IS NULL OR batch_days > 0", name="batch_days_positive"),
    )

    def name(self, locale: str) -> str:
        return self.name_en if locale == "en" else self.name_zh

    @property
    def books_whole_days(self) -> bool:
        return self.granularity_min == 1440

    @property
    def offers_self_service(self) -> bool:
        return self.operation_mode in (OperationMode.SELF_SERVICE, OperationMode.BOTH)

    @property
    def offers_technician_service(self) -> bool:
        return self.operation_mode in (OperationMode.TECHNICIAN, OperationMode.BOTH)


class ResourcePhoto(Base):
    """A photo of a resource; the image itself is a file under the data directory (booking.photos)."""

    __tablename__ = "resource_photo"

    id: Mapped[int] = mapped_column(primary_key=True)
    resource_id: Mapped[int] = mapped_column(ForeignKey("resource.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(100), unique=True)  # random name; never the uploader's
    content_type: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int]
    caption: Mapped[str] = mapped_column(String(200), default="")
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)
