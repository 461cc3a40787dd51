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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    facility: Mapped[Facility] = relationship(back_populates="resources", lazy="joined")

    __table_args__ = (CheckConstraint("original_value >= 0", name="original_value_not_negative"),)

    def name(self, locale: str) -> str:
        return self.name_en if locale == "en" else self.name_zh
