"""Bulk import of resources (instruments and pilot lines) from the XLSX/CSV template: a dry run that reports
every row's problems, and an all-or-nothing import that writes every row or none.

Each row is checked by the catalog's own validation (booking.catalog.build_resource), so an imported resource
obeys exactly the rules of one added by hand. Lab managers import into the facilities they manage, admins
into any. A row that repeats another row of the file, or a resource already registered (same facility, Chinese
name and model), is refused.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from booking.catalog import build_resource
from booking.categories import CATEGORY_NAMES
from booking.models import Facility, OperationMode, Resource, ResourceKind
from booking.permissions import managed_facility_ids
from core import audit
from core.accounts.models import Role, User
from core.errors import N_, Forbidden, InvalidInput, Message
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

KIND_VALUES = ((ResourceKind.INSTRUMENT, "仪器", "Instrument"), (ResourceKind.PILOT_LINE, "中试线", "Pilot line"))
MODE_VALUES = ((OperationMode.SELF_SERVICE, "自主上机", "Self-service"),
               (OperationMode.TECHNICIAN, "技术员代测（送样）", "Technician-run (send samples)"),
               (OperationMode.BOTH, "自主上机或技术员代测", "Self-service or technician-run"))
_KINDS = choice_index([(k, (k.value, zh, en)) for k, zh, en in KIND_VALUES] + [(ResourceKind.PILOT_LINE, ("中试",))])
_MODES = choice_index([(m, (m.value, zh, en)) for m, zh, en in MODE_VALUES] + [
    (OperationMode.TECHNICIAN, ("送样", "技术员代测", "technician-run")),
    (OperationMode.BOTH, ("均可", "两者均可"))])
_CATEGORIES = choice_index([(c, (c.value, zh, en)) for c, (zh, en) in CATEGORY_NAMES.items()])

_YES_NO = "是 / 否"
COLUMNS: tuple[Column, ...] = (
    Column("facility", "实验室", "Facility", True, "实验室（设施）编号，或其中文全称",
           "Facility id, or its exact Chinese name", "1", text=True),
    Column("kind", "类型", "Kind", True, "仪器 或 中试线", "instrument or pilot_line", "仪器"),
    Column("name_zh", "名称（中文）", "Name (zh)", True, "1–200 字", "1 to 200 characters", "场发射扫描电子显微镜"),
    Column("name_en", "名称（英文）", "Name (en)", True, "1–200 字符", "1 to 200 characters",
           "Field-emission scanning electron microscope"),
    Column("model", "型号", "Model", False, "同一设施内“名称（中文）+ 型号”不可重复",
           "Chinese name + model must be unique within a facility", "Sigma 300"),
    Column("manufacturer", "生产厂家", "Manufacturer", False, "", "", "ZEISS"),
    Column("original_value", "原值（元）", "Original value (CNY)", True, "人民币金额，≥ 0", "Amount in CNY, 0 or more",
           "2800000"),
    Column("category", "服务类别", "Service category", True, "见下方“服务类别”表：中文名称或代码",
           "See the table of service categories: Chinese name or code", "检验检测"),
    Column("operation_mode", "运行方式", "Operation mode", True, "自主上机 / 技术员代测（送样）/ 自主上机或技术员代测",
           "self_service, technician or both", "自主上机或技术员代测"),
    Column("voucher_eligible", "可用创新券", "Voucher eligible", False, "是 或 否；留空为 是",
           "yes or no; empty means yes", "是"),
    Column("description_zh", "简介（中文）", "Description (zh)", False, "", "", ""),
    Column("description_en", "简介（英文）", "Description (en)", False, "", "", ""),
    Column("granularity_min", "预约粒度（分钟）", "Slot granularity (min)", False,
           "整除 1440；留空：仪器 30，中试线 1440（按天）",
           "Divides 1440; empty: 30 for instruments, 1440 (days) for pilot lines",
           "30"),
    Column("min_duration_min", "最短时长（分钟）", "Minimum length (min)", False, "", "", "30"),
    Column("max_duration_min", "最长时长（分钟）", "Maximum length (min)", False, "", "", "480"),
    Column("lead_time_min", "提前预约（分钟）", "Lead time (min)", False, "", "", "60"),
    Column("horizon_days", "可预约天数", "Booking horizon (days)", False, "", "", "90"),
    Column("approval_required", "需审批", "Approval required", False, _YES_NO, "yes or no", "否"),
    Column("qualification_required", "需上机资格", "Qualification required", False, _YES_NO, "yes or no", "是"),
)
INT_COLUMNS = ("granularity_min", "min_duration_min", "max_duration_min", "lead_time_min", "horizon_days")
BOOL_COLUMNS = ("voucher_eligible", "approval_required", "qualification_required")
TEXT_COLUMNS = ("name_zh", "name_en", "model", "manufacturer", "description_zh", "description_en")


def allowed_values() -> list[tuple[str, list[tuple[str, str, str]]]]:
    return [
        ("类型 / Kind", [(k.value, zh, en) for k, zh, en in KIND_VALUES]),
        ("服务类别 / Service category", [(c.value, zh, en) for c, (zh, en) in CATEGORY_NAMES.items()]),
        ("运行方式 / Operation mode", [(m.value, zh, en) for m, zh, en in MODE_VALUES]),
    ]


def template(fmt: str) -> bytes:
    if fmt == "csv":
        return template_csv(COLUMNS)
    return template_xlsx(COLUMNS, title_zh="仪器与中试线导入模板",
                         title_en="Instruments and pilot lines: import template", allowed_values=allowed_values())


def _require_importer(actor: User) -> None:
    if actor is None or not actor.has_role(Role.ADMIN, Role.LAB_MANAGER):
        raise Forbidden()


def parse_int(text: str) -> int | None:
    try:
        return int(text.replace(",", "").strip())
    except ValueError:
        return None


def parse_amount(text: str) -> str:
    """"¥1,500,000.00元" → "1500000.00": the catalog's validation then reads it as a Decimal (never a float)."""
    for noise in ("¥", "￥", ",", "，", "元", " "):
        text = text.replace(noise, "")
    return text


def _row_values(cells: dict[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The catalog's field values of one row, and the problems of cells that are not even of the right kind."""
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name in TEXT_COLUMNS:
        if cells.get(name):
            values[name] = cells[name].strip()
    lookups = (("kind", _KINDS), ("category", _CATEGORIES), ("operation_mode", _MODES))
    for name, index in lookups:
        if cells.get(name):
            value = pick(index, cells[name])
            if value is None:
                errors[name] = [N_("Choose one of the listed values.")]
                values[name] = cells[name]  # present, so that the catalog checks the other fields too
            else:
                values[name] = value.value
    if cells.get("original_value"):
        values["original_value"] = parse_amount(cells["original_value"])
    for name in INT_COLUMNS:
        if cells.get(name):
            number = parse_int(cells[name])
            if number is None:
                errors[name] = [N_("Enter a whole number in the allowed range.")]
                values[name] = cells[name]
            else:
                values[name] = number
    for name in BOOL_COLUMNS:
        if cells.get(name):
            flag = parse_bool(cells[name])
            if flag is None:
                errors[name] = [N_("Enter 是 or 否 (yes or no).")]
                values[name] = cells[name]
            else:
                values[name] = flag
    return values, errors


def _facility_lookup(db: Session) -> tuple[dict[int, Facility], dict[str, list[Facility]]]:
    by_id: dict[int, Facility] = {}
    by_name: dict[str, list[Facility]] = {}
    for facility in db.scalars(select(Facility)):
        by_id[facility.id] = facility
        by_name.setdefault(facility.name_zh.strip(), []).append(facility)
    return by_id, by_name


def _duplicate_key(facility_id: int, name_zh: str, model: str) -> tuple[int, str, str]:
    return facility_id, name_zh.strip().casefold(), (model or "").strip().casefold()


def import_resources(db: Session, actor: User, data: bytes, filename: str = "", *, dry_run: bool,
                     progress: Progress | None = None) -> ImportResult:
    """Check every row of the file; unless `dry_run`, write them all in the caller's transaction.

    A dry run returns the result with its errors and writes nothing. A real import with any error raises
    ImportRejected (the caller rolls back; nothing has been flushed). Raises InvalidFile for an unreadable
    file and Forbidden for a user who may import no resources at all."""
    _require_importer(actor)
    table = read_table(data, filename, COLUMNS)
    result = ImportResult("resources", COLUMNS, len(table.rows), [], dry_run)
    scope = managed_facility_ids(db, actor)
    by_id, by_name = _facility_lookup(db)
    existing = {_duplicate_key(*row) for row in db.execute(select(Resource.facility_id, Resource.name_zh,
                                                                  Resource.model))}
    seen: dict[tuple[int, str, str], int] = {}
    built: list[tuple[Resource, Facility]] = []
    total = len(table.rows)
    for done, row in enumerate(table.rows, start=1):
        errors: dict[str, list[str]] = {}
        facility = _resolve_facility(row.values.get("facility", ""), by_id, by_name, errors)
        if facility is not None and scope is not None and facility.id not in scope:
            errors["facility"] = [N_("You do not manage this facility.")]
            facility = None
        values, cell_errors = _row_values(row.values)
        errors.update(cell_errors)
        resource = None
        try:
            resource = build_resource(values)
        except InvalidInput as exc:
            for name, messages in exc.fields.items():
                errors.setdefault(name, list(messages))
        if facility is not None and values.get("name_zh"):
            key = _duplicate_key(facility.id, values["name_zh"], values.get("model", ""))
            if key in seen:
                errors.setdefault("name_zh", []).append(
                    Message(N_("Same facility, Chinese name and model as row %(row)s."), row=seen[key]))
            elif key in existing:
                errors.setdefault("name_zh", []).append(
                    N_("This facility already has a resource with this Chinese name and model."))
            else:
                seen[key] = row.number
        for name, messages in errors.items():
            result.errors.extend(RowError(row.number, name, m) for m in messages)
        if not errors and resource is not None and facility is not None:
            built.append((resource, facility))
        if progress:
            progress(done, total)
    if dry_run:
        return result
    if result.errors:
        raise ImportRejected(result)
    for resource, facility in built:
        resource.facility = facility  # only now in the session: a refused file never reaches the database
    db.add_all(resource for resource, _ in built)
    db.flush()
    result.created = len(built)
    audit.record(db, actor, "import.resources", None, filename=filename[:200], rows=result.rows,
                 created=result.created, facility_ids=sorted({f.id for _, f in built}),
                 first_id=built[0][0].id if built else None, last_id=built[-1][0].id if built else None)
    return result


def _resolve_facility(text: str, by_id: dict[int, Facility], by_name: dict[str, list[Facility]],
                      errors: dict[str, list[str]]) -> Facility | None:
    text = text.strip()
    if not text:
        errors["facility"] = [N_("This field is required.")]
        return None
    named = by_name.get(text, [])
    if len(named) > 1:
        errors["facility"] = [N_("Several facilities have this name: give the facility's id instead.")]
        return None
    if named:
        return named[0]
    number = parse_int(text) if text.isdigit() else None
    if number is not None and number in by_id:
        return by_id[number]
    errors["facility"] = [Message(N_("No facility has the id or name “%(facility)s”."), facility=text[:100])]
    return None
