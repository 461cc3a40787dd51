"""What can be imported, by whom, with which service and template: shared by the pages and the API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask_babel import lazy_gettext as _l

from booking import imports as resource_imports
from core.accounts import imports as account_imports
from core.accounts.models import Role, User
from core.tabular import ImportResult
from web.i18n import translate
from web.templating import current_locale

FORMATS = {"xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
           "csv": "text/csv; charset=utf-8"}


@dataclass(frozen=True)
class ImportKind:
    name: str
    label: object
    roles: frozenset[Role]
    run: Callable[..., ImportResult]
    template: Callable[[str], bytes]
    filename: str

    def allowed(self, user: User) -> bool:
        return user.has_role(*self.roles)


KINDS: dict[str, ImportKind] = {
    "resources": ImportKind("resources", _l("Instruments and pilot lines"), frozenset({Role.LAB_MANAGER, Role.ADMIN}),
                            resource_imports.import_resources, resource_imports.template, "labshare-resources"),
    "organisations": ImportKind("organisations", _l("Organisations"), frozenset({Role.ADMIN}),
                                account_imports.import_organisations, account_imports.organisation_template,
                                "labshare-organisations"),
    "users": ImportKind("users", _l("Users"), frozenset({Role.ADMIN}), account_imports.import_users,
                        account_imports.user_template, "labshare-users"),
}


def kinds_for(user: User) -> list[ImportKind]:
    return [kind for kind in KINDS.values() if kind.allowed(user)]


def error_rows(result: ImportResult) -> list[dict]:
    """Every problem in the user's language: row (as in Excel), column key, column header, message."""
    locale = current_locale()
    rows = []
    for error in result.errors:
        column = result.column(error.column)
        rows.append({"row": error.row, "column": error.column,
                     "header": column.label(locale) if column else (error.column or ""),
                     "message": translate(error.message)})
    return rows
