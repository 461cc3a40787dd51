"""Billing benchmark: reconciling and closing a month for 1,000 instruments with 50,000 reservations.

    python bench/billing.py [--output bench/results/billing.txt] [--backends postgresql,sqlite]

For each backend: a fresh database (a new PostgreSQL database on LABSHARE_BENCH_PG_ADMIN_URL, default
postgresql://postgres@127.0.0.1:5432/postgres, dropped at the end; a SQLite file), migrated and filled by bulk
inserts: 10 facilities, 1,000 instruments each with one measuring device and a rate card, 200 customer
organisations of every kind, and September 2026 booked 50 times per instrument (2 h each) with the usage
sessions the devices measured: mostly used as booked, some early finishes, overruns, marked no-shows, late
cancellations, and 1,000 unbooked sessions whose operator is a known user. Then, each in a fresh child
process (so that the peak resident memory is that of the billing run alone, not of the fill):

  1. `labshare billing reconcile --month 2026-09` (the service behind it): items for every reservation;
  2. the open exceptions (overruns) are accepted, as a lab manager would (one UPDATE, resolved_by set, so
     that closing's own reconciliation keeps the decision);
  3. `close_period` for 2026-09: charges, lines and statements.

The same runs with 10 reservations per instrument (10,000) show whether memory grows with the reservations.
Printed and written to bench/results/billing.txt: seconds per step and the child's peak resident memory
(VmHWM; the baseline is the child's RSS after its imports, before the step).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/billing.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402
from sqlalchemy import func, insert, select, text, update  # noqa: E402

from billing.models import (  # noqa: E402
    BillingUnit,
    ChargeBasis,
    ItemStatus,
    RateCard,
    ReconciliationItem,
    Resolution,
)
from booking.categories import ServiceCategory  # noqa: E402
from booking.models import (  # noqa: E402
    Facility,
    OperationMode,
    Reservation,
    ReservationKind,
    ReservationState,
    Resource,
    ResourceKind,
    ResourceStatus,
)
from core.accounts.credit_code import make_credit_code  # noqa: E402
from core.accounts.models import Locale, Organisation, OrganisationKind, User  # noqa: E402
from core.db import make_engine  # noqa: E402
from devices.models import Device, UsageSession, UsageSource  # noqa: E402
from migrations import runner  # noqa: E402

PG_ADMIN_URL = os.environ.get("LABSHARE_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
MONTH = "2026-09"
MONTH_START = datetime(2026, 9, 1, 0, 0, tzinfo=UTC) - timedelta(hours=8)  # midnight in Shanghai
INSTRUMENTS = 1_000
CUSTOMERS = 200
UNBOOKED = 1_000
TARGET_S = 30.0
NS = 1_000_000_000


@contextlib.contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / f'billing-{secrets.token_hex(3)}.db'}"
        return
    name = f"labshare_bench_billing_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(url: str, per_instrument: int) -> dict[str, float]:
    """The data set, by bulk inserts; returns counts and the fill time."""
    started = time.perf_counter()
    runner.upgrade(url)
    engine = make_engine(url)
    now = datetime.now(UTC)
    kinds = [OrganisationKind.ENTERPRISE, OrganisationKind.UNIVERSITY, OrganisationKind.INSTITUTE,
             OrganisationKind.GOVERNMENT]
    with engine.begin() as conn:
        conn.execute(insert(Organisation), [
            dict(name_zh=f"基准单位{i}", name_en=f"Bench organisation {i}",
                 credit_code=make_credit_code("9", "1", "510100", f"{80000000 + i:08d}"),
                 kind=OrganisationKind.INSTITUTE if i == 0 else kinds[i % 4], city="510100", tech_sme=i % 4 == 0,
                 created_at=now) for i in range(CUSTOMERS + 1)])
        org_ids = conn.execute(select(Organisation.id).order_by(Organisation.id)).scalars().all()
        owner_id, customers = org_ids[0], org_ids[1:]
        conn.execute(insert(User), [
            dict(email=f"billing{i}@example.test", name_zh=f"客户{i}", name_en=f"Customer {i}",
                 password_hash="!", locale=Locale.ZH_CN, organisation_id=org, active=True,  # noqa: S106
                 created_at=now) for i, org in enumerate(customers)])
        users = conn.execute(select(User.id, User.organisation_id, User.email).order_by(User.id)).all()
        conn.execute(insert(Facility), [dict(name_zh=f"基准实验室{i}", name_en=f"Bench facility {i}", owner_id=owner_id,
                                             city="510100", address_zh="", address_en="", timezone="Asia/Shanghai",
                                             opening_hours={}, created_at=now) for i in range(10)])
        facility_ids = conn.execute(select(Facility.id).order_by(Facility.id)).scalars().all()
        conn.execute(insert(Resource), [
            dict(facility_id=facility_ids[i % 10], kind=ResourceKind.INSTRUMENT, name_zh=f"仪器{i:04d}",
                 name_en=f"Instrument {i:04d}", description_zh="", description_en="", model=f"M-{i}",
                 manufacturer="Bench", original_value=Decimal(600_000), category=ServiceCategory.TESTING,
                 operation_mode=OperationMode.BOTH, voucher_eligible=i % 3 != 0, status=ResourceStatus.ACTIVE,
                 specs=[], search_text=f"instrument {i:04d}", granularity_min=15, min_duration_min=15,
                 max_duration_min=480, lead_time_min=0, horizon_days=90, bookable_hours={}, approval_required=False,
                 qualification_required=False, max_active_per_user=None, cancellation_deadline_h=24,
                 batch_days=None, created_at=now) for i in range(INSTRUMENTS)])
        resource_ids = conn.execute(select(Resource.id).order_by(Resource.id)).scalars().all()
        conn.execute(insert(Device), [
            dict(device_id=f"bench-{i:04d}", resource_id=r, description="", usage_source=UsageSource.STATUS,
                 power_threshold_w=None, debounce_s=60, heartbeat_timeout_s=300, enabled=True, credential_hash="!",
                 created_at=now) for i, r in enumerate(resource_ids)])
        devices = dict(conn.execute(select(Device.resource_id, Device.id)).all())
        units = [BillingUnit.QUARTER_HOUR, BillingUnit.HOUR, BillingUnit.SAMPLE, BillingUnit.RUN]
        bases = [ChargeBasis.BOOKED, ChargeBasis.MEASURED, ChargeBasis.LARGER]
        conn.execute(insert(RateCard), [
            dict(resource_id=r, valid_from=date(2026, 1, 1), valid_to=None, unit=units[i % 4],
                 price_internal=Decimal("120.00"), price_academic=Decimal("240.50"),
                 price_enterprise=Decimal("480.75"), minimum_charge=Decimal("100.00") if i % 5 == 0 else Decimal(0),
                 setup_fee=Decimal("30.00") if i % 2 else Decimal(0), technician_fee_per_hour=Decimal("90.00"),
                 no_show_fraction=Decimal("0.5"), late_cancellation_fraction=Decimal("0.25"), basis=bases[i % 3],
                 tolerance_min=15, note="", created_by_id=None, created_at=now) for i, r in enumerate(resource_ids)])

        reservations, sessions = [], []
        for n, resource_id in enumerate(resource_ids):
            for j in range(per_instrument):
                user_id, org_id, _ = users[(n * 7 + j) % len(users)]
                start = MONTH_START + timedelta(days=j // 2 % 29, hours=9 + 4 * (j % 2))
                end = start + timedelta(hours=2)
                roll = (n * 31 + j * 17) % 100
                state = ReservationState.COMPLETED
                late = False
                if roll < 3:
                    state = ReservationState.NO_SHOW
                elif roll < 5:
                    state, late = ReservationState.CANCELLED, True
                reservations.append(dict(
                    resource_id=resource_id, user_id=user_id, billed_org_id=org_id, starts_at=start, ends_at=end,
                    state=state, kind=ReservationKind.TECHNICIAN if roll % 10 == 7 else ReservationKind.SELF_SERVICE,
                    purpose="bench", sample_count=1 + j % 4, late_cancellation=late, decision_note="",
                    created_at=now, updated_at=now))
                if state != ReservationState.COMPLETED:
                    continue
                if roll < 90:
                    s, e = start + timedelta(minutes=3), end - timedelta(minutes=5)  # used
                elif roll < 95:
                    s, e = start, start + timedelta(minutes=50)  # early finish
                else:
                    s, e = start, end + timedelta(minutes=40)  # overrun: an exception
                sessions.append((devices[resource_id], s, e, "", 1 + j % 3))
        for k in range(UNBOOKED):  # evening walk-up use by a known operator
            resource_id = resource_ids[k % len(resource_ids)]
            s = MONTH_START + timedelta(days=k % 28, hours=19)
            sessions.append((devices[resource_id], s, s + timedelta(minutes=30 + k % 60), users[k % len(users)][2],
                             None))
        for chunk in range(0, len(reservations), 10_000):
            conn.execute(insert(Reservation), reservations[chunk:chunk + 10_000])
        rows = []
        for device_pk, s, e, operator, samples in sessions:
            start_ns, end_ns = int(s.timestamp()) * NS, int(e.timestamp()) * NS
            rows.append(dict(device_pk=device_pk, start_ns=start_ns, end_ns=end_ns, started_at=s, ended_at=e,
                             truncated=False, run_id="", operator=operator, samples=samples,
                             start_decided_ns=start_ns, end_decided_ns=end_ns, updated_at=now))
        for chunk in range(0, len(rows), 10_000):
            conn.execute(insert(UsageSession), rows[chunk:chunk + 10_000])
        if engine.dialect.name == "postgresql":
            conn.execute(text("ANALYZE"))
    with engine.connect() as conn:
        counted = {"reservations": conn.scalar(select(func.count()).select_from(Reservation)),
                   "sessions": conn.scalar(select(func.count()).select_from(UsageSession))}
    engine.dispose()
    return {**counted, "fill_s": time.perf_counter() - started}


def memory_mib(field: str) -> float:
    """VmHWM (peak) or VmRSS (now) of this process in MiB. Not getrusage's ru_maxrss: Linux carries that over
    from the parent through fork and exec, so a child would report the fill's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024  # not Linux: the best there is


def child(url: str, step: str) -> None:
    """One step in this (fresh) process; prints a JSON line with its figures."""
    from billing.charges import close_period
    from billing.reconcile import reconcile_period
    from core.db import make_sessionmaker

    engine = make_engine(url)
    rss_before = memory_mib("VmRSS")
    started = time.perf_counter()
    with make_sessionmaker(engine)() as db:
        if step == "reconcile":
            report = reconcile_period(db, None, MONTH)
            figures = {"items": report.created, "open_exceptions": report.open_exceptions,
                       "by_kind": dict(report.by_kind)}
        elif step == "resolve":
            result = db.execute(update(ReconciliationItem).where(ReconciliationItem.status == ItemStatus.OPEN)
                                .values(status=ItemStatus.RESOLVED, resolution=Resolution.ACCEPT,
                                        reason="bench: accepted", resolved_at=datetime.now(UTC),
                                        resolved_by_id=select(func.min(User.id)).scalar_subquery()))
            figures = {"resolved": result.rowcount}
        else:
            report = close_period(db, None, MONTH)
            figures = {"charges": report.charges, "statements": report.statements, "total": str(report.total),
                       "waived": report.waived}
        db.commit()
    elapsed = time.perf_counter() - started
    engine.dispose()
    print(json.dumps({"step": step, "seconds": elapsed, "peak_rss_mib": memory_mib("VmHWM"),
                      "baseline_rss_mib": rss_before, **figures}))


def run_step(url: str, step: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", step, "--url", url], check=True,
                         capture_output=True, text=True, cwd=REPO_ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(backend: str, per_instrument: int, workdir: Path) -> dict:
    with database(backend, workdir) as url:
        data = fill(url, per_instrument)
        steps = {step: run_step(url, step) for step in ("reconcile", "resolve", "close")}
    return {"backend": backend, "per_instrument": per_instrument, **data, "steps": steps}


def report_lines(results: list[dict]) -> list[str]:
    lines = [
        "LabShare billing benchmark (bench/billing.py)",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, {os.cpu_count()} CPUs; "
        "each step in a fresh child process",
        f"data: {INSTRUMENTS:,} instruments with one device and one rate card each, {CUSTOMERS} customer "
        f"organisations, {MONTH}; per instrument N reservations of 2 h with their measured sessions, plus "
        f"{UNBOOKED:,} unbooked sessions",
        "",
        f"{'backend':<11}{'reservations':>13}{'sessions':>10}{'reconcile':>11}{'close':>9}{'recon+close':>13}"
        f"{'peak RSS recon':>16}{'peak RSS close':>16}{'charges':>9}{'statements':>11}  target",
    ]
    for r in results:
        rec, close = r["steps"]["reconcile"], r["steps"]["close"]
        both = rec["seconds"] + close["seconds"]
        verdict = "met" if both < TARGET_S else "MISSED"
        lines.append(
            f"{r['backend']:<11}{r['reservations']:>13,}{r['sessions']:>10,}{rec['seconds']:>10.1f}s"
            f"{close['seconds']:>8.1f}s{both:>12.1f}s{rec['peak_rss_mib']:>12.0f} MiB{close['peak_rss_mib']:>12.0f} MiB"
            f"{close['charges']:>9,}{close['statements']:>11}  "
            + (f"< {TARGET_S:.0f} s {verdict}" if r["reservations"] >= 50_000 else "(memory comparison)"))
    lines.append("")
    for r in results:
        rec = r["steps"]["reconcile"]
        lines.append(f"{r['backend']} {r['reservations']:,}: items by kind {rec['by_kind']}, "
                     f"{rec['open_exceptions']} exceptions accepted before closing; fill {r['fill_s']:.1f} s; "
                     f"child RSS before the step {rec['baseline_rss_mib']:.0f} MiB; total billed "
                     f"{r['steps']['close']['total']} CNY")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(REPO_ROOT / "bench" / "results" / "billing.txt"))
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument("--sizes", default="50,10", help="reservations per instrument, comma-separated")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.url, args.child)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="labshare-bench-billing-") as tmp:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            for size in [int(s) for s in args.sizes.split(",")]:
                result = bench(backend, size, Path(tmp))
                results.append(result)
                print(json.dumps(result), file=sys.stderr)
    lines = report_lines(results)
    print("\n".join(lines))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
