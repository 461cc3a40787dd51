"""The worked example of the sharing-report tests: one facility's year, small enough to count by hand.

The facility (Shanghai time, open Mon–Fri 08:00–18:00) owns a metered instrument R and an unmetered U. Its
year holds an external booking with an overrun, an internal one, a no-show, unbooked use (one charged to an
academic customer), use by a declared affiliate, a session across New Year and one still open at year end.
Expected for R in 2026: 9.92 h effective, 4.42 h external (44.54 %), 4 bookings due and 1 no-show,
¥1,250.00 income of which ¥1,150.00 external and ¥500.00 paid by a voucher.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from billing import vouchers
from billing.models import ChargeKind, ChargeLineKind, CustomerClass
from booking.models import ReservationState
from core.accounts.models import Affiliation, OrganisationKind, Role
from tests.billing.factories import make_rate_card, make_usage_session
from tests.billing.voucher_factories import make_charge, make_holder, make_programme, make_voucher
from tests.factories import (
    make_blackout,
    make_device,
    make_facility,
    make_organisation,
    make_reservation,
    make_resource,
    make_user,
)

NOW = datetime(2027, 1, 10, tzinfo=UTC)
WEEKDAYS = dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "08:00-18:00")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def build_year(db) -> dict:
    """The worked example of this module's docstring, flushed; returns its named rows."""
    owner = make_organisation(db, kind=OrganisationKind.INSTITUTE, name_zh="西南材料研究所", name_en="SW Materials")
    affiliate = make_organisation(db, kind=OrganisationKind.UNIVERSITY)
    db.add(Affiliation(organisation_id=owner.id, related_id=affiliate.id))
    enterprise = make_holder(db, kind=OrganisationKind.ENTERPRISE)
    academic = make_organisation(db, kind=OrganisationKind.UNIVERSITY)
    manager = make_user(db, roles=(Role.LAB_MANAGER,), name_zh="王经理")
    facility = make_facility(db, owner=owner, opening_hours=WEEKDAYS, managers=(manager,), name_zh="分析测试中心",
                             name_en="Analysis Centre", city="510100")
    r = make_resource(db, facility=facility, name_zh="扫描电镜R", name_en="SEM R", model="R-1")
    u = make_resource(db, facility=facility, name_zh="离心机U", name_en="Centrifuge U", model="U-1")
    make_rate_card(db, r)
    device = make_device(db, resource=r)
    users = {name: make_user(db, organisation=org) for name, org in
             (("e", enterprise), ("o", owner), ("a", academic), ("p", affiliate))}

    def booking(resource, user, start, end, state=ReservationState.COMPLETED, org=None):
        return make_reservation(db, resource=resource, user=users[user], starts_at=start, ends_at=end, state=state,
                                billed_org_id=(org or users[user].organisation).id)

    # 1. external, overrun of 30 min: 3 h 25 min external
    booking(r, "e", utc(2026, 3, 16, 1), utc(2026, 3, 16, 4))
    make_usage_session(db, device, utc(2026, 3, 16, 1, 5), utc(2026, 3, 16, 4, 30))
    # 2. internal: 1 h
    booking(r, "o", utc(2026, 3, 17, 1), utc(2026, 3, 17, 3))
    make_usage_session(db, device, utc(2026, 3, 17, 1), utc(2026, 3, 17, 2))
    # 3. external no-show (confirmed, nothing measured)
    booking(r, "e", utc(2026, 3, 18, 1), utc(2026, 3, 18, 2), state=ReservationState.CONFIRMED)
    # 4. unbooked, uncharged: the facility's own hour
    make_usage_session(db, device, utc(2026, 3, 19, 6), utc(2026, 3, 19, 7))
    # 5. unbooked, charged to the academic customer: external hour
    s5 = make_usage_session(db, device, utc(2026, 3, 20, 6), utc(2026, 3, 20, 7))
    # 6. the affiliate's booking: internal 2 h
    booking(r, "p", utc(2026, 3, 23, 1), utc(2026, 3, 23, 3))
    make_usage_session(db, device, utc(2026, 3, 23, 1), utc(2026, 3, 23, 3))
    # 7. across New Year (23:00–01:00 local): one hour in 2026
    make_usage_session(db, device, utc(2025, 12, 31, 15), utc(2025, 12, 31, 17))
    # 8. still open at the end of the year (from 23:30 local): half an hour in 2026
    make_usage_session(db, device, utc(2026, 12, 31, 15, 30), None)
    # cancelled bookings and use in another year count for nothing
    booking(r, "e", utc(2026, 5, 4, 1), utc(2026, 5, 4, 3), state=ReservationState.CANCELLED)
    make_usage_session(db, device, utc(2025, 6, 2, 1), utc(2025, 6, 2, 3))
    # a day of maintenance on a Monday: ten bookable hours fewer
    make_blackout(db, resource=r, starts_at=utc(2026, 3, 8, 16), ends_at=utc(2026, 3, 9, 16))
    # U has no device: its completed bookings stand in for use
    booking(u, "e", utc(2026, 4, 6, 1), utc(2026, 4, 6, 3))
    booking(u, "o", utc(2026, 4, 7, 1), utc(2026, 4, 7, 3), state=ReservationState.CONFIRMED)

    # money: 1,000 to the enterprise (half paid by its voucher), 100 internal, 200 − 50 credit academic
    programme = make_programme(db)
    voucher = make_voucher(db, programme, enterprise)
    external_charge = make_charge(db, enterprise, r, service_date=date(2026, 3, 16))
    vouchers.apply_voucher_to_charge(db, None, voucher.id, external_charge.id, on=date(2026, 3, 16))
    make_charge(db, owner, r, service_date=date(2026, 3, 17), customer_class=CustomerClass.INTERNAL,
                lines=((ChargeLineKind.USAGE, "100.00"),))
    charged = make_charge(db, academic, r, service_date=date(2026, 3, 20), customer_class=CustomerClass.ACADEMIC,
                          lines=((ChargeLineKind.USAGE, "200.00"),), usage_session_id=s5.id,
                          user_id=users["a"].id)
    make_charge(db, academic, r, service_date=date(2026, 3, 25), customer_class=CustomerClass.ACADEMIC,
                lines=((ChargeLineKind.CREDIT, "-50.00"),), kind=ChargeKind.CREDIT_NOTE, credit_of_id=charged.id)
    make_charge(db, enterprise, r, service_date=date(2027, 1, 4))  # next year's
    return {"r": r, "u": u, "facility": facility, "manager": manager, "users": users, "owner": owner}
