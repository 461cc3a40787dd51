"""Bulk import of organisations and users from the XLSX/CSV templates (platform admins only).

Like booking.imports: a dry run lists every row's problems and writes nothing; a real import checks again
and writes every row or none, with one audit entry. Imported users get a random initial password (its
argon2 hash is stored; the clear text is returned once in `ImportResult.credentials` for the importer to hand
over) because the platform has no e-mailed invitation or password-reset flow yet.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.accounts.credit_code import InvalidCreditCode, make_credit_code, validate_credit_code
from core.accounts.models import Locale, Organisation, OrganisationKind, Role, User, UserRole
from core.accounts.passwords import hash_password
from core.accounts.services import _EMAIL_RE, CREDIT_CODE_MESSAGES, normalise_email
from core.errors import N_, Forbidden, Message
from core.regions import SICHUAN_CITIES
from core.tabular import (
    Column,
    ImportRejected,
    ImportResult,
    Progress,
    RowError,
    choice_index,
    parse_bool,
    pick,
    read_table,
    template_csv,
    template_xlsx,
)

ORG_KIND_VALUES = ((OrganisationKind.UNIVERSITY, "高校", "University"),
                   (OrganisationKind.INSTITUTE, "科研院所", "Research institute"),
                   (OrganisationKind.ENTERPRISE, "企业", "Enterprise"),
                   (OrganisationKind.GOVERNMENT, "政府机构", "Government body"))
ROLE_VALUES = ((Role.RESEARCHER, "科研用户", "Researcher"), (Role.LAB_MANAGER, "实验室管理员", "Lab manager"),
               (Role.FINANCE, "财务", "Finance"), (Role.ADMIN, "平台管理员", "Administrator"))
LOCALE_VALUES = ((Locale.ZH_CN, "中文", "Chinese"), (Locale.EN, "英文", "English"))

_ORG_KINDS = choice_index([(k, (k.value, zh, en)) for k, zh, en in ORG_KIND_VALUES] + [
    (OrganisationKind.UNIVERSITY, ("大学", "高等院校")),
    (OrganisationKind.INSTITUTE, ("研究所", "科研机构", "institute")),
    (OrganisationKind.GOVERNMENT, ("政府", "政府机关", "government"))])
_CITIES = choice_index([(code, (code, zh, en, zh.removesuffix("市"))) for code, (zh, en) in SICHUAN_CITIES.items()])
_ROLES = choice_index([(r, (r.value, zh, en)) for r, zh, en in ROLE_VALUES] + [
    (Role.RESEARCHER, ("研究人员", "用户")), (Role.ADMIN, ("管理员", "admin"))])
_LOCALES = choice_index([(loc, (loc.value, zh, en)) for loc, zh, en in LOCALE_VALUES] + [
    (Locale.ZH_CN, ("zh", "zh-CN", "zh_Hans_CN", "简体中文")), (Locale.EN, ("en_US", "en-US"))])
ROLE_SEPARATORS = (",", "，", "、", ";", "；", "/", "|")

EXAMPLE_CREDIT_CODE = make_credit_code("9", "1", "510100", "MA61R2XW")
ORGANISATION_COLUMNS: tuple[Column, ...] = (
    Column("name_zh", "单位名称（中文）", "Name (zh)", True, "1–200 字", "1 to 200 characters",
           "四川省示例科技有限公司"),
    Column("name_en", "单位名称（英文）", "Name (en)", True, "1–200 字符", "1 to 200 characters",
           "Sichuan Example Technology Co., Ltd."),
    Column("credit_code", "统一社会信用代码", "Unified social credit code", True,
           "18 位，含校验位；文件内及系统中不可重复", "18 characters with check character; unique",
           EXAMPLE_CREDIT_CODE,
           text=True),
    Column("kind", "单位类型", "Kind", True, "高校 / 科研院所 / 企业 / 政府机构",
           "university, institute, enterprise, government", "企业"),
    Column("city", "所在市州", "City or prefecture", True, "市州名称（如 成都市）或行政区划代码（如 510100）",
           "City name (e.g. Chengdu) or division code (e.g. 510100)", "成都市", text=True),
    Column("tech_sme", "科技型中小企业", "Tech SME", False, "是 或 否；留空为 否", "yes or no; empty means no", "是"),
)
USER_COLUMNS: tuple[Column, ...] = (
    Column("email", "电子邮箱", "E-mail", True, "登录名；不可重复", "Sign-in name; unique", "zhang.san@example.cn"),
    Column("name_zh", "姓名（中文）", "Name (zh)", True, "1–100 字", "1 to 100 characters", "张三"),
    Column("name_en", "姓名（英文）", "Name (en)", False, "留空则用中文姓名", "Empty: the Chinese name", "Zhang San"),
    Column("organisation", "所属单位统一社会信用代码", "Organisation credit code", True,
           "单位须已注册（可先导入单位）", "The organisation must be registered (import organisations first)",
           EXAMPLE_CREDIT_CODE, text=True),
    Column("roles", "角色", "Roles", True, "科研用户 / 实验室管理员 / 财务 / 平台管理员，多个用“、”或逗号分隔",
           "researcher, lab_manager, finance, admin; several separated by commas", "科研用户"),
    Column("locale", "界面语言", "Language", False, "中文 或 英文；留空为 中文", "zh_CN or en; empty means zh_CN",
           "中文"),
)


def _require_admin(actor: User) -> None:
    if actor is None or not actor.has_role(Role.ADMIN):
        raise Forbidden()


def _allowed(values) -> list[tuple[str, str, str]]:
    return [(v.value, zh, en) for v, zh, en in values]


def organisation_template(fmt: str) -> bytes:
    if fmt == "csv":
        return template_csv(ORGANISATION_COLUMNS)
    return template_xlsx(ORGANISATION_COLUMNS, title_zh="单位导入模板", title_en="Organisations: import template",
                         allowed_values=[("单位类型 / Kind", _allowed(ORG_KIND_VALUES)),
                                         ("市州 / City or prefecture",
                                          [(code, zh, en) for code, (zh, en) in SICHUAN_CITIES.items()])])


def user_template(fmt: str) -> bytes:
    if fmt == "csv":
        return template_csv(USER_COLUMNS)
    return template_xlsx(USER_COLUMNS, title_zh="用户导入模板", title_en="Users: import template",
                         allowed_values=[("角色 / Roles", _allowed(ROLE_VALUES)),
                                         ("界面语言 / Language", _allowed(LOCALE_VALUES))])


def _name_error(value: str, limit: int) -> str | None:
    if not value.strip() or len(value.strip()) > limit:
        return Message(N_("Enter a name of 1 to %(limit)s characters."), limit=limit)
    return None


def _report(result: ImportResult, number: int, errors: dict[str, list[str]]) -> None:
    for name, messages in errors.items():
        result.errors.extend(RowError(number, name, m) for m in messages)


def import_organisations(db: Session, actor: User, data: bytes, filename: str = "", *, dry_run: bool,
                         progress: Progress | None = None) -> ImportResult:
    """Organisations from the template. See booking.imports.import_resources for the contract."""
    _require_admin(actor)
    table = read_table(data, filename, ORGANISATION_COLUMNS)
    result = ImportResult("organisations", ORGANISATION_COLUMNS, len(table.rows), [], dry_run)
    registered = set(db.scalars(select(Organisation.credit_code)))
    seen: dict[str, int] = {}
    new: list[Organisation] = []
    for done, row in enumerate(table.rows, start=1):
        cells, errors = row.values, {}
        for name in ("name_zh", "name_en"):
            if message := _name_error(cells.get(name, ""), 200):
                errors[name] = [message]
        code = cells.get("credit_code", "")
        try:
            code = validate_credit_code(code)
        except InvalidCreditCode as exc:
            message = CREDIT_CODE_MESSAGES.get(exc.reason, CREDIT_CODE_MESSAGES["check_character"])
            errors["credit_code"] = [Message(message, position=exc.position) if "%(" in message else message]
        else:
            if code in seen:
                errors["credit_code"] = [Message(N_("The same credit code is in row %(row)s."), row=seen[code])]
            elif code in registered:
                errors["credit_code"] = [N_("An organisation with this credit code is already registered.")]
            else:
                seen[code] = row.number
        kind = pick(_ORG_KINDS, cells.get("kind", ""))
        if kind is None:
            errors["kind"] = [N_("Unknown kind of organisation.")]
        city = pick(_CITIES, cells.get("city", ""))
        if city is None:
            errors["city"] = [N_("Unknown city or prefecture.")]
        tech_sme = parse_bool(cells.get("tech_sme", ""), default=False)
        if tech_sme is None:
            errors["tech_sme"] = [N_("Enter 是 or 否 (yes or no).")]
        _report(result, row.number, errors)
        if not errors:
            new.append(Organisation(name_zh=cells["name_zh"].strip(), name_en=cells["name_en"].strip(),
                                    credit_code=code, kind=kind, city=city, tech_sme=tech_sme))
        if progress:
            progress(done, len(table.rows))
    if dry_run:
        return result
    if result.errors:
        raise ImportRejected(result)
    db.add_all(new)
    db.flush()
    result.created = len(new)
    audit.record(db, actor, "import.organisations", None, filename=filename[:200], rows=result.rows,
                 created=result.created, credit_codes=[o.credit_code for o in new][:1000])
    return result


# Letters and digits without look-alikes (0/O, 1/l/I): read aloud or typed from a printout without mistakes, and
# never starting with = + - @, which Excel would take for a formula when the CSV of passwords is opened.
PASSWORD_ALPHABET = "23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"  # noqa: S105 -- an alphabet
PASSWORD_LENGTH = 16  # log2(56) * 16 ≈ 93 bits


def new_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def import_users(db: Session, actor: User, data: bytes, filename: str = "", *, dry_run: bool,
                 progress: Progress | None = None) -> ImportResult:
    """Users from the template, each with a random initial password (in `result.credentials`, once)."""
    _require_admin(actor)
    table = read_table(data, filename, USER_COLUMNS)
    result = ImportResult("users", USER_COLUMNS, len(table.rows), [], dry_run)
    registered = set(db.scalars(select(User.email)))
    organisations: dict[str, int] = dict(db.execute(select(Organisation.credit_code, Organisation.id)).all())
    seen: dict[str, int] = {}
    valid: list[tuple[str, str, str, int, list[Role], Locale]] = []
    total = len(table.rows)
    for done, row in enumerate(table.rows, start=1):
        cells, errors = row.values, {}
        email = normalise_email(cells.get("email", ""))
        if not _EMAIL_RE.match(email) or len(email) > 254:
            errors["email"] = [N_("Enter a valid e-mail address.")]
        elif email in seen:
            errors["email"] = [Message(N_("The same e-mail address is in row %(row)s."), row=seen[email])]
        elif email in registered:
            errors["email"] = [N_("A user with this e-mail address already exists.")]
        else:
            seen[email] = row.number
        if message := _name_error(cells.get("name_zh", ""), 100):
            errors["name_zh"] = [message]
        if len(cells.get("name_en", "").strip()) > 100:
            errors["name_en"] = [N_("Enter a name of at most 100 characters.")]
        code = cells.get("organisation", "")
        try:
            org_id = organisations.get(validate_credit_code(code))
        except InvalidCreditCode:
            org_id = None
        if org_id is None:
            errors["organisation"] = [N_("No registered organisation has this credit code.")]
        roles: list[Role] = []
        text = cells.get("roles", "")
        for separator in ROLE_SEPARATORS:
            text = text.replace(separator, ",")
        for name in filter(None, (part.strip() for part in text.split(","))):
            role = pick(_ROLES, name)
            if role is None:
                errors["roles"] = [Message(N_("Unknown role: %(role)s."), role=name[:50])]
                break
            if role not in roles:
                roles.append(role)
        if not roles and "roles" not in errors:
            errors["roles"] = [N_("Give the user at least one role.")]
        locale = pick(_LOCALES, cells["locale"]) if cells.get("locale") else Locale.ZH_CN
        if locale is None:
            errors["locale"] = [N_("Unknown language.")]
        _report(result, row.number, errors)
        if not errors:
            name_zh = cells["name_zh"].strip()
            valid.append((email, name_zh, cells.get("name_en", "").strip() or name_zh, org_id, roles, locale))
        if progress:
            progress(done, total)
    if dry_run:
        return result
    if result.errors:
        raise ImportRejected(result)
    users = []
    for email, name_zh, name_en, org_id, roles, locale in valid:
        password = new_password()
        users.append(User(email=email, name_zh=name_zh, name_en=name_en, organisation_id=org_id, locale=locale,
                          password_hash=hash_password(password),
                          role_grants=[UserRole(role=r) for r in sorted(roles)]))
        result.credentials.append((email, password))
    db.add_all(users)
    db.flush()
    result.created = len(users)
    audit.record(db, actor, "import.users", None, filename=filename[:200], rows=result.rows, created=result.created,
                 emails=[u.email for u in users][:1000])
    return result
