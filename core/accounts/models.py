"""Tables of the accounts area: organisations and their declared affiliations, users, roles, API tokens."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, str_enum
from core.timeutil import utcnow


class OrganisationKind(enum.StrEnum):
    UNIVERSITY = "university"
    INSTITUTE = "institute"
    ENTERPRISE = "enterprise"
    GOVERNMENT = "government"


class OrganisationStatus(enum.StrEnum):
    """Self-registered organisations wait for a platform admin; those an admin creates start approved."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class Role(enum.StrEnum):
    RESEARCHER = "researcher"
    LAB_MANAGER = "lab_manager"  # scoped to facilities by booking.FacilityManager
    FINANCE = "finance"
    ADMIN = "admin"


class Locale(enum.StrEnum):
    ZH_CN = "zh_CN"
    EN = "en"


class Organisation(Base):
    __tablename__ = "organisation"

    id: Mapped[int] = mapped_column(primary_key=True)
    name_zh: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    credit_code: Mapped[str] = mapped_column(String(18), unique=True)
    kind: Mapped[OrganisationKind] = mapped_column(str_enum(OrganisationKind, "organisation_kind"))
    city: Mapped[str] = mapped_column(String(6), index=True)  # Sichuan 市州 code, see core.regions
    tech_sme: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[OrganisationStatus] = mapped_column(
        str_enum(OrganisationStatus, "organisation_status"), default=OrganisationStatus.APPROVED,
        server_default=OrganisationStatus.APPROVED.value, index=True)
    registered_at: Mapped[datetime | None]  # when it registered itself on the public page (None: added by an admin)
    decided_at: Mapped[datetime | None]  # when an admin approved or rejected the registration (who: the audit log)
    decision_reason: Mapped[str | None] = mapped_column(String(500))  # why it was rejected

    users: Mapped[list[User]] = relationship(back_populates="organisation")

    __table_args__ = (CheckConstraint("length(credit_code) = 18", name="credit_code_length"),)

    def name(self, locale: str) -> str:
        return self.name_en if locale == Locale.EN else self.name_zh

    @property
    def approved(self) -> bool:
        return self.status == OrganisationStatus.APPROVED


class Affiliation(Base):
    """A related-party relation an organisation has declared (vouchers may not be used between them)."""

    __tablename__ = "affiliation"

    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisation.id", ondelete="CASCADE"),
                                                 primary_key=True)
    related_id: Mapped[int] = mapped_column(ForeignKey("organisation.id", ondelete="CASCADE"),
                                            primary_key=True)
    declared_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (CheckConstraint("organisation_id <> related_id", name="not_self"),)


class User(Base):
    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name_zh: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))
    locale: Mapped[Locale] = mapped_column(str_enum(Locale, "locale"), default=Locale.ZH_CN)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisation.id"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]

    organisation: Mapped[Organisation] = relationship(back_populates="users", lazy="joined")
    role_grants: Mapped[list[UserRole]] = relationship(back_populates="user", lazy="selectin",
                                                       cascade="all, delete-orphan")

    __table_args__ = (CheckConstraint("email = lower(email)", name="email_lowercase"),)

    # The session-user protocol the web layer expects (Flask-Login's), spelled out without importing it.
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str:
        return str(self.id)

    @property
    def roles(self) -> frozenset[Role]:
        return frozenset(grant.role for grant in self.role_grants)

    def has_role(self, *roles: Role) -> bool:
        return not self.roles.isdisjoint(roles)

    def name(self, locale: str) -> str:
        return self.name_en if locale == Locale.EN else self.name_zh


class UserRole(Base):
    __tablename__ = "user_role"

    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[Role] = mapped_column(str_enum(Role, "role"), primary_key=True)
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(back_populates="role_grants")


class ApiToken(Base):
    """A named API token. Only a SHA-256 digest of the secret is stored; the secret is shown once."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))  # shown in lists so users can tell tokens apart
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(lazy="joined")

    __table_args__ = (UniqueConstraint("user_id", "name"),)

    @property
    def active(self) -> bool:
        return self.revoked_at is None
