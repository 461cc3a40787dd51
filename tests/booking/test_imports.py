"""Bulk import of resources: every row checked by the catalog's rules, a dry run that writes nothing, then all
rows or none; lab managers only into their own facilities."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from booking import imports
from booking.models import OperationMode, Resource, ResourceKind
from core.audit import AuditEntry
from core.errors import Forbidden, Message
from core.tabular import ImportRejected
from tests.factories import make_facility, make_resource, make_user, row_counts


def filled_template(rows: list[list[object]], fmt: str = "xlsx") -> bytes:
    """The downloadable template, filled in below its header as a user would in Excel."""
    template = imports.template(fmt)
    if fmt == "csv":
        return template + "".join(",".join(map(str, r)) + "\r\n" for r in rows).encode("utf-8")
    workbook = load_workbook(io.BytesIO(template))
    for row in rows:
        workbook.worksheets[0].append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def row(facility_, name: str, **overrides) -> list[object]:
    values = {"facility": facility_.id, "kind": "仪器", "name_zh": name, "name_en": f"{name} (en)", "model": "M1",
              "manufacturer": "ZEISS", "original_value": 1500000, "category": "检验检测",
              "operation_mode": "自主上机或技术员代测", "voucher_eligible": "是"}
    values.update(overrides)
    return [values.get(c.key, "") for c in imports.COLUMNS]


def messages(result) -> list[tuple[int, str, str]]:
    return [(e.row, e.column, e.message.template if isinstance(e.message, Message) else e.message)
            for e in result.errors]


@pytest.fixture
def admin(db):
    return make_user(db, roles=("admin",))


def test_a_filled_template_imports_every_row(db, admin):
    facility = make_facility(db)
    data = filled_template([row(facility, "扫描电镜"),
                            row(facility, "发酵中试线", kind="中试线", category="概念验证和中试熟化",
                                operation_mode="technician", original_value="¥3,200,000.50", approval_required="是")])

    result = imports.import_resources(db, admin, data, "r.xlsx", dry_run=False)

    assert (result.rows, result.created, result.errors) == (2, 2, [])
    sem, line = db.scalars(select(Resource).where(Resource.facility_id == facility.id).order_by(Resource.id)).all()
    assert (sem.kind, sem.operation_mode, sem.original_value, sem.voucher_eligible) == (
        ResourceKind.INSTRUMENT, OperationMode.BOTH, Decimal("1500000.00"), True)
    assert (line.kind, line.granularity_min, line.original_value, line.approval_required) == (
        ResourceKind.PILOT_LINE, 1440, Decimal("3200000.50"), True)
    assert "扫描电镜" in sem.search_text
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "import.resources")).one()
    assert entry.data["created"] == 2
    assert entry.actor_id == admin.id


def test_the_facility_may_be_named_by_its_chinese_name(db, admin):
    facility = make_facility(db)
    data = filled_template([row(facility, "电镜", facility=facility.name_zh)], fmt="csv")

    assert imports.import_resources(db, admin, data, "r.csv", dry_run=False).created == 1


def test_a_dry_run_writes_nothing(db, admin):
    facility = make_facility(db)
    before = row_counts(db, Resource, AuditEntry)

    result = imports.import_resources(db, admin, filled_template([row(facility, f"仪器{i}") for i in range(5)]),
                                      "r.xlsx", dry_run=True)
    db.flush()

    assert (result.ok, result.rows, result.created) == (True, 5, 0)
    assert row_counts(db, Resource, AuditEntry) == before


def test_one_bad_row_among_many_writes_nothing_and_is_named_by_row_and_column(db, admin):
    facility = make_facility(db)
    rows = [row(facility, f"仪器{i}") for i in range(30)]
    rows[16] = row(facility, "坏行", original_value="很贵", category="天文学")
    before = row_counts(db, Resource)

    with pytest.raises(ImportRejected) as caught:
        imports.import_resources(db, admin, filled_template(rows), "r.xlsx", dry_run=False)
    db.flush()

    assert row_counts(db, Resource) == before
    assert sorted(messages(caught.value.result)) == [
        (18, "category", "Choose one of the listed values."),
        (18, "original_value", "Enter an amount in CNY, 0 or more.")]


def test_every_problem_of_every_row_is_listed(db, admin):
    facility = make_facility(db)
    rows = [row(facility, "", name_en=""), row(facility, "好", granularity_min="七", min_duration_min=600,
                                              max_duration_min=60), row(facility, "无权", facility=999999)]

    result = imports.import_resources(db, admin, filled_template(rows), "r.xlsx", dry_run=True)

    found = messages(result)
    assert (2, "name_zh", "This field is required.") in found
    assert (2, "name_en", "This field is required.") in found
    assert (3, "granularity_min", "Enter a whole number in the allowed range.") in found
    assert (4, "facility", "No facility has the id or name “%(facility)s”.") in found


def test_duplicates_in_the_file_and_in_the_catalog_are_refused(db, admin):
    facility = make_facility(db)
    make_resource(db, facility=facility, name_zh="透射电镜", model="JEM-2100")
    rows = [row(facility, "扫描电镜"), row(facility, "扫描电镜"), row(facility, "扫描电镜", model="other"),
            row(facility, "透射电镜", model="jem-2100")]

    result = imports.import_resources(db, admin, filled_template(rows), "r.xlsx", dry_run=True)

    assert messages(result) == [
        (3, "name_zh", "Same facility, Chinese name and model as row %(row)s."),
        (5, "name_zh", "This facility already has a resource with this Chinese name and model.")]
    assert "row 2" in str(result.errors[0].message)


def test_a_lab_manager_imports_only_into_their_own_facilities(db):
    manager = make_user(db, roles=("lab_manager",))
    own, other = make_facility(db, managers=(manager,)), make_facility(db)
    before = row_counts(db, Resource)

    with pytest.raises(ImportRejected) as caught:
        imports.import_resources(db, manager, filled_template([row(own, "甲"), row(other, "乙")]), "r.xlsx",
                                 dry_run=False)

    assert messages(caught.value.result) == [(3, "facility", "You do not manage this facility.")]
    assert row_counts(db, Resource) == before
    assert imports.import_resources(db, manager, filled_template([row(own, "甲")]), "r.xlsx",
                                    dry_run=False).created == 1


def test_researchers_cannot_import_resources(db):
    with pytest.raises(Forbidden):
        imports.import_resources(db, make_user(db), imports.template("csv"), "r.csv", dry_run=True)


def test_english_only_headers_and_english_values(db, admin):
    facility = make_facility(db)
    header = "Facility,Kind,Name (zh),Name (en),Original value (CNY),Service category,Operation mode\r\n"
    data = (header + f"{facility.id},pilot_line,中试线,Pilot,100,Testing and inspection,Self-service\r\n").encode()

    result = imports.import_resources(db, admin, data, "r.csv", dry_run=False)

    assert result.created == 1
    created = db.scalars(select(Resource).where(Resource.facility_id == facility.id)).one()
    assert (created.kind, created.category, created.operation_mode) == ("pilot_line", "testing", "self_service")


def test_a_gbk_csv_from_chinese_excel(db, admin):
    facility = make_facility(db)
    header = ",".join(c.zh for c in imports.COLUMNS[:9]) + "\r\n"
    line = f"{facility.id},仪器,核磁共振波谱仪,NMR,AVANCE,Bruker,\"4,000,000\",检验检测,送样\r\n"

    result = imports.import_resources(db, admin, (header + line).encode("gbk"), "r.csv", dry_run=False)

    assert result.created == 1
    assert db.scalars(select(Resource.name_zh).where(Resource.facility_id == facility.id)).one() == "核磁共振波谱仪"


def test_two_thousand_rows(db, admin):
    """Not quadratic: lookups are sets and dicts, and the rows are inserted in one flush."""
    facility = make_facility(db)
    rows = [row(facility, f"仪器{i}", model=f"M-{i}") for i in range(2000)]

    result = imports.import_resources(db, admin, filled_template(rows, fmt="csv"), "r.csv", dry_run=False)

    assert result.created == 2000
    assert row_counts(db, Resource)["resource"] >= 2000
