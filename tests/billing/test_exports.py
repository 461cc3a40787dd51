"""Finance exports: a statement and a claim as CSV (UTF-8 with BOM, money as text), XLSX (exact numbers,
#,##0.00) and PDF (Chinese embedded; checked with pdftotext and rendered with pdftoppm for a look). Every
total is the exact sum of the lines."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from billing import exports
from billing.charges import close_period, issue_credit_note
from billing.models import Statement
from billing.reconcile import reconcile_period
from core.accounts.models import OrganisationKind
from core.db import begin_write
from tests.billing.factories import AFTER_MONTH, IN_MONTH, MONTH, make_usage_session
from tests.factories import make_organisation, make_reservation, make_user

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "exports"
CUSTOMER_ZH = "四川省天府新材料研究院有限公司"
H = 3600


def pdf_text(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "doc.pdf"
    path.write_bytes(data)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout


def render_first_page(data: bytes, name: str) -> Path:
    """Page 1 at 60 dpi as a PNG under test-artifacts/exports/ (to look at)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pdf = ARTIFACTS / f"{name}.pdf"
    pdf.write_bytes(data)
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", str(pdf),
                    str(ARTIFACTS / name)], check=True)
    return ARTIFACTS / f"{name}.png"


def fonts_of(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "fonts.pdf"
    path.write_bytes(data)
    return subprocess.run(["pdffonts", str(path)], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def statement(db, resource, device, card) -> Statement:
    """Three services of one enterprise in MONTH (odd amounts), closed; one charge then credited."""
    from datetime import timedelta

    customer = make_user(db, organisation=make_organisation(db, kind=OrganisationKind.ENTERPRISE,
                                                            name_zh=CUSTOMER_ZH, name_en="Tianfu New Materials"))
    for start_h, minutes in ((0, 95), (3, 50), (6, 125)):  # started quarter hours at 400/h
        start = IN_MONTH + timedelta(hours=start_h)
        make_reservation(db, resource=resource, user=customer, starts_at=start,
                         ends_at=start + timedelta(minutes=minutes))
        make_usage_session(db, device, start, start + timedelta(minutes=minutes - 5))
    begin_write(db)
    reconcile_period(db, None, MONTH, now=AFTER_MONTH)
    close_period(db, None, MONTH, now=AFTER_MONTH)
    return db.scalars(select(Statement)).one()


def test_a_statements_lines_and_totals_are_exact(db, statement):
    doc = exports.load_statement(db, statement.id)
    assert [line.amount for line in doc.lines] == [Decimal("700.00"), Decimal("400.00"), Decimal("900.00")]
    assert doc.gross_total == doc.total == statement.total == Decimal("2000.00")
    assert doc.voucher_total == Decimal("0.00")
    assert doc.net_total == doc.gross_total
    assert doc.organisation == CUSTOMER_ZH
    assert doc.organisation_other == "Tianfu New Materials"
    assert len(doc.facilities) == 1


def test_statement_csv_parses_back_to_its_lines(db, statement):
    doc = exports.load_statement(db, statement.id)
    data = exports.statement_csv(doc)
    assert data.startswith(b"\xef\xbb\xbf")  # Excel in China opens it as UTF-8
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0][0] == "费用编号"
    assert rows[0][9] == "金额"
    body, total = rows[1:-1], rows[-1]
    assert [(int(r[0]), r[1], r[9], r[10], r[11]) for r in body] == [
        (line.charge_id, line.service_date.isoformat(), f"{line.amount:.2f}", f"{line.voucher:.2f}", f"{line.net:.2f}")
        for line in doc.lines]
    assert total[0] == "合计"
    assert total[9:] == ["2000.00", "0.00", "2000.00"]
    assert sum(Decimal(r[9]) for r in body) == Decimal(total[9])
    english = list(csv.reader(io.StringIO(exports.statement_csv(
        exports.load_statement(db, statement.id, locale="en")).decode("utf-8-sig"))))
    assert english[0][9] == "Amount"
    assert english[1][3].startswith("SEM")


def test_statement_xlsx_holds_exact_numbers_formatted_as_money(db, statement):
    doc = exports.load_statement(db, statement.id)
    sheet = load_workbook(io.BytesIO(exports.statement_xlsx(doc))).active
    rows = list(sheet.iter_rows())
    header = next(i for i, row in enumerate(rows) if row[0].value == "费用编号")
    lines = rows[header + 1:-1]
    assert [Decimal(str(row[9].value)) for row in lines] == [line.amount for line in doc.lines]
    assert all(row[9].number_format == "#,##0.00" and row[8].number_format == "#,##0.00" for row in lines)
    total = rows[-1]
    assert total[0].value == "合计"
    assert Decimal(str(total[9].value)) == doc.gross_total
    assert rows[2][1].value == CUSTOMER_ZH


def test_statement_pdf_embeds_chinese_and_states_the_total(db, statement, tmp_path):
    doc = exports.load_statement(db, statement.id)
    data = exports.statement_pdf(doc)
    text = pdf_text(data, tmp_path)
    assert CUSTOMER_ZH in text
    assert "对账单" in text
    assert statement.number in text
    assert "2000.00" in text
    assert "¥2,000.00" in text
    assert "WenQuanYiMicroHei" in fonts_of(data, tmp_path)
    assert " yes " in fonts_of(data, tmp_path)
    assert render_first_page(data, "statement").stat().st_size > 5000


def test_a_credit_note_appears_negative_on_the_next_statement(db, statement):
    charge_id = exports.load_statement(db, statement.id).lines[0].charge_id
    credit = issue_credit_note(db, make_user(db, roles=("finance",)), charge_id, "多计了一刻钟",
                               now=datetime(2026, 10, 20, tzinfo=UTC))
    begin_write(db)
    close_period(db, None, "2026-10", now=datetime(2026, 11, 5, tzinfo=UTC))
    following = db.scalars(select(Statement).where(Statement.id != statement.id)).one()
    doc = exports.load_statement(db, following.id)
    assert [(line.credit_note, line.amount) for line in doc.lines] == [(True, Decimal("-700.00"))]
    assert doc.gross_total == following.total == credit.total
    rows = list(csv.reader(io.StringIO(exports.statement_csv(doc).decode("utf-8-sig"))))
    assert rows[-1][9] == "-700.00"


def test_claim_exports_carry_items_sessions_and_digests(db, tmp_path):
    from billing import claims
    from tests.billing.test_claims import World as ClaimWorld

    begin_write(db)
    world = ClaimWorld(db)
    claim = world.complete_draft(db)
    claims.submit_claim(db, world.claimant, claim.id, on=date(2026, 4, 1))
    doc = exports.load_claim(db, claim.id)
    (line,) = doc.lines
    assert doc.lines_total == claim.total == line.amount
    assert line.sessions
    assert line.sessions[0].digest
    assert len(line.evidence_digest) == 64
    assert line.invoice_number == "INV-2026-0001"

    rows = list(csv.reader(io.StringIO(exports.claim_csv(doc).decode("utf-8-sig"))))
    assert rows[1][8] == f"{line.amount:.2f}"
    assert rows[1][11] == line.evidence_digest
    assert rows[-1][8] == f"{claim.total:.2f}"

    book = load_workbook(io.BytesIO(exports.claim_xlsx(doc)))
    items, sessions = book.worksheets
    amounts = [row[8] for row in items.iter_rows() if isinstance(row[0].value, int)]
    assert [Decimal(str(c.value)) for c in amounts] == [line.amount]
    assert amounts[0].number_format == "#,##0.00"
    assert sessions["G2"].value == line.sessions[0].digest

    data = exports.claim_pdf(doc)
    flat = "".join(pdf_text(data, tmp_path).split())  # table cells wrap
    assert "兑付申请" in flat
    assert line.holder in flat
    assert "INV-2026-0001" in flat
    assert "BANK-REF-77" in flat
    assert line.sessions[0].digest in flat
    assert line.evidence_digest in flat
    assert f"{claim.total:.2f}" in flat
    assert render_first_page(data, "claim").stat().st_size > 5000


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils is not installed")
def test_pdf_builders_work_without_a_database():
    line = exports.StatementLine(1, False, date(2026, 9, 8), "测试设施", "扫描电镜", "张三", "usage",
                                 Decimal("1.2500"), "hour", Decimal("400.00"), Decimal("500.00"), Decimal("250.00"))
    doc = exports.StatementDoc(1, "ST-2026-09-0001", "2026-09", datetime(2026, 10, 5, tzinfo=UTC), "某公司", "Some Co.",
                               "91510100MA0000000X", ("测试设施",), (line,), Decimal("500.00"))
    assert doc.net_total == Decimal("250.00")
    assert exports.statement_pdf(doc).startswith(b"%PDF")
    assert exports.quantity_text(Decimal("1.2500")) == "1.25"
    assert exports.money_text(Decimal("-0")) == "0.00"


def test_typed_text_never_runs_as_a_formula_or_breaks_the_workbook():
    # names and reasons are typed by people: "=HYPERLINK(…)" must stay text, control characters must not make
    # the file unreadable (openpyxl refuses them), and CSV cells must not start a formula in Excel
    evil = ["=HYPERLINK(\"http://x\")", "bell\x07here", "+1", "@SUM(A1)", Decimal("-50.00")]
    book = load_workbook(io.BytesIO(exports.xlsx_workbook([("s", [["h"] * 5, evil], {4}, set(), 0)])))
    row = next(book.active.iter_rows(min_row=2, values_only=True))
    assert row[:4] == ("=HYPERLINK(\"http://x\")", "bellhere", "+1", "@SUM(A1)")
    assert book.active.cell(2, 1).data_type == "s"
    text = exports.csv_bytes([evil]).decode("utf-8-sig")
    assert text.startswith('"\'=HYPERLINK(')
    assert "'+1,'@SUM(A1),-50.00" in text
