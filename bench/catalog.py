"""Catalog benchmark at provincial scale: search, time-first search and the yearly sharing report.

    python bench/catalog.py [--output bench/results/catalog.txt] [--resources 10000] [--queries 300] [--keep]
    python bench/catalog.py --database NAME   # measure an existing (kept) database again, without building

PostgreSQL only (the targets are PostgreSQL's): a fresh database on LABSHARE_BENCH_PG_ADMIN_URL (default
postgresql://postgres@127.0.0.1:5432/postgres), migrated with alembic, filled by COPY and multi-row inserts,
dropped at the end unless --keep. The data set, for N resources (default 10,000):

  - 200 owning organisations (universities, institutes, enterprises, government bodies) each running one
    facility, spread over Sichuan's 21 市州 (Chengdu the most), 1,000 customer organisations (enterprises,
    universities, institutes; a third of the enterprises tech SMEs), 3,000 users;
  - N resources (about 93 % instruments, 7 % pilot lines) with real instrument names, models and makers,
    原值 500,000 to 30,000,000 CNY, all 11 service categories, booking rules of every kind (defaults most
    often), one measuring device and one rate card each;
  - the previous calendar year (in Asia/Shanghai) of reservations in morning, afternoon and evening slots,
    per instrument between none and about 2,000 effective hours; completed (some still confirmed), no-shows
    and cancellations; billed to the owner (internal) or to an outside organisation; a usage session for
    every used reservation and some unbooked walk-up sessions; a closed billing period per month and one
    charge per used external reservation;
  - the coming eight weeks of live (confirmed and pending) reservations and some maintenance blackouts.

Measured (in this process, on one SQLAlchemy session, after a warm-up): booking.catalog.search over a mix of
free-text and filtered queries with pages 1-5 and every sort; time-first search (free_from/free_to windows in
the coming weeks, with and without filters); and reports.sharing.instrument_figures for the whole year, when
that module exists. Each figure is printed with its target, the ratio to the target, and PASS or MISS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/catalog.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402
from sqlalchemy import func, insert, select, text  # noqa: E402

from billing.models import BillingPeriod, BillingUnit, Charge, ChargeBasis, PeriodState, RateCard  # noqa: E402
from booking.catalog import CatalogQuery, search, search_text_of  # noqa: E402
from booking.categories import ServiceCategory  # noqa: E402
from booking.hours import ALL_DAY  # noqa: E402
from booking.models import (  # noqa: E402
    Blackout,
    Facility,
    OperationMode,
    Reservation,
    Resource,
    ResourceKind,
    ResourceStatus,
)
from core.accounts.credit_code import make_credit_code  # noqa: E402
from core.accounts.models import Locale, Organisation, OrganisationKind, User  # noqa: E402
from core.db import make_engine, make_sessionmaker  # noqa: E402
from core.regions import SICHUAN_CITIES  # noqa: E402
from devices.models import Device, UsageSession, UsageSource  # noqa: E402
from migrations import runner  # noqa: E402

SH = ZoneInfo("Asia/Shanghai")
PG_ADMIN_URL = os.environ.get("LABSHARE_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
OWNERS = 200
CUSTOMERS = 1_000
USERS = 3_000
NS = 1_000_000_000
TARGETS_MS = {"search": 100.0, "time_first": 100.0}
REPORT_TARGET_S = 60.0

# (name_zh, name_en, category, [(manufacturer, model), ...], original value range in 10,000 CNY, spec)
INSTRUMENTS = [
    ("扫描电子显微镜", "Scanning electron microscope (SEM)", "testing",
     [("ZEISS", "Sigma 300"), ("Hitachi", "SU8010"), ("Thermo Fisher", "Apreo 2"), ("JEOL", "JSM-7800F")],
     (150, 600), ("分辨率", "Resolution", "0.8 nm")),
    ("透射电子显微镜", "Transmission electron microscope (TEM)", "testing",
     [("JEOL", "JEM-2100F"), ("Thermo Fisher", "Talos F200X"), ("Thermo Fisher", "Titan Themis")],
     (500, 2000), ("点分辨率", "Point resolution", "0.19 nm")),
    ("冷冻电子显微镜", "Cryo-electron microscope", "research_development",
     [("Thermo Fisher", "Krios G4"), ("Thermo Fisher", "Glacios 2")], (1500, 3000),
     ("加速电压", "Accelerating voltage", "300 kV")),
    ("聚焦离子束扫描电镜", "Focused ion beam SEM (FIB-SEM)", "testing",
     [("Thermo Fisher", "Helios 5 UC"), ("ZEISS", "Crossbeam 550")],
     (600, 1500), ("离子束分辨率", "Ion beam resolution", "2.5 nm")),
    ("核磁共振波谱仪", "NMR spectrometer", "research_development",
     [("Bruker", "AVANCE NEO 600"), ("Bruker", "AVANCE III HD 400"), ("JEOL", "ECZ500R")], (300, 1200),
     ("磁场强度", "Field", "14.1 T")),
    ("X射线衍射仪", "X-ray diffractometer (XRD)", "testing",
     [("Bruker", "D8 Advance"), ("Rigaku", "SmartLab"), ("Malvern Panalytical", "Empyrean")], (80, 300),
     ("测角仪半径", "Goniometer radius", "280 mm")),
    ("高效液相色谱仪", "High performance liquid chromatograph (HPLC)", "testing",
     [("Agilent", "1260 Infinity II"), ("Waters", "Alliance e2695"), ("Shimadzu", "LC-20AD")], (50, 120),
     ("流速范围", "Flow range", "0.001-10 mL/min")),
    ("气相色谱-质谱联用仪", "Gas chromatograph-mass spectrometer (GC-MS)", "testing",
     [("Agilent", "8890-5977B"), ("Shimadzu", "GCMS-QP2020 NX"), ("Thermo Fisher", "ISQ 7000")], (60, 200),
     ("质量范围", "Mass range", "1.5-1090 u")),
    ("液相色谱-质谱联用仪", "Liquid chromatograph-mass spectrometer (LC-MS)", "testing",
     [("Waters", "Xevo TQ-S"), ("SCIEX", "Triple Quad 6500+"), ("Thermo Fisher", "Q Exactive")], (200, 600),
     ("分辨率", "Resolution", "140,000 FWHM")),
    ("电感耦合等离子体质谱仪", "Inductively coupled plasma mass spectrometer (ICP-MS)", "testing",
     [("Agilent", "7900"), ("Thermo Fisher", "iCAP RQ"), ("PerkinElmer", "NexION 2000")], (150, 400),
     ("检出限", "Detection limit", "< 1 ppt")),
    ("电感耦合等离子体发射光谱仪", "ICP optical emission spectrometer (ICP-OES)", "testing",
     [("Agilent", "5110"), ("Thermo Fisher", "iCAP PRO")], (60, 150), ("波长范围", "Wavelength", "167-785 nm")),
    ("激光共聚焦显微镜", "Confocal laser scanning microscope", "research_development",
     [("ZEISS", "LSM 980"), ("Leica", "TCS SP8"), ("Nikon", "A1R HD25")], (200, 800),
     ("激光线", "Laser lines", "405/488/561/640 nm")),
    ("流式细胞仪", "Flow cytometer", "research_development",
     [("BD", "FACSCelesta"), ("Beckman Coulter", "CytoFLEX S"), ("BD", "FACSAria III")], (80, 500),
     ("检测通道", "Channels", "13")),
    ("原子力显微镜", "Atomic force microscope (AFM)", "research_development",
     [("Bruker", "Dimension Icon"), ("Park Systems", "NX10"), ("Oxford Instruments", "MFP-3D")], (100, 400),
     ("扫描范围", "Scan range", "90 μm")),
    ("X射线光电子能谱仪", "X-ray photoelectron spectrometer (XPS)", "testing",
     [("Thermo Fisher", "ESCALAB Xi+"), ("Kratos", "AXIS Supra+")],
     (400, 900), ("能量分辨率", "Energy resolution", "0.45 eV")),
    ("傅里叶变换红外光谱仪", "Fourier transform infrared spectrometer (FTIR)", "testing",
     [("Thermo Fisher", "Nicolet iS50"), ("Bruker", "INVENIO R")], (50, 150), ("光谱范围", "Range", "7800-350 cm-1")),
    ("激光拉曼光谱仪", "Raman spectrometer", "testing",
     [("Horiba", "LabRAM HR Evolution"), ("Renishaw", "inVia Qontor")],
     (80, 250), ("光谱分辨率", "Resolution", "0.3 cm-1")),
    ("热重分析仪", "Thermogravimetric analyser (TGA)", "testing",
     [("NETZSCH", "TG 209 F1"), ("TA Instruments", "TGA 5500")], (50, 100), ("温度范围", "Temperature", "RT-1100 °C")),
    ("差示扫描量热仪", "Differential scanning calorimeter (DSC)", "testing",
     [("TA Instruments", "DSC 2500"), ("NETZSCH", "DSC 214 Polyma")],
     (50, 90), ("温度范围", "Temperature", "-180-700 °C")),
    ("万能材料试验机", "Universal testing machine", "engineering",
     [("Instron", "5985"), ("MTS", "Criterion 45"), ("ZwickRoell", "Z250")],
     (50, 200), ("最大载荷", "Max load", "250 kN")),
    ("三坐标测量机", "Coordinate measuring machine (CMM)", "engineering",
     [("ZEISS", "CONTURA"), ("Hexagon", "Global S")], (80, 300), ("测量精度", "Accuracy", "1.5 μm")),
    ("工业CT", "Industrial computed tomography (CT)", "testing",
     [("ZEISS", "METROTOM 1500"), ("Nikon", "XT H 225")], (300, 1000), ("体素尺寸", "Voxel size", "4 μm")),
    ("基因测序仪", "DNA sequencer", "research_development",
     [("Illumina", "NovaSeq 6000"), ("MGI", "DNBSEQ-T7")], (300, 1200), ("通量", "Throughput", "6 Tb/run")),
    ("实时荧光定量PCR仪", "Real-time PCR system (qPCR)", "research_development",
     [("Bio-Rad", "CFX96"), ("Thermo Fisher", "QuantStudio 5")], (50, 80), ("通道", "Channels", "5")),
    ("高性能计算集群", "High performance computing cluster", "information_technology",
     [("曙光", "TC6600"), ("浪潮", "NF5280M6")], (500, 3000), ("峰值性能", "Peak", "2 PFLOPS")),
    ("电磁兼容测试系统", "EMC test system", "testing",
     [("Rohde & Schwarz", "ESW44"), ("Keysight", "N9048B")], (300, 1500), ("频率范围", "Frequency", "2 Hz-44 GHz")),
    ("比表面积及孔径分析仪", "Surface area and porosity analyser (BET)", "testing",
     [("Micromeritics", "ASAP 2460"), ("Anton Paar", "Autosorb iQ")],
     (50, 120), ("孔径范围", "Pore size", "0.35-500 nm")),
    ("激光粒度分析仪", "Laser particle size analyser", "testing",
     [("Malvern Panalytical", "Mastersizer 3000"), ("Beckman Coulter", "LS 13 320")], (50, 100),
     ("粒径范围", "Size range", "0.01-3500 μm")),
    ("动态热机械分析仪", "Dynamic mechanical analyser (DMA)", "testing",
     [("TA Instruments", "DMA 850"), ("NETZSCH", "DMA 242 E")], (50, 120), ("频率范围", "Frequency", "0.01-200 Hz")),
    ("紫外可见近红外分光光度计", "UV-Vis-NIR spectrophotometer", "testing",
     [("Shimadzu", "UV-3600i Plus"), ("Agilent", "Cary 7000")], (50, 150), ("波长范围", "Wavelength", "185-3300 nm")),
]
PILOT_LINES = [
    ("锂离子电池中试线", "Lithium-ion battery pilot line",
     [("先导智能", "LB-PL2"), ("赢合科技", "YH-300")], (800, 3000)),
    ("生物医药发酵中试线", "Biopharmaceutical fermentation pilot line", [("Sartorius", "BIOSTAT STR 500"),
                                                                   ("东富龙", "DF-500L")], (600, 2500)),
    ("原料药合成中试线", "API synthesis pilot line",
     [("楚天科技", "CT-500"), ("Büchi", "ChemReactor 250")], (500, 2000)),
    ("半导体封装中试线", "Semiconductor packaging pilot line", [("ASMPT", "AD838"), ("Kulicke & Soffa", "IConn")],
     (1500, 3000)),
    ("复合材料成型中试线", "Composite moulding pilot line", [("Dieffenbacher", "CPF-800"), ("Engel", "v-duo 700")],
     (700, 2500)),
    ("光伏组件中试线", "Photovoltaic module pilot line",
     [("迈为股份", "MW-HJT"), ("捷佳伟创", "S.C-PL")], (1000, 3000)),
    ("食品加工中试线", "Food processing pilot line",
     [("GEA", "PilotLine 200"), ("Tetra Pak", "Pilot UHT")], (500, 1200)),
    ("金属增材制造中试平台", "Metal additive manufacturing pilot line", [("铂力特", "BLT-S500"), ("EOS", "M 400-4")],
     (800, 2500)),
]
CATEGORIES = [c.value for c in ServiceCategory]
CITY_CODES = list(SICHUAN_CITIES)
CITY_WEIGHTS = [40 if code == "510100" else 8 if code in ("510700", "510600") else 3 for code in CITY_CODES]
OWNER_KINDS = [(OrganisationKind.UNIVERSITY, "大学", "University", 30), (OrganisationKind.INSTITUTE, "研究院",
               "Institute", 30), (OrganisationKind.ENTERPRISE, "科技有限公司", "Technology Co., Ltd.", 35),
               (OrganisationKind.GOVERNMENT, "检验检测中心", "Testing Centre", 5)]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
OPENING_HOURS = [  # facility opening hours, weighted
    (dict.fromkeys(WEEKDAYS[:5], "08:30-17:30"), 50),
    ({**dict.fromkeys(WEEKDAYS[:5], "08:00-22:00"), "sat": "09:00-17:00"}, 30),
    (dict.fromkeys(WEEKDAYS[:6], "08:00-20:00"), 15),
    (ALL_DAY, 5),
]
# Booking rules of instruments, each (value, weight): the model's defaults are the most common.
RULE_CHOICES = {
    "granularity_min": [(30, 60), (15, 20), (60, 20)],
    "min_duration_min": [(30, 50), (60, 40), (120, 10)],
    "max_duration_min": [(480, 50), (240, 20), (720, 15), (1440, 15)],
    "lead_time_min": [(60, 45), (0, 15), (120, 15), (1440, 20), (2880, 5)],
    "horizon_days": [(90, 50), (30, 20), (60, 15), (180, 15)],
}
SLOTS_LOCAL = [(8 * 60 + 30, 12 * 60 + 30), (13 * 60 + 30, 17 * 60 + 30), (18 * 60 + 30, 22 * 60 + 30)]


def weighted(rng: random.Random, choices: list[tuple]) -> object:
    return rng.choices([c[0] for c in choices], weights=[c[-1] for c in choices])[0]


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[94] if len(values) > 1 else values[0]


def progress(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def database(keep: bool, existing: str | None) -> Iterator[str]:
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    if existing:
        yield f"{base}/{existing}"
        return
    name = f"labshare_bench_catalog_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        if keep:
            print(f"kept database {name} (measure it again with --database {name})", file=sys.stderr)
        else:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the data set ---------------------------------------------------------------------------------------------

def previous_year() -> tuple[datetime, datetime]:
    year = datetime.now(SH).year - 1
    return datetime(year, 1, 1, tzinfo=SH), datetime(year + 1, 1, 1, tzinfo=SH)


def copy_rows(raw, table: str, columns: list[str], rows: list[tuple]) -> None:
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


class Builder:
    def __init__(self, url: str, resources: int, seed: int = 6):
        self.url = url
        self.n_resources = resources
        self.rng = random.Random(seed)
        self.now = datetime.now(UTC)
        self.counts: dict[str, int] = {}

    def build(self) -> dict:
        started = time.perf_counter()
        progress("migrating")
        runner.upgrade(self.url)
        engine = make_engine(self.url)
        try:
            with engine.begin() as conn:
                self.organisations(conn)
                self.catalog(conn)
            raw = engine.raw_connection()
            try:
                self.year(raw.driver_connection)
                self.coming_weeks(raw.driver_connection)
                raw.driver_connection.commit()
            finally:
                raw.close()
            progress("ANALYZE")
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
            with engine.connect() as conn:
                self.counts["effective hours"] = self.hours_split(conn)
        finally:
            engine.dispose()
        self.counts["build_s"] = round(time.perf_counter() - started, 1)
        return self.counts

    def organisations(self, conn) -> None:
        rng, now = self.rng, self.now
        progress("organisations and users")
        rows = []
        for i in range(OWNERS):
            kind, suffix_zh, suffix_en, _ = rng.choices(OWNER_KINDS, weights=[k[-1] for k in OWNER_KINDS])[0]
            city = CITY_CODES[i] if i < len(CITY_CODES) else rng.choices(CITY_CODES, weights=CITY_WEIGHTS)[0]
            city_zh, city_en = SICHUAN_CITIES[city]
            authority = {OrganisationKind.ENTERPRISE: "9", OrganisationKind.GOVERNMENT: "1"}.get(kind, "1")
            rows.append(dict(name_zh=f"{city_zh[:2]}第{i + 1}{suffix_zh}", name_en=f"{city_en} {suffix_en} No. {i + 1}",
                             credit_code=make_credit_code(authority, "1", city,
                                                          f"{70000000 + i:08d}"),
                             kind=kind, city=city, tech_sme=kind == OrganisationKind.ENTERPRISE and i % 3 == 0,
                             created_at=now))
        customer_kinds = [(OrganisationKind.ENTERPRISE, "公司", "Co., Ltd.", 70),
                          (OrganisationKind.UNIVERSITY, "学院", "College", 15),
                          (OrganisationKind.INSTITUTE, "研究所", "Research Institute", 15)]
        for i in range(CUSTOMERS):
            kind, suffix_zh, suffix_en, _ = rng.choices(customer_kinds, weights=[k[-1] for k in customer_kinds])[0]
            city = rng.choices(CITY_CODES, weights=CITY_WEIGHTS)[0]
            city_zh, city_en = SICHUAN_CITIES[city]
            rows.append(dict(name_zh=f"{city_zh[:2]}客户{i + 1}{suffix_zh}",
                             name_en=f"{city_en} customer {i + 1} {suffix_en}",
                             credit_code=make_credit_code("9" if kind == OrganisationKind.ENTERPRISE else "1", "1",
                                                          city, f"{71000000 + i:08d}"),
                             kind=kind, city=city, tech_sme=kind == OrganisationKind.ENTERPRISE and rng.random() < 0.35,
                             created_at=now))
        conn.execute(insert(Organisation), rows)
        orgs = conn.execute(select(Organisation.id, Organisation.kind, Organisation.city)
                            .order_by(Organisation.id)).all()
        self.owner_orgs, self.customer_orgs = orgs[:OWNERS], orgs[OWNERS:]
        self.org_kind = {o.id: o.kind for o in orgs}
        # a few users per owner (its own researchers), the rest with the customers
        owner_users = USERS // 5
        users = []
        for i in range(USERS):
            org = self.owner_orgs[i % OWNERS] if i < owner_users else self.customer_orgs[(i - owner_users) % CUSTOMERS]
            users.append(dict(email=f"user{i}@bench.example", name_zh=f"用户{i}", name_en=f"User {i}",
                              password_hash="!", locale=Locale.ZH_CN, organisation_id=org.id,  # noqa: S106
                              active=True, created_at=now))
        conn.execute(insert(User), users)
        self.users_by_org: dict[int, list[int]] = {}
        for user_id, org_id in conn.execute(select(User.id, User.organisation_id)):
            self.users_by_org.setdefault(org_id, []).append(user_id)
        self.customer_ids = [o.id for o in self.customer_orgs]
        self.counts.update(organisations=len(rows), users=len(users))

    def catalog(self, conn) -> None:
        rng, now = self.rng, self.now
        progress("facilities, resources, devices, rate cards")
        facilities = []
        for i, org in enumerate(self.owner_orgs):
            city_zh, city_en = SICHUAN_CITIES[org.city]
            hours = weighted(rng, OPENING_HOURS)
            facilities.append(dict(name_zh=f"{city_zh}科技资源共享平台第{i + 1}分中心",
                                   name_en=f"{city_en} shared facility {i + 1}", owner_id=org.id, city=org.city,
                                   address_zh=f"{city_zh}科创路{i + 1}号",
                                   address_en=f"{i + 1} Kechuang Road, {city_en}",
                                   timezone="Asia/Shanghai", opening_hours=hours, created_at=now))
        conn.execute(insert(Facility), facilities)
        self.facilities = conn.execute(select(Facility.id, Facility.owner_id, Facility.city, Facility.opening_hours)
                                       .order_by(Facility.id)).all()
        rows, self.resource_meta = [], []
        for i in range(self.n_resources):
            facility = self.facilities[i % len(self.facilities)] if i < len(self.facilities) else \
                self.facilities[int(rng.paretovariate(1.2) * 7) % len(self.facilities)]
            city_zh = SICHUAN_CITIES[facility.city][0]
            pilot = rng.random() < 0.07
            if pilot:
                name_zh, name_en, makers, value_range = rng.choice(PILOT_LINES)
                category = "pilot_scale" if rng.random() < 0.7 else rng.choice(["engineering", "tech_transfer",
                                                                                "incubation"])
                spec = ("产能", "Capacity", f"{rng.choice([50, 100, 200, 500])} 件/天")
                batch = rng.choice([None, None, 2, 3, 7])
                rules = dict(granularity_min=1440, min_duration_min=1440 * (batch or 1),
                             max_duration_min=1440 * rng.choice([14, 30, 60]), lead_time_min=rng.choice([1440, 2880]),
                             horizon_days=rng.choice([90, 180]), bookable_hours={}, batch_days=batch)
                mode = OperationMode.TECHNICIAN
            else:
                name_zh, name_en, category, makers, value_range, spec = rng.choice(INSTRUMENTS)
                if rng.random() < 0.3:  # services of the other categories are offered on instruments too
                    category = rng.choice(CATEGORIES)
                rules = {key: weighted(rng, choices) for key, choices in RULE_CHOICES.items()}
                rules["max_duration_min"] = max(rules["max_duration_min"], rules["min_duration_min"])
                roll = rng.random()
                rules["bookable_hours"] = {} if roll < 0.6 else ALL_DAY if roll < 0.75 else \
                    dict.fromkeys(WEEKDAYS[:5], rng.choice(["08:30-17:30", "09:00-21:00"]))
                rules["batch_days"] = None
                mode = weighted(rng, [(OperationMode.BOTH, 50), (OperationMode.TECHNICIAN, 35),
                                      (OperationMode.SELF_SERVICE, 15)])
            manufacturer, model = rng.choice(makers)
            value = Decimal(rng.randrange(value_range[0] * 100, value_range[1] * 100 + 1)) * 100
            values = dict(
                facility_id=facility.id, kind=ResourceKind.PILOT_LINE if pilot else ResourceKind.INSTRUMENT,
                name_zh=name_zh, name_en=name_en,
                description_zh=f"位于{city_zh}，{name_zh}（{manufacturer} {model}），面向社会开放共享。",
                description_en=f"{name_en} ({manufacturer} {model}), open to all users.",
                model=model, manufacturer=manufacturer, original_value=value, category=category,
                operation_mode=mode, voucher_eligible=rng.random() < 0.8,
                status=ResourceStatus.RETIRED if rng.random() < 0.02 else ResourceStatus.ACTIVE,
                specs=[{"key_zh": spec[0], "key_en": spec[1], "value": spec[2]}],
                approval_required=rng.random() < 0.4, qualification_required=not pilot and rng.random() < 0.2,
                max_active_per_user=None, cancellation_deadline_h=24, created_at=now - timedelta(days=rng.randrange(
                    400, 2000)), **rules)
            values["search_text"] = search_text_of(Resource(**values))
            rows.append(values)
            self.resource_meta.append((facility, pilot))
        for chunk in range(0, len(rows), 2_000):
            conn.execute(insert(Resource), rows[chunk:chunk + 2_000])
        ids = conn.execute(select(Resource.id).order_by(Resource.id)).scalars().all()
        self.resources = [(rid, *meta, row["original_value"]) for rid, meta, row in zip(ids, self.resource_meta, rows,
                                                                                          strict=True)]
        sources = [UsageSource.EVENTS, UsageSource.STATUS, UsageSource.POWER]
        devices = []
        for n, rid in enumerate(ids):
            source = sources[n % 3]
            devices.append(dict(device_id=f"cat-{rid:05d}", resource_id=rid, description="", usage_source=source,
                                power_threshold_w=Decimal("150.00") if source == UsageSource.POWER else None,
                                debounce_s=60, heartbeat_timeout_s=300, enabled=True, credential_hash="!",
                                created_at=now))
        for chunk in range(0, len(devices), 2_000):
            conn.execute(insert(Device), devices[chunk:chunk + 2_000])
        self.device_of = dict(conn.execute(select(Device.resource_id, Device.id)).all())
        start, _ = previous_year()
        self.prices = {}
        cards = []
        for rid, _facility, pilot, value in self.resources:
            per_hour = (value / 10_000 / 20).quantize(Decimal("1")) if not pilot else (value / 10_000).quantize(
                Decimal("1"))  # pilot lines: per day
            per_hour = max(per_hour, Decimal(50))
            self.prices[rid] = (per_hour * Decimal("0.6"), per_hour)  # academic, enterprise
            cards.append(dict(resource_id=rid, valid_from=start.date(), valid_to=None,
                              unit=BillingUnit.DAY if pilot else BillingUnit.HOUR,
                              price_internal=Decimal(0), price_academic=per_hour * Decimal("0.6"),
                              price_enterprise=per_hour, minimum_charge=Decimal(0), setup_fee=Decimal(0),
                              technician_fee_per_hour=Decimal(0), no_show_fraction=Decimal("0.5"),
                              late_cancellation_fraction=Decimal("0.25"), basis=ChargeBasis.MEASURED, tolerance_min=15,
                              note="", created_by_id=None, created_at=now))
        for chunk in range(0, len(cards), 2_000):
            conn.execute(insert(RateCard), cards[chunk:chunk + 2_000])
        months = [date(start.year, m, 1) for m in range(1, 13)]
        closed = datetime(start.year + 1, 1, 10, tzinfo=UTC)
        conn.execute(insert(BillingPeriod), [dict(month=m, state=PeriodState.CLOSED, created_at=closed,
                                                  reconciled_at=closed, closed_at=closed) for m in months])
        self.period_of = {m: pid for pid, m in conn.execute(select(BillingPeriod.id, BillingPeriod.month))}
        self.counts.update(facilities=len(facilities), resources=len(rows), devices=len(devices),
                           rate_cards=len(cards), billing_periods=len(months))

    def _user(self, org_id: int) -> int:
        return self.rng.choice(self.users_by_org[org_id])

    def year(self, raw) -> None:
        """A year of reservations, usage sessions and charges, COPYed in chunks of resources."""
        rng = self.rng
        start, end = previous_year()
        days = (end - start).days
        day0 = int(start.timestamp())
        ids = {"reservation": 1, "session": 1, "charge": 1}
        totals = {"reservations": 0, "usage_sessions": 0, "charges": 0}
        res_cols = ["id", "resource_id", "user_id", "billed_org_id", "starts_at", "ends_at", "state", "kind",
                    "purpose", "sample_count", "late_cancellation", "decision_note", "cancelled_at", "created_at",
                    "updated_at"]
        ses_cols = ["id", "device_pk", "start_ns", "end_ns", "started_at", "ended_at", "truncated", "run_id",
                    "operator", "samples", "start_decided_ns", "end_decided_ns", "updated_at"]
        chg_cols = ["id", "period_id", "organisation_id", "user_id", "resource_id", "facility_id", "reservation_id",
                    "usage_session_id", "service_date", "customer_class", "total", "kind", "reason", "created_at"]
        chunk = 250
        t0 = time.perf_counter()
        for first in range(0, len(self.resources), chunk):
            reservations, sessions, charges = [], [], []
            for rid, facility, pilot, _value in self.resources[first:first + chunk]:
                device = self.device_of[rid]
                owner = facility.owner_id
                # target effective hours: a tenth nearly idle, the rest spread up to ~2,000 h
                roll = rng.random()
                target = rng.uniform(0, 80) if roll < 0.1 else rng.uniform(80, 2100)
                external_share = rng.uniform(0.2, 0.9)
                academic_price, enterprise_price = self.prices[rid]
                if pilot:  # whole days, a run of 1-3 days; 16 measured hours a day
                    booked = min(0.9, target / 16 / days * 1.1)  # the share of days booked
                    p = booked / (2 - booked)  # runs of 2 days on average start with this chance a free day
                    d = 0
                    while d < days:
                        length = rng.randint(1, 3)
                        if rng.random() < p and d + length <= days:
                            s = day0 + d * 86400
                            self._booking(rid, device, owner, facility, s, s + length * 86400, external_share,
                                          (academic_price, enterprise_price), reservations, sessions, charges, ids,
                                          measured_per_day=16 * 3600)
                            d += length
                        else:
                            d += 1
                    continue
                p = min(0.95, target / (days * 3 * 2.6) * 1.12)  # 3 slots a day, 2.6 h a booking on average
                for d in range(days):
                    weekend = (d + start.weekday()) % 7 >= 5
                    for slot, (lo, _hi) in enumerate(SLOTS_LOCAL):
                        if rng.random() >= (p * (0.3 if weekend else 1.0) * (0.6 if slot == 2 else 1.15)):
                            continue
                        offset = rng.choice((0, 0, 30))
                        length = rng.choice((60, 90, 120, 120, 180, 180, 210, 240)) - offset
                        s = day0 + d * 86400 + (lo - 480 + offset) * 60  # local minutes → UTC seconds (UTC+8)
                        self._booking(rid, device, owner, facility, s, s + length * 60, external_share,
                                      (academic_price, enterprise_price), reservations, sessions, charges, ids)
                    if rng.random() < p * 0.08:  # walk-up use before the first slot, nobody booked
                        s = day0 + d * 86400 + (rng.randint(6 * 60, 7 * 60) - 480) * 60
                        self._session(device, s, s + rng.randint(20, 80) * 60, f"user{rng.randrange(USERS)}",
                                      sessions, ids)
            copy_rows(raw, "reservation", res_cols, reservations)
            copy_rows(raw, "usage_session", ses_cols, sessions)
            copy_rows(raw, "charge", chg_cols, charges)
            totals["reservations"] += len(reservations)
            totals["usage_sessions"] += len(sessions)
            totals["charges"] += len(charges)
            done = min(first + chunk, len(self.resources))
            progress(f"year: {done:,}/{len(self.resources):,} resources, {totals['reservations']:,} reservations, "
                     f"{totals['usage_sessions']:,} sessions, {totals['charges']:,} charges "
                     f"({time.perf_counter() - t0:.0f} s)")
        with raw.cursor() as cur:
            for table, key in (("reservation", "reservation"), ("usage_session", "session"), ("charge", "charge")):
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), %s)", (ids[key],))
        self.next_reservation_id = ids["reservation"]
        self.counts.update(totals)

    def _session(self, device: int, s: int, e: int, operator: str, sessions: list, ids: dict) -> int:
        sid = ids["session"]
        ids["session"] += 1
        started, ended = datetime.fromtimestamp(s, UTC), datetime.fromtimestamp(e, UTC)
        sessions.append((sid, device, s * NS, e * NS, started, ended, False, "", operator, None, s * NS, e * NS,
                         ended))
        return sid

    def _booking(self, rid, device, owner, facility, s, e, external_share, prices, reservations, sessions, charges,
                 ids, measured_per_day: int | None = None) -> None:
        rng = self.rng
        external = rng.random() < external_share
        org = rng.choice(self.customer_ids) if external else owner
        user = self._user(org)
        roll = rng.random()
        state = "completed" if roll < 0.86 else "confirmed" if roll < 0.88 else "no_show" if roll < 0.93 \
            else "cancelled"
        technician = rng.random() < 0.3
        starts, ends = datetime.fromtimestamp(s, UTC), datetime.fromtimestamp(e, UTC)
        created = starts - timedelta(days=rng.randint(1, 20))
        rid_ = ids["reservation"]
        ids["reservation"] += 1
        reservations.append((rid_, rid, user, org, starts, ends, state, "technician" if technician else "self_service",
                             "样品测试", rng.randint(1, 12) if technician else None,
                             state == "cancelled" and rng.random() < 0.3, "",
                             starts - timedelta(hours=rng.randint(2, 96)) if state == "cancelled" else None,
                             created, created))
        if state not in ("completed", "confirmed"):
            return
        if measured_per_day:  # pilot line: runs of 16 h a day
            first_ids = [self._session(device, s + day * 86400 + 3600, s + day * 86400 + 3600 + measured_per_day,
                                       f"user{user}", sessions, ids) for day in range((e - s) // 86400)]
            sid = first_ids[0]
            used_s = (e - s) // 86400 * measured_per_day
        else:
            ss = s + rng.randint(0, 10) * 60
            se = e - rng.randint(0, 15) * 60 if rng.random() < 0.9 else e + rng.randint(5, 25) * 60
            sid = self._session(device, ss, se, f"user{user}", sessions, ids)
            used_s = se - ss
        if not external:
            return
        kind = self.org_kind[org]
        academic, enterprise = prices
        price = enterprise if kind == OrganisationKind.ENTERPRISE else academic
        quantity = Decimal((e - s) // 86400) if measured_per_day else (Decimal(used_s) / 3600).quantize(Decimal("0.25"))
        service_date = datetime.fromtimestamp(s, SH).date()
        cid = ids["charge"]
        ids["charge"] += 1
        charges.append((cid, self.period_of[service_date.replace(day=1)], org, user, rid, facility.id, rid_, sid,
                        service_date, "enterprise" if kind == OrganisationKind.ENTERPRISE else "academic",
                        (price * quantity).quantize(Decimal("0.01")), "charge", "",
                        datetime(service_date.year + (service_date.month == 12), service_date.month % 12 + 1, 3,
                                 tzinfo=UTC)))

    def coming_weeks(self, raw) -> None:
        """Live reservations over the next eight weeks, and some maintenance blackouts."""
        rng = self.rng
        progress("the coming weeks: live reservations and blackouts")
        today = datetime.now(SH).replace(hour=0, minute=0, second=0, microsecond=0)
        day0 = int(today.timestamp())
        rid_next = self.next_reservation_id
        rows, blackouts = [], []
        now = self.now
        for rid, facility, pilot, _value in self.resources:
            busy = rng.random() ** 1.5 * 0.7
            owner = facility.owner_id
            for d in range(1, 57):
                if pilot:
                    if d % 3 == 0 and rng.random() < busy:
                        s = day0 + d * 86400
                        rows.append((rid_next, rid, owner, s, s + 2 * 86400))
                        rid_next += 1
                    continue
                for lo, _hi in SLOTS_LOCAL[:2]:
                    if rng.random() < busy:
                        s = day0 + d * 86400 + lo * 60
                        rows.append((rid_next, rid, owner, s, s + rng.choice((60, 120, 180, 240)) * 60))
                        rid_next += 1
            if rng.random() < 0.05:
                s = day0 + rng.randint(1, 50) * 86400
                blackouts.append((rid, datetime.fromtimestamp(s, UTC), datetime.fromtimestamp(s + rng.randint(1, 3) *
                                                                                              86400, UTC)))
        out = []
        for res_id, rid, owner, s, e in rows:
            external = rng.random() < 0.6
            org = rng.choice(self.customer_ids) if external else owner
            out.append((res_id, rid, self._user(org), org, datetime.fromtimestamp(s, UTC),
                        datetime.fromtimestamp(e, UTC),
                        "confirmed" if rng.random() < 0.8 else "pending", "self_service", "预约", None, False, "", None,
                        now, now))
        copy_rows(raw, "reservation", ["id", "resource_id", "user_id", "billed_org_id", "starts_at", "ends_at",
                                       "state", "kind", "purpose", "sample_count", "late_cancellation",
                                       "decision_note", "cancelled_at", "created_at", "updated_at"], out)
        copy_rows(raw, "blackout", ["resource_id", "starts_at", "ends_at", "kind", "reason", "created_at"],
                  [(rid, s, e, "maintenance", "年度维护", now) for rid, s, e in blackouts])
        with raw.cursor() as cur:
            cur.execute("SELECT setval(pg_get_serial_sequence('reservation', 'id'), %s)", (rid_next,))
        self.counts.update(live_reservations=len(out), blackouts=len(blackouts))

    @staticmethod
    def hours_split(conn) -> dict[str, int]:
        start, end = previous_year()
        hours = conn.execute(text(
            "SELECT r.id, COALESCE(SUM(EXTRACT(EPOCH FROM (LEAST(s.ended_at, :end) - GREATEST(s.started_at, :start))))"
            " FILTER (WHERE s.id IS NOT NULL) / 3600, 0) FROM resource r LEFT JOIN device d ON d.resource_id = r.id"
            " LEFT JOIN usage_session s ON "
            "s.device_pk = d.id AND s.started_at < :end AND s.ended_at > :start GROUP BY r.id"),
            {"start": start, "end": end}).all()
        values = [float(h) for _, h in hours]
        return {"<800": sum(v < 800 for v in values), "800-1200": sum(800 <= v < 1200 for v in values),
                "1200-1400": sum(1200 <= v < 1400 for v in values), ">=1400": sum(v >= 1400 for v in values),
                "max": round(max(values)), "mean": round(statistics.mean(values))}


# --- measurements ---------------------------------------------------------------------------------------------

FREE_TEXT = ["电镜", "液相", "sem", "质谱 成都", "扫描电镜", "核磁", "xrd", "nmr", "色谱", "显微镜", "icp", "流式",
             "中试线", "zeiss", "bruker", "thermo", "共聚焦", "pcr", "ct", "电池", "hplc", "拉曼", "红外", "质谱",
             "tem", "afm", "测序", "agilent 7900", "绵阳", "德阳 光谱", "分辨率", "pilot line", "microscope"]


def catalog_queries(rng: random.Random, n: int) -> list[CatalogQuery]:
    sorts = ["name", "name", "name", "value_desc", "value_asc", "newest"]
    queries = []
    for _ in range(n):
        args: dict = {"sort": rng.choice(sorts), "page": rng.choice([1, 1, 1, 2, 2, 3, 4, 5])}
        if rng.random() < 0.75:
            args["q"] = rng.choice(FREE_TEXT)
        if rng.random() < 0.3:
            args["category"] = rng.choice(CATEGORIES)
        if rng.random() < 0.3:
            args["city"] = rng.choices(CITY_CODES, weights=CITY_WEIGHTS)[0]
        if rng.random() < 0.15:
            args["kind"] = rng.choice(["instrument", "pilot_line"])
        if rng.random() < 0.2:
            args["voucher_eligible"] = True
        queries.append(CatalogQuery(**args))
    return queries


def time_first_queries(rng: random.Random, n: int) -> list[CatalogQuery]:
    today = datetime.now(SH).replace(hour=0, minute=0, second=0, microsecond=0)
    queries = []
    for _ in range(n):
        day = today + timedelta(days=rng.randint(1, 35))
        roll = rng.random()
        if roll < 0.15:  # whole days, for pilot lines
            start, end = day, day + timedelta(days=rng.choice([1, 2, 3, 7]))
        else:
            start = day + timedelta(hours=rng.choice([8, 9, 10, 13, 14, 15, 19]), minutes=rng.choice([0, 30]))
            end = start + timedelta(minutes=rng.choice([60, 60, 120, 120, 180, 240, 480]))
        args: dict = {"free_from": start, "free_to": end, "page": rng.choice([1, 1, 1, 2, 3])}
        if rng.random() < 0.5:
            args["q"] = rng.choice(FREE_TEXT)
        if rng.random() < 0.3:
            args["city"] = rng.choices(CITY_CODES, weights=CITY_WEIGHTS)[0]
        if rng.random() < 0.2:
            args["category"] = rng.choice(CATEGORIES)
        if rng.random() < 0.15:
            args["voucher_eligible"] = True
        queries.append(CatalogQuery(**args))
    return queries


def timed_searches(url: str, queries: list[CatalogQuery], warmup: int) -> dict:
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    times, totals = [], []
    try:
        for i, query in enumerate(queries):
            with sessions() as db:  # one session per request, as in the web app
                started = time.perf_counter()
                result = search(db, query)
                elapsed = (time.perf_counter() - started) * 1000
            if i >= warmup:
                times.append(elapsed)
                totals.append(result["total"])
    finally:
        engine.dispose()
    return {"p50": p50(times), "p95": p95(times), "max": max(times), "n": len(times),
            "mean_total": statistics.mean(totals), "empty": sum(t == 0 for t in totals)}


def yearly_report(url: str) -> dict | None:
    try:
        from reports.sharing import instrument_figures  # written in parallel; may not exist yet
    except ImportError:
        return None
    start, end = previous_year()
    last_day = end - timedelta(microseconds=1)  # its date is 31 December: the function takes days, both inclusive
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as db:
            started = time.perf_counter()
            figures = instrument_figures(db, start, last_day)
            elapsed = time.perf_counter() - started
            figures = list(figures.values() if isinstance(figures, dict) else figures)
    finally:
        engine.dispose()
    return {"seconds": elapsed, "rows": len(figures)}


def verdict(value: float, target: float) -> str:
    return f"{value / target:.2f}x of target  {'PASS' if value < target else 'MISS'}"


def report_lines(data: dict, found: dict, measured: dict, args) -> list[str]:
    hours = data.get("effective hours", {})
    lines = [
        "LabShare catalog benchmark (bench/catalog.py)",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, {os.cpu_count()} CPUs "
        f"(load average {measured['load'][0]:.1f} at the start, {measured['load'][1]:.1f} at the end), PostgreSQL "
        f"{found['server']}; booking.catalog.search called in process, one session per query",
        f"data: {found['resources']:,} resources ({found['pilot_lines']:,} pilot lines) in {found['facilities']} "
        f"facilities over {found['cities']} 市州, {found['organisations']:,} organisations, {found['users']:,} users; "
        f"{found['year']}: {found['reservations_year']:,} reservations, {found['sessions']:,} usage sessions, "
        f"{found['charges']:,} charges in {found['periods']} closed periods; coming 8 weeks: "
        f"{found['live']:,} live reservations, {found['blackouts']} blackouts",
    ]
    if "build_s" in data:
        lines.append(f"build: {data['build_s']:.0f} s (migrate, COPY, VACUUM ANALYZE); effective hours per resource "
                     f"in {found['year']}: <800: {hours['<800']:,}, 800-1,200: {hours['800-1200']:,}, "
                     f"1,200-1,400: {hours['1200-1400']:,}, >=1,400: {hours['>=1400']:,} (mean {hours['mean']} h, "
                     f"max {hours['max']} h)")
    lines += ["", f"{'figure':<52}{'p50':>10}{'p95':>10}{'max':>10}  target"]
    for key, label in (("search", "catalog search (free text, filters, pages 1-5, sorts)"),
                       ("time_first", "time-first search (free_from/free_to, ± filters)")):
        m = measured[key]
        lines.append(f"{label:<52}{m['p50']:>7.1f} ms{m['p95']:>7.1f} ms{m['max']:>7.0f} ms  p95 < "
                     f"{TARGETS_MS[key]:.0f} ms: {verdict(m['p95'], TARGETS_MS[key])}")
    report = measured["report"]
    if args.skip_report:
        lines.append("yearly sharing report: skipped (--skip-report)")
    elif report is None:
        lines.append("yearly sharing report: not available yet (reports.sharing.instrument_figures not importable)")
    else:
        lines.append(f"{'yearly sharing report, all instruments (' + str(report['rows']) + ' rows)':<52}"
                     f"{report['seconds']:>9.1f} s{'':>20}  < {REPORT_TARGET_S:.0f} s: "
                     f"{verdict(report['seconds'], REPORT_TARGET_S)}")
    lines += [
        "",
        f"queries: {measured['search']['n']} catalog searches (mean total {measured['search']['mean_total']:.0f}, "
        f"{measured['search']['empty']} empty) and {measured['time_first']['n']} time-first searches (mean total "
        f"{measured['time_first']['mean_total']:.0f}, {measured['time_first']['empty']} empty), each after "
        f"{args.warmup} warm-ups; seed {args.seed}",
        "reference: the issue's targets on this machine (searches < 100 ms p95, yearly report < 60 s)",
    ]
    return lines


def found_counts(url: str) -> dict:
    engine = make_engine(url)
    start, end = previous_year()
    try:
        with engine.connect() as conn:
            def count(model, *where):
                return conn.scalar(select(func.count()).select_from(model).where(*where))
            return {
                "server": conn.scalar(text("SHOW server_version")).split()[0],
                "resources": count(Resource), "pilot_lines": count(Resource, Resource.kind == ResourceKind.PILOT_LINE),
                "facilities": count(Facility), "cities": conn.scalar(select(func.count(Facility.city.distinct()))),
                "organisations": count(Organisation), "users": count(User), "year": start.year,
                "reservations_year": count(Reservation, Reservation.starts_at < end),
                "sessions": count(UsageSession), "charges": count(Charge), "periods": count(BillingPeriod),
                "live": count(Reservation, Reservation.starts_at >= end), "blackouts": count(Blackout),
            }
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="also write the report to this file "
                        "(default bench/results/catalog.txt at full scale)")
    parser.add_argument("--resources", type=int, default=10_000, help="resources to build (default 10,000)")
    parser.add_argument("--queries", type=int, default=300, help="measured queries of each kind (default 300)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--database", help="measure this existing database (built with --keep) without building")
    parser.add_argument("--skip-report", action="store_true", help="do not run the yearly sharing report")
    args = parser.parse_args()
    if args.output is None and args.resources == 10_000 and not args.database:
        args.output = REPO_ROOT / "bench" / "results" / "catalog.txt"
    load_start = os.getloadavg()[0]
    with database(args.keep, args.database) as url:
        data = {} if args.database else Builder(url, args.resources, args.seed).build()
        if data:
            progress(f"built in {data['build_s']:.0f} s: " + json.dumps(data, ensure_ascii=False))
        else:
            runner.upgrade(url)
        found = found_counts(url)
        rng = random.Random(args.seed)
        progress("catalog search")
        measured: dict = {"search": timed_searches(url, catalog_queries(rng, args.queries + args.warmup),
                                                   args.warmup)}
        progress("time-first search")
        measured["time_first"] = timed_searches(url, time_first_queries(rng, args.queries + args.warmup), args.warmup)
        progress("yearly sharing report")
        measured["report"] = None if args.skip_report else yearly_report(url)
        measured["load"] = (load_start, os.getloadavg()[0])
    lines = report_lines(data, found, measured, args)
    print("\n".join(lines))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
