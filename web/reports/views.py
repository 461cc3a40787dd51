"""What the report pages show, built from reports.sharing: the range asked for, sorted rows, the sources behind
a figure, and the dashboard's ECharts options. Formatting only; every figure is computed in reports.sharing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from babel.dates import get_day_names
from flask import current_app
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.models import CustomerClass, Statement
from billing.voucher_models import VoucherApplication
from core.accounts.models import Organisation, User
from core.timeutil import to_local, utcnow
from reports.sharing import (
    BENCHMARK_HOURS,
    GroupFigures,
    InstrumentFigures,
    MonthFigures,
    ProgrammeBurndown,
    ReportScope,
    SharingReport,
    Totals,
    compute,
    year_range,
)
from web.templating import city_name, current_locale

ZERO = Decimal("0.00")
CACHE_SECONDS = 300  # the tabs, sorting, pages and downloads of one scope reuse one computation
CACHE_ENTRIES = 8
PER_PAGE = 50
CHART_INSTRUMENTS = 10
CHART_FACILITIES = 20


# --- which days -------------------------------------------------------------------------------------------------

def today() -> date:
    """Today in the platform's zone (the default range runs to it)."""
    return to_local(utcnow(), current_app.config["LABSHARE_SETTINGS"].timezone).date()


@dataclass(frozen=True)
class Range:
    start: date
    end: date
    year: int | None  # set when a whole (or the current, to-date) year was asked for

    @property
    def label(self) -> str:
        """For file names: `2026` or `2026-01-01_2026-03-31`."""
        if self.year is not None and (self.start, self.end) == year_range(self.year):
            return str(self.year)
        return f"{self.start.isoformat()}_{self.end.isoformat()}"

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def resolve_range(year: int | None, start: date | None, end: date | None, now_day: date) -> Range:
    """The year asked for; else a custom range; else the current year. The current year runs to today only:
    its future days would count as idle bookable hours and dilute every rate."""
    if year is None and start is not None and end is not None:
        return Range(start, end, None)
    year = year or now_day.year
    first, last = year_range(year)
    if first <= now_day < last:
        last = now_day
    return Range(first, last, year)


# --- a cached computation ---------------------------------------------------------------------------------------

class ReportCache:
    """Reports by scope for a few minutes, per app (a province's year takes tens of seconds to compute)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[ReportScope, tuple[float, SharingReport]] = {}

    def get(self, scope: ReportScope, build: Callable[[], SharingReport]) -> SharingReport:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(scope)
            if hit is not None and now - hit[0] < CACHE_SECONDS:
                return hit[1]
        report = build()
        with self._lock:
            self._entries[scope] = (now, report)
            while len(self._entries) > CACHE_ENTRIES:
                del self._entries[min(self._entries, key=lambda key: self._entries[key][0])]
        return report


def report_for(db: Session, scope: ReportScope) -> SharingReport:
    cache = current_app.extensions.setdefault("labshare.report_cache", ReportCache())
    return cache.get(scope, lambda: compute(db, scope, heatmap=True))


# --- table rows -------------------------------------------------------------------------------------------------

def hours_text(value: Decimal | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def percent_text(value: Decimal | None) -> str:
    """0.4454 → `44.54%` (as in the downloads); `—` when there is nothing to divide."""
    return "—" if value is None else f"{value * 100:.2f}%"


def instrument_name(f: InstrumentFigures) -> str:
    return (f.name_en if current_locale() == "en" else f.name_zh) or f.name_zh


def group_name(group: GroupFigures, by: str) -> str:
    if by == "city":
        return city_name(str(group.key))
    return (group.name_en if current_locale() == "en" else group.name_zh) or group.name_zh


def _rate_key(value: Decimal | None) -> Decimal:
    return Decimal(-1) if value is None else value


SORTS: dict[str, Callable[[Totals], Any]] = {
    "effective": lambda f: f.effective_s,
    "external": lambda f: f.external_s,
    "rate": lambda f: _rate_key(f.sharing_rate),
    "income": lambda f: f.income,
    "external_income": lambda f: f.external_income,
    "voucher": lambda f: f.voucher_subsidy,
    "users": lambda f: f.users_served,
    "organisations": lambda f: f.organisations_served,
    "no_show": lambda f: _rate_key(f.no_show_rate),
    "idle": lambda f: _rate_key(f.idle_share),
}


def sorted_rows(rows: Iterable[Totals], key: str, descending: bool, name: Callable[[Any], str]) -> list:
    """Rows by one figure (ties by name); figures that cannot be computed (—) come last either way."""
    rows = sorted(rows, key=lambda r: name(r))
    if key == "name":
        return sorted(rows, key=lambda r: name(r), reverse=descending)
    value = SORTS[key]
    known = [r for r in rows if value(r) != Decimal(-1)]
    unknown = [r for r in rows if value(r) == Decimal(-1)]
    return sorted(known, key=value, reverse=descending) + unknown


def paged(rows: list, page: int) -> tuple[list, int, int]:
    pages = max((len(rows) + PER_PAGE - 1) // PER_PAGE, 1)
    page = min(max(page, 1), pages)
    return rows[(page - 1) * PER_PAGE: page * PER_PAGE], page, pages


# --- the sources of a figure -----------------------------------------------------------------------------------

def names_of(db: Session, model, ids: Iterable[int | None]) -> dict[int, Any]:
    wanted = {i for i in ids if i is not None}
    return {o.id: o for o in db.scalars(select(model).where(model.id.in_(wanted)))} if wanted else {}


def organisations(db: Session, ids: Iterable[int | None]) -> dict[int, Organisation]:
    return names_of(db, Organisation, ids)


def users(db: Session, ids: Iterable[int | None]) -> dict[int, User]:
    return names_of(db, User, ids)


def statements(db: Session, ids: Iterable[int | None]) -> dict[int, Statement]:
    return names_of(db, Statement, ids)


def voucher_by_charge(db: Session, charge_ids: list[int]) -> dict[int, Decimal]:
    if not charge_ids:
        return {}
    return {cid: Decimal(amount or 0) for cid, amount in db.execute(
        select(VoucherApplication.charge_id, func.sum(VoucherApplication.amount))
        .where(VoucherApplication.charge_id.in_(charge_ids)).group_by(VoucherApplication.charge_id))}


@dataclass
class ChargeTotals:
    income: Decimal = ZERO
    external_income: Decimal = ZERO
    voucher_subsidy: Decimal = ZERO


def charge_totals(charges, vouchers: dict[int, Decimal]) -> ChargeTotals:
    """The same sums as the report: all charges; those of outside classes; vouchers on outside charges."""
    totals = ChargeTotals()
    for charge in charges:
        totals.income += charge.total
        if charge.customer_class != CustomerClass.INTERNAL:
            totals.external_income += charge.total
            totals.voucher_subsidy += vouchers.get(charge.id, ZERO)
    return totals


def seconds_to_hours(seconds: int) -> Decimal:
    """As the report rounds its hours: two places, half up."""
    return _hours(seconds, "0.01")


def single(db: Session, scope: ReportScope, resource_id: int) -> InstrumentFigures | None:
    """One resource's figures (cheap: the drill-down pages show the figure their rows add up to)."""
    report = compute(db, replace(scope, resource_ids=frozenset({resource_id})))
    return report.instruments[0] if report.instruments else None


# --- charts -----------------------------------------------------------------------------------------------------

def chart_value(amount: Decimal | int) -> float:
    """A figure for ECharts, which draws with JavaScript numbers: the one place a Decimal becomes a float. The
    exact figure stays in the tables beside every chart."""
    return float(amount)


def _hours(seconds: int, places: str = "0.1") -> Decimal:
    return (Decimal(seconds) / 3600).quantize(Decimal(places), rounding=ROUND_HALF_UP)


def weekday_names() -> list[str]:
    """Monday first, in the UI language."""
    names = get_day_names("abbreviated", locale=get_locale())
    return [names[day] for day in range(7)]


def heatmap_chart(grid: list[list[int]]) -> dict:
    days = weekday_names()
    data = [[hour, day, chart_value(_hours(grid[day][hour]))] for day in range(7) for hour in range(24)]
    top = max((value for _h, _d, value in data), default=0) or 1
    return {
        "tooltip": {"position": "top"},
        "grid": {"left": 60, "right": 20, "top": 10, "bottom": 56},
        "xAxis": {"type": "category", "data": [f"{h:02d}" for h in range(24)], "splitArea": {"show": True}},
        "yAxis": {"type": "category", "data": days, "inverse": True, "splitArea": {"show": True}},
        "visualMap": {"min": 0, "max": top, "calculable": False, "orient": "horizontal", "left": "center",
                      "bottom": 0, "itemHeight": 160, "text": [_("h"), "0"],
                      "inRange": {"color": ["#f3f6fb", "#9ec5fe", "#3d8bfd", "#0a58ca", "#052c65"]}},
        "series": [{"type": "heatmap", "name": _("Hours of use"), "data": data,
                    "emphasis": {"itemStyle": {"borderColor": "#333", "borderWidth": 1}}}],
    }


def heatmap_table(grid: list[list[int]]) -> dict:
    """Hours of use per weekday and hour, for the table under the chart, and the busiest hour."""
    days = weekday_names()
    rows = [(days[d], [_hours(grid[d][h]) for h in range(24)], _hours(sum(grid[d]))) for d in range(7)]
    busiest = max(((grid[d][h], d, h) for d in range(7) for h in range(24)), default=(0, 0, 0))
    return {"rows": rows, "busiest": None if not busiest[0] else
            {"day": days[busiest[1]], "hour": busiest[2], "hours": _hours(busiest[0])}}


@dataclass(frozen=True)
class Benchmarks:
    """The 800 / 1,200 / 1,400 hour yardsticks, scaled pro rata for a range shorter or longer than a year."""

    hours: tuple[Decimal, ...]
    scaled: bool

    @classmethod
    def for_range(cls, days: int) -> Benchmarks:
        factor = Decimal(days) / Decimal(365)
        if days in (365, 366):
            factor = Decimal(1)
        return cls(tuple((Decimal(h) * factor).quantize(Decimal("1"), rounding=ROUND_HALF_UP)
                         for h in BENCHMARK_HOURS), factor != 1)

    def band(self, figures: InstrumentFigures) -> int:
        return sum(figures.effective_s >= h * 3600 for h in self.hours)

    def labels(self) -> list[str]:
        low, mid, high = (f"{h:,}" for h in self.hours)
        return [f"< {low} h", f"{low}–{mid} h", f"{mid}–{high} h", f"≥ {high} h"]


def ranked_instruments(report: SharingReport) -> tuple[list[InstrumentFigures], list[InstrumentFigures]]:
    """The least and the most used instruments (pilot lines book days and batches: not measured by these
    yardsticks)."""
    instruments = sorted((f for f in report.instruments if f.kind == "instrument"),
                         key=lambda f: (f.effective_s, f.resource_id))
    most = list(reversed(instruments[-CHART_INSTRUMENTS:]))
    least = instruments[:CHART_INSTRUMENTS]
    return least, most


def benchmark_chart(rows: list[InstrumentFigures], benchmarks: Benchmarks, colour: str) -> dict:
    names = [instrument_name(f) for f in rows]
    values = [chart_value(f.effective_hours) for f in rows]
    top = max([*values, chart_value(benchmarks.hours[-1])]) * 1.08
    marks = [{"xAxis": chart_value(h), "name": f"{h:,} h"} for h in benchmarks.hours]
    return {
        "tooltip": {"trigger": "axis", "axisPointer": {"type": "shadow"}},
        "grid": {"left": 10, "right": 30, "top": 28, "bottom": 10, "containLabel": True},
        "xAxis": {"type": "value", "max": round(top), "axisLabel": {"formatter": "{value} h"}},
        "yAxis": {"type": "category", "data": names, "inverse": True,
                  "axisLabel": {"width": 160, "overflow": "truncate"}},
        "series": [{"type": "bar", "name": _("Effective hours"), "data": values, "itemStyle": {"color": colour},
                    "label": {"show": True, "position": "right"},
                    "markLine": {"symbol": "none", "data": marks, "label": {"formatter": "{b}", "position": "start"},
                                 "lineStyle": {"type": "dashed", "color": "#6c757d"}}}],
    }


def band_counts(report: SharingReport, benchmarks: Benchmarks) -> list[int]:
    counts = [0, 0, 0, 0]
    for figures in report.instruments:
        if figures.kind == "instrument":
            counts[benchmarks.band(figures)] += 1
    return counts


def band_chart(counts: list[int], benchmarks: Benchmarks) -> dict:
    colours = ["#dc3545", "#fd7e14", "#0d6efd", "#198754"]
    return {
        "tooltip": {"trigger": "axis", "axisPointer": {"type": "shadow"}},
        "grid": {"left": 10, "right": 20, "top": 24, "bottom": 10, "containLabel": True},
        "xAxis": {"type": "category", "data": benchmarks.labels()},
        "yAxis": {"type": "value", "minInterval": 1},
        "series": [{"type": "bar", "name": _("Instruments"), "label": {"show": True, "position": "top"},
                    "data": [{"value": n, "itemStyle": {"color": colours[i]}} for i, n in enumerate(counts)]}],
    }


def rate_chart(groups: list[GroupFigures], names: list[str], horizontal: bool) -> dict:
    """Sharing rate (%) per group, with the external hours in the tooltip's series."""
    rates = [chart_value((g.sharing_rate or 0) * 100) for g in groups]
    category = {"type": "category", "data": names,
                "axisLabel": {"width": 150, "overflow": "truncate"} if horizontal else
                {"interval": 0, "rotate": 30 if len(names) > 8 else 0}}
    value = {"type": "value", "name": "%", "max": 100}
    return {
        "tooltip": {"trigger": "axis", "axisPointer": {"type": "shadow"}},
        "grid": {"left": 10, "right": 30, "top": 30, "bottom": 10, "containLabel": True},
        "xAxis": value if horizontal else category,
        "yAxis": {**category, "inverse": True} if horizontal else value,
        "series": [{"type": "bar", "name": _("Sharing rate"), "data": rates, "itemStyle": {"color": "#0d6efd"},
                    "barMaxWidth": 36,
                    "label": {"show": True, "position": "right" if horizontal else "top", "formatter": "{c}%"}}],
    }


def rounded_rate(value: Decimal | None) -> Decimal:
    return ((value or Decimal(0)) * 100).quantize(Decimal("0.01"))


def money_chart(months: list[MonthFigures]) -> dict:
    labels = [f"{m.month:%Y-%m}" for m in months]
    return {
        "tooltip": {"trigger": "axis"},
        "legend": {"bottom": 0},
        "grid": {"left": 10, "right": 20, "top": 30, "bottom": 40, "containLabel": True},
        "xAxis": {"type": "category", "data": labels},
        "yAxis": {"type": "value", "name": "CNY"},
        "series": [
            {"type": "bar", "name": _("Income"), "data": [chart_value(m.income) for m in months],
             "itemStyle": {"color": "#9ec5fe"}},
            {"type": "bar", "name": _("External income"), "data": [chart_value(m.external_income) for m in months],
             "itemStyle": {"color": "#0d6efd"}},
            {"type": "line", "name": _("Voucher subsidy"), "data": [chart_value(m.voucher_subsidy) for m in months],
             "itemStyle": {"color": "#fd7e14"}, "symbolSize": 6},
        ],
    }


def burndown_chart(programmes: list[ProgrammeBurndown], locale: str) -> dict:
    labels = [f"{month:%Y-%m}" for month, _left in programmes[0].remaining] if programmes else []
    series = [{"type": "line", "step": "end", "showSymbol": False,
               "name": f"{p.code} · {(p.name_en if locale == 'en' else p.name_zh)}",
               "data": [chart_value(left) for _month, left in p.remaining], "areaStyle": {"opacity": 0.12}}
              for p in programmes]
    return {"tooltip": {"trigger": "axis"}, "legend": {"bottom": 0, "type": "scroll"},
            "grid": {"left": 10, "right": 20, "top": 30, "bottom": 40, "containLabel": True},
            "xAxis": {"type": "category", "data": labels}, "yAxis": {"type": "value", "name": "CNY", "min": 0},
            "series": series}
