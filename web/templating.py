"""Jinja helpers shared by every page: localised names, times in the facility's zone, money, navigation."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from flask import Flask, request, url_for
from flask_babel import format_datetime, get_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from booking.categories import CATEGORY_NAMES, ServiceCategory
from core.accounts.models import Role
from core.money import format_cny
from core.regions import SICHUAN_CITIES
from core.timeutil import to_local
from web.i18n import LANGUAGE_NAMES, SUPPORTED_LOCALES

ROLE_NAMES = {Role.RESEARCHER: _l("Researcher"), Role.LAB_MANAGER: _l("Lab manager"),
              Role.FINANCE: _l("Finance"), Role.ADMIN: _l("Administrator")}

# (endpoint or menu, label, icon, roles that see it; None = every signed-in user). The bar has to fit 1280 px
# in both languages for every mix of roles, so a facility's tools and the platform admin's pages are menus.
ADMIN_MENU = "admin-menu"
MANAGE_MENU = "manage-menu"
NAVIGATION = [
    ("home.index", _l("Home"), "house", None),
    ("booking.catalog_page", _l("Catalog"), "search", None),
    ("booking.my_reservations", _l("My reservations"), "calendar-check", None),
    ("booking_manage.approvals", _l("Approvals"), "check2-square", {Role.LAB_MANAGER, Role.ADMIN}),
    ("live.board", _l("Live board"), "broadcast", {Role.LAB_MANAGER, Role.ADMIN}),
    (MANAGE_MENU, _l("Manage"), "building-gear", {Role.LAB_MANAGER, Role.ADMIN}),
    ("finance.index", _l("Finance"), "cash-coin", {Role.FINANCE}),  # admins: in the administration menu
    ("finance.my_charges", _l("My charges"), "wallet2", {Role.RESEARCHER}),
    ("reports.index", _l("Reports"), "bar-chart-line", {Role.LAB_MANAGER, Role.FINANCE}),  # admins: in the menu
    (ADMIN_MENU, _l("Administration"), "shield-lock", {Role.ADMIN}),
]
MENUS = {
    MANAGE_MENU: [
        ("manage.facilities", _l("My facilities"), "building-gear", None),
        ("devices_manage.devices", _l("Devices"), "cpu", None),
        ("finance.reconciliation_index", _l("Reconciliation"), "clipboard-data", {Role.LAB_MANAGER}),
        ("imports.index", _l("Import"), "upload", None),
    ],
    ADMIN_MENU: [
        ("admin.organisations", _l("Organisations"), "buildings", None),
        ("admin.facilities", _l("Facilities"), "building-add", None),
        ("admin.users", _l("Users"), "people", None),
        ("finance.index", _l("Finance"), "cash-coin", None),
        ("reports.index", _l("Reports"), "bar-chart-line", None),
    ],
}


def _visible(roles) -> bool:
    return roles is None or current_user.has_role(*roles)


def current_locale() -> str:
    """Our locale code ("zh_CN" or "en"); Babel itself spells Chinese "zh_Hans_CN"."""
    return "en" if str(get_locale() or "") == "en" else "zh_CN"


def localised(obj, field: str = "name") -> str:
    """`obj.name_zh` or `obj.name_en` for the current language (falling back to Chinese)."""
    suffix = "en" if current_locale() == "en" else "zh"
    return getattr(obj, f"{field}_{suffix}", None) or getattr(obj, f"{field}_zh", "")


def local_time(moment: datetime | None, tz_name: str | None = None, fmt: str = "medium") -> str:
    if moment is None:
        return "—"
    from flask import current_app

    tz_name = tz_name or current_app.config["LABSHARE_SETTINGS"].timezone
    return format_datetime(to_local(moment, tz_name).replace(tzinfo=None), fmt, rebase=False)


def city_name(code: str) -> str:
    zh, en = SICHUAN_CITIES.get(code, (code, code))
    return en if current_locale() == "en" else zh


def category_name(category: str) -> str:
    zh, en = CATEGORY_NAMES.get(ServiceCategory(category), (category, category))
    return en if current_locale() == "en" else zh


def money(amount: Decimal | None) -> str:
    return "—" if amount is None else format_cny(amount)


def money_short(amount: Decimal | None) -> str:
    """Large amounts for headlines: ¥2.65亿 / ¥2,645.7万 in Chinese, ¥264.6M in English."""
    if amount is None:
        return "—"
    if current_locale() == "en":
        for size, suffix in ((Decimal(10) ** 9, "B"), (Decimal(10) ** 6, "M"), (Decimal(10) ** 3, "K")):
            if abs(amount) >= size:
                return f"¥{amount / size:,.1f}{suffix}"
        return format_cny(amount)
    for size, suffix in ((Decimal(10) ** 8, "亿"), (Decimal(10) ** 4, "万")):
        if abs(amount) >= size:
            return f"¥{amount / size:,.2f}{suffix}"
    return format_cny(amount)


def _menu(key: str) -> tuple[list[tuple[str, str, str]], bool]:
    """A menu's pages for the user, and whether the current page is one of them (or below one)."""
    pages = [(page, text, sign) for page, text, sign, who in MENUS[key] if _visible(who)]
    here = request.path
    active = any(here.startswith(url_for(page)) for page, _text, _sign in pages) or (
        key == ADMIN_MENU and here.startswith("/admin"))
    return pages, active


def navigation() -> list[tuple[str, str, str, list[tuple[str, str, str]] | None, bool]]:
    """The signed-in user's bar: (endpoint or menu key, label, icon, the menu's pages or None, active)."""
    if not current_user.is_authenticated:
        return []
    items = []
    for endpoint, label, icon, roles in NAVIGATION:
        if not _visible(roles):
            continue
        if endpoint in MENUS:
            items.append((endpoint, label, icon, *_menu(endpoint)))
        else:
            href = url_for(endpoint)
            items.append((endpoint, label, icon, None,
                          request.path == href or (href != "/" and request.path.startswith(href))))
    return items


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(localtime=local_time, cny=money, cny_short=money_short, city=city_name,
                                  category=category_name)
    app.jinja_env.globals.update(
        localised=localised, navigation=navigation,
        current_locale=current_locale,
        language_names=LANGUAGE_NAMES, supported_locales=SUPPORTED_LOCALES, role_names=ROLE_NAMES,
    )

    @app.context_processor
    def _request_context():
        return {"request_path": request.path}
