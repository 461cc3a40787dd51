"""Load the demo data set (web/demo/data.toml) idempotently: running it again changes nothing.

Rows are matched on natural keys: organisations by credit code, users by e-mail, facilities by their
Chinese name, resources by facility, Chinese name and model.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from importlib.resources import files
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from booking.categories import ServiceCategory
from booking.models import Facility, OperationMode, Resource, ResourceKind
from booking.permissions import grant_facility_manager
from core.accounts import services
from core.accounts.models import Organisation, Role, User

DATA_FILE = files("web.demo") / "data.toml"


@dataclass
class SeedReport:
    created: dict[str, int] = field(default_factory=dict)
    users: list[dict[str, Any]] = field(default_factory=list)

    def count(self, kind: str) -> None:
        self.created[kind] = self.created.get(kind, 0) + 1


def load_data(path=None) -> dict[str, Any]:
    with (path or DATA_FILE).open("rb") as fh:
        return tomllib.load(fh)


def seed_demo(db: Session, data: dict[str, Any] | None = None,
              progress: Callable[[int], None] = lambda n: None) -> SeedReport:
    """Create whatever of the demo data set is missing; the caller commits."""
    data = data or load_data()
    report = SeedReport()
    orgs: dict[str, Organisation] = {}
    for row in data["organisations"]:
        org = db.scalar(select(Organisation).where(Organisation.credit_code == row["credit_code"]))
        if org is None:
            org = services.create_organisation(db, None, services.OrganisationData(
                name_zh=row["name_zh"], name_en=row["name_en"], credit_code=row["credit_code"],
                kind=row["kind"], city=row["city"], tech_sme=row.get("tech_sme", False)))
            report.count("organisations")
        orgs[row["key"]] = org
        progress(1)
    for row in data["organisations"]:
        for related in row.get("affiliations", []):
            services.declare_affiliation(db, None, orgs[row["key"]], orgs[related])

    facilities: dict[str, Facility] = {}
    for row in data["facilities"]:
        facility = db.scalar(select(Facility).where(Facility.name_zh == row["name_zh"]))
        if facility is None:
            facility = Facility(
                name_zh=row["name_zh"], name_en=row["name_en"], owner=orgs[row["owner"]], city=row["city"],
                address_zh=row.get("address_zh", ""), address_en=row.get("address_en", ""),
                timezone=row.get("timezone", "Asia/Shanghai"), opening_hours=dict(row.get("opening_hours", {})))
            db.add(facility)
            report.count("facilities")
        facilities[row["key"]] = facility
        progress(1)
    db.flush()

    for row in data["resources"]:
        facility = facilities[row["facility"]]
        exists = db.scalar(select(Resource.id).where(
            Resource.facility_id == facility.id, Resource.name_zh == row["name_zh"], Resource.model == row["model"]))
        if exists is None:
            db.add(Resource(
                facility=facility, kind=ResourceKind(row["kind"]), name_zh=row["name_zh"], name_en=row["name_en"],
                description_zh=row.get("description_zh", ""), description_en=row.get("description_en", ""),
                model=row["model"], manufacturer=row["manufacturer"],
                original_value=Decimal(row["original_value_cny"]), category=ServiceCategory(row["category"]),
                operation_mode=OperationMode(row["operation_mode"]),
                voucher_eligible=row.get("voucher_eligible", True), specs=list(row.get("specs", []))))
            report.count("resources")
        progress(1)
    db.flush()

    for row in data["users"]:
        user = db.scalar(select(User).where(User.email == services.normalise_email(row["email"])))
        if user is None:
            user = services.create_user(
                db, None, email=row["email"], password=row["password"], organisation=orgs[row["org"]],
                name_zh=row["name_zh"], name_en=row.get("name_en", ""), roles=row["roles"],
                locale=row.get("locale", "zh_CN"))
            report.count("users")
        for key in row.get("facilities", []):
            grant_facility_manager(db, None, facilities[key].id, user)
        report.users.append({"email": user.email, "password": row["password"],
                             "roles": [Role(r).value for r in row["roles"]]})
        progress(1)
    db.flush()
    return report


def item_count(data: dict[str, Any]) -> int:
    return sum(len(data[k]) for k in ("organisations", "facilities", "resources", "users"))
