"""The per-instrument annual open-sharing report (design.md §7) as CSV and XLSX, in zh-CN or English.

The first columns are the provincial layout — name, model, 原值, owning unit, sharing mode, 收费标准, annual
external hours, annual external income — followed by the measured figures behind them.
"""

from __future__ import annotations

from decimal import Decimal

from billing.exports import csv_bytes, money_text, xlsx_workbook
from billing.models import RateCard
from core.regions import SICHUAN_CITIES
from reports.sharing import GroupFigures, InstrumentFigures, SharingReport

COLUMNS = (
    # key, zh, en
    ("number", "序号", "No."),
    ("name", "仪器名称", "Instrument"),
    ("model", "型号", "Model"),
    ("original_value", "原值（元）", "Original value (CNY)"),
    ("owner", "所属单位", "Owning unit"),
    ("facility", "所在平台/场地", "Facility"),
    ("city", "所在市州", "City"),
    ("sharing_mode", "共享方式", "Sharing mode"),
    ("fee", "收费标准", "Fee standard"),
    ("external_hours", "年对外服务机时（小时）", "External service hours"),
    ("external_income", "年对外服务收入（元）", "External service income (CNY)"),
    ("effective_hours", "年有效工作机时（小时）", "Effective working hours"),
    ("sharing_rate", "共享率", "Sharing rate"),
    ("users", "服务用户数", "Users served"),
    ("organisations", "服务单位数", "Organisations served"),
    ("external_organisations", "服务外单位数", "Outside organisations served"),
    ("no_show_rate", "爽约率", "No-show rate"),
    ("idle_share", "可预约时段空闲率", "Idle share of bookable hours"),
    ("voucher_subsidy", "创新券补贴（元）", "Voucher subsidy (CNY)"),
    ("voucher_share", "创新券占对外收入比例", "Voucher share of external income"),
    ("source", "机时来源", "Hours from"),
)
MONEY_COLUMNS = {3, 10, 18}
QUANTITY_COLUMNS = {9, 11}

TEXTS = {
    "zh_CN": {
        "mode.self_service": "自主操作", "mode.technician": "送样检测", "mode.both": "自主操作、送样检测",
        "class.internal": "校内/院内", "class.academic": "高校院所", "class.enterprise": "企业",
        "unit.hour": "小时", "unit.quarter_hour": "小时（按刻钟计）", "unit.sample": "样", "unit.day": "天",
        "unit.batch": "批", "unit.run": "次",
        "source.measured": "设备计量", "source.booked": "预约时长（未接入计量）", "none": "—",
        "title": "%(start)s 至 %(end)s 大型科研仪器开放共享情况表", "total": "合计",
    },
    "en": {
        "mode.self_service": "self-service", "mode.technician": "sample service", "mode.both":
            "self-service and sample service",
        "class.internal": "internal", "class.academic": "academic", "class.enterprise": "enterprise",
        "unit.hour": "hour", "unit.quarter_hour": "hour (per quarter hour)", "unit.sample": "sample",
        "unit.day": "day", "unit.batch": "batch", "unit.run": "run",
        "source.measured": "measured by the device", "source.booked": "booked time (not metered)", "none": "—",
        "title": "Open sharing of large instruments, %(start)s to %(end)s", "total": "Total",
    },
}


def texts(locale: str) -> dict[str, str]:
    return TEXTS["en" if locale == "en" else "zh_CN"]


def fee_standard(card: RateCard | None, locale: str) -> str:
    """`¥300.00/小时（企业）；…` — the prices in force at the end of the range, per customer class."""
    t = texts(locale)
    if card is None:
        return t["none"]
    unit = t[f"unit.{card.unit}"]
    parts = []
    for cls, price in (("internal", card.price_internal), ("academic", card.price_academic),
                       ("enterprise", card.price_enterprise)):
        label = t[f"class.{cls}"]
        parts.append(f"¥{money_text(price)}/{unit}（{label}）" if locale != "en"
                     else f"¥{money_text(price)}/{unit} ({label})")
    return ("；" if locale != "en" else "; ").join(parts)


def percent(value: Decimal | None) -> str:
    return "" if value is None else f"{value * 100:.2f}%"


def city_name(code: str, locale: str) -> str:
    names = SICHUAN_CITIES.get(code)
    return code if names is None else names[1 if locale == "en" else 0]


def header(locale: str) -> list[str]:
    return [en if locale == "en" else zh for _key, zh, en in COLUMNS]


def instrument_row(number: int, f: InstrumentFigures, locale: str) -> list[object]:
    t = texts(locale)
    en = locale == "en"
    return [
        number, (f.name_en if en else f.name_zh) or f.name_zh, f.model, f.original_value,
        (f.owner_en if en else f.owner_zh) or f.owner_zh, (f.facility_en if en else f.facility_zh) or f.facility_zh,
        city_name(f.city, locale), t.get(f"mode.{f.operation_mode}", f.operation_mode),
        fee_standard(f.rate_card, locale), f.external_hours, f.external_income, f.effective_hours,
        percent(f.sharing_rate), f.users_served, f.organisations_served, f.external_organisations_served,
        percent(f.no_show_rate), percent(f.idle_share), f.voucher_subsidy, percent(f.voucher_share),
        t["source.measured" if f.metered else "source.booked"],
    ]


def total_row(total: GroupFigures | object, locale: str) -> list[object]:
    t = texts(locale)
    return [t["total"], "", "", "", "", "", "", "", "", total.external_hours, total.external_income,
            total.effective_hours, percent(total.sharing_rate), total.users_served, total.organisations_served,
            total.external_organisations_served, percent(total.no_show_rate), percent(total.idle_share),
            total.voucher_subsidy, percent(total.voucher_share), ""]


def _rows(report: SharingReport, locale: str):
    yield header(locale)
    for number, figures in enumerate(report.instruments, start=1):
        yield instrument_row(number, figures, locale)
    yield total_row(report.total, locale)


def report_csv(report: SharingReport, *, locale: str = "zh_CN") -> bytes:
    """UTF-8 with BOM (Excel in China opens it correctly), hours and money as exact text."""

    def rows():
        for row in _rows(report, locale):
            yield [f"{v:f}" if isinstance(v, Decimal) and i in QUANTITY_COLUMNS else v for i, v in enumerate(row)]

    return csv_bytes(rows())


def report_xlsx(report: SharingReport, *, locale: str = "zh_CN") -> bytes:
    t = texts(locale)
    title = t["title"] % {"start": report.scope.start.isoformat(), "end": report.scope.end.isoformat()}
    rows: list[list[object]] = [[title], []]
    rows += [list(row) for row in _rows(report, locale)]
    sheet = "开放共享" if locale != "en" else "Open sharing"
    return xlsx_workbook([(sheet, rows, MONEY_COLUMNS, QUANTITY_COLUMNS, 2)])
