"""Facilities (sites hosting resources) and the lab managers each one is run by."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.accounts.models import Organisation, User
from core.db import Base
from core.timeutil import DEFAULT_TIMEZONE, utcnow

if TYPE_CHECKING:
    from booking.models.resource import Resource


class Facility(Base):
    __tablename__ = "facility"

    id: Mapped[int] = mapped_column(primary_key=True)
    name_zh: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    city: Mapped[str] = mapped_column(String(6), index=True)
    address_zh: Mapped[str] = mapped_column(String(300), default="")
    address_en: Mapped[str] = mapped_column(String(300), default="")
    timezone: Mapped[str] = mapped_column(String(64), default=DEFAULT_TIMEZONE)
    # {"mon": "08:30-17:30", ...}; a missing weekday is closed
    opening_hours: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    owner: Mapped[Organisation] = relationship(lazy="joined")
    resources: Mapped[list[Resource]] = relationship(back_populates="facility")
    # Loaded when used (e-mails to managers, the facility page), not with every facility: resources are loaded
    # with their facility on nearly every request, and an eager load cost each of them one more query.
    managers: Mapped[list[User]] = relationship(secondary="facility_manager", lazy="select")

    def name(self, locale: str) -> str:
        return self.name_en if locale == "en" else self.name_zh


class FacilityManager(Base):
    """Scopes the lab_manager role: a lab manager manages exactly the facilities listed here."""

    __tablename__ = "facility_manager"

    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True,
                                         index=True)
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
