"""Load the demo data set (web/demo/data.toml) idempotently: running it again changes nothing.

Rows are matched on natural keys: organisations by credit code, users by e-mail, facilities by their
Chinese name, resources by facility, Chinese name and model.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from importlib.resources import files
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from booking.catalog import search_text_of
from booking.categories import ServiceCategory
from booking.models import Facility, OperationMode, Resource, ResourceKind
from booking.permissions import grant_facility_manager
from core.accounts import services
from core.accounts.models import Organisation, Role, User
from core.timeutil import DEFAULT_TIMEZONE
from devices.models import Device
from devices.registry import DeviceData, add_device

DATA_FILE = files("web.demo") / "data.toml"
PILOT_LINE_RULES = {"granularity_min": 1440, "min_duration_min": 1440, "max_duration_min": 43200,
                    "horizon_days": 365, "cancellation_deadline_h": 72}


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

    resources: dict[str, int] = {}
    for row in data["resources"]:
        facility = facilities[row["facility"]]
        exists = db.scalar(select(Resource.id).where(
            Resource.facility_id == facility.id, Resource.name_zh == row["name_zh"], Resource.model == row["model"]))
        if exists is not None:
            resources[row["key"]] = exists
        else:
            resource = Resource(
                facility=facility, kind=ResourceKind(row["kind"]), name_zh=row["name_zh"], name_en=row["name_en"],
                description_zh=row.get("description_zh", ""), description_en=row.get("description_en", ""),
                model=row["model"], manufacturer=row["manufacturer"],
                original_value=Decimal(row["original_value_cny"]), category=ServiceCategory(row["category"]),
                operation_mode=OperationMode(row["operation_mode"]),
                voucher_eligible=row.get("voucher_eligible", True), specs=list(row.get("specs", [])))
            rules = dict(PILOT_LINE_RULES if resource.kind == ResourceKind.PILOT_LINE else {})
            rules.update(data.get("rules", {}).get(row["key"], {}))
            for name, value in rules.items():
                setattr(resource, name, value)
            resource.search_text = search_text_of(resource)
            db.add(resource)
            db.flush()
            resources[row["key"]] = resource.id
            report.count("resources")
        progress(1)
    db.flush()

    for row in data.get("devices", []):
        if db.scalar(select(Device.id).where(Device.device_id == row["device_id"])) is None:
            # the broker password is not kept: `labshare demo` issues fresh ones at every start
            add_device(db, None, DeviceData(
                device_id=row["device_id"], resource_id=resources[row["resource"]],
                usage_source=row["usage_source"], description=row.get("description", ""),
                power_threshold_w=row.get("power_threshold_w"), debounce_s=row.get("debounce_s", 60),
                heartbeat_timeout_s=row.get("heartbeat_timeout_s", 300)))
            report.count("devices")
        progress(1)

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
    return sum(len(data.get(k, [])) for k in ("organisations", "facilities", "resources", "devices", "users"))


def seed_demo_bookings(db: Session, *, now=None, days_back: int = 14, days_ahead: int = 21) -> int:
    """A believable calendar around today: past reservations completed (some no-shows), upcoming ones
    confirmed or pending, on working hours of the instruments. Runs only on a database without any
    reservation, so it is idempotent; returns how many it made."""
    import random
    from datetime import datetime, time, timedelta

    from sqlalchemy import func

    from booking.hours import parse_span
    from booking.models import Reservation, ReservationState
    from booking.rules import Rules
    from core.accounts.models import Role, UserRole
    from core.timeutil import utcnow

    if db.scalar(select(func.count()).select_from(Reservation)):
        return 0
    now = now or utcnow()
    rng = random.Random(20261125)  # noqa: S311 -- not for secrets: the same demo calendar every time
    bookers = list(db.scalars(select(User).join(UserRole).where(UserRole.role == Role.RESEARCHER)))
    purposes = ["材料表面形貌表征", "催化剂物相分析", "药物杂质定量", "电池极片截面观察", "Thin-film thickness check",
                "蛋白样品纯度检测", "Failure analysis of a PCB joint", "土壤重金属筛查"]
    made = 0
    for resource in db.scalars(select(Resource).where(Resource.kind == ResourceKind.INSTRUMENT)):
        rules = Rules.of(resource)
        tz: ZoneInfo = rules.tz
        today = now.astimezone(tz).date()
        for offset in range(-days_back, days_ahead):
            day = today + timedelta(days=offset)
            span = rules.hours.get(("mon", "tue", "wed", "thu", "fri", "sat", "sun")[day.weekday()])
            if not span or rng.random() < 0.45:
                continue
            open_min, close_min = parse_span(span)
            step = max(rules.granularity_min, 60)
            cursor = open_min + step * rng.randint(0, 2)
            for _ in range(rng.randint(1, 3)):
                length = max(rules.min_duration_min, step * rng.randint(1, 3))
                length = min(length, rules.max_duration_min)
                if cursor + length > close_min:
                    break
                start = datetime.combine(day, time(0), tzinfo=tz) + timedelta(minutes=cursor)
                end = start + timedelta(minutes=length)
                if offset < 0:
                    state = ReservationState.NO_SHOW if rng.random() < 0.08 else ReservationState.COMPLETED
                elif end.astimezone(tz) <= now.astimezone(tz) + timedelta(hours=1):
                    break
                else:
                    state = (ReservationState.PENDING if resource.approval_required and rng.random() < 0.5
                             else ReservationState.CONFIRMED)
                booker = rng.choice(bookers)
                db.add(Reservation(resource_id=resource.id, user_id=booker.id,
                                   billed_org_id=booker.organisation_id, starts_at=start, ends_at=end,
                                   state=state, purpose=rng.choice(purposes)))
                made += 1
                cursor += length + step * rng.randint(0, 2)
    db.flush()
    return made


def seed_demo_billing(db: Session, *, today: date | None = None) -> dict[str, int]:
    """Rate cards for every resource without one, the Sichuan reference voucher programme of the year, and a
    voucher for each eligible enterprise of the demo (idempotent). On SQLite the caller holds the write lock
    (`core.db.begin_write`), which granting vouchers needs."""
    from billing.models import BillingUnit, ChargeBasis, RateCard
    from billing.voucher_models import Voucher, VoucherProgramme
    from billing.vouchers import create_sichuan_reference_programme, grant_voucher, holder_refusal

    today = today or datetime.now(ZoneInfo(DEFAULT_TIMEZONE)).date()
    created = {"rate cards": 0, "voucher programmes": 0, "vouchers": 0}
    priced = set(db.scalars(select(RateCard.resource_id)))
    metered = set(db.scalars(select(Device.resource_id)))
    for resource in db.scalars(select(Resource).order_by(Resource.id)):
        if resource.id in priced:
            continue
        # in force since last year: the demo's history (web.demo.history) reaches back a year
        db.add(_demo_rate_card(resource, metered=resource.id in metered, valid_from=date(today.year - 1, 1, 1),
                               units=BillingUnit, bases=ChargeBasis, model=RateCard))
        created["rate cards"] += 1
    programme = db.scalar(select(VoucherProgramme).where(VoucherProgramme.code == f"SC-{today.year}"))
    if programme is None:
        programme = create_sichuan_reference_programme(db, None, today.year, budget=Decimal("5000000.00"))
        created["voucher programmes"] += 1
    holders = set(db.scalars(select(Voucher.holder_id).where(Voucher.programme_id == programme.id)))
    for org in db.scalars(select(Organisation).order_by(Organisation.id)):
        if org.id not in holders and holder_refusal(programme, org) is None:
            grant_voucher(db, None, programme.id, org.id, on=today)
            created["vouchers"] += 1
    db.flush()
    return created


def _demo_rate_card(resource: Resource, *, metered: bool, valid_from: date, units, bases, model):
    """Believable prices from the original value: instruments by the quarter hour at about 1/4000 of their value
    per hour, pilot lines by the day at about 1/1500; academic 80 %, internal 50 %."""
    pilot = resource.kind == ResourceKind.PILOT_LINE
    per_unit = resource.original_value / (Decimal(1500) if pilot else Decimal(4000))
    enterprise = max(Decimal(50), (per_unit / 10).quantize(Decimal(1)) * 10)
    technician = Decimal("120.00") if resource.operation_mode == OperationMode.TECHNICIAN else Decimal("0.00")
    return model(
        resource_id=resource.id, valid_from=valid_from, unit=units.DAY if pilot else units.QUARTER_HOUR,
        price_enterprise=enterprise, price_academic=(enterprise * Decimal("0.8")).quantize(Decimal("0.01")),
        price_internal=(enterprise * Decimal("0.5")).quantize(Decimal("0.01")), minimum_charge=Decimal("0.00"),
        setup_fee=Decimal("0.00"), technician_fee_per_hour=technician, no_show_fraction=Decimal("0.5"),
        late_cancellation_fraction=Decimal("0.3"), basis=bases.LARGER if metered else bases.BOOKED,
        note="demo tariff")
