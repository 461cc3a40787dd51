"""Finance exports: statements and voucher claims as CSV, XLSX and printable PDF (Chinese text embedded).

Two layers: `load_statement` / `load_claim` read a statement or claim into frozen rows (database, no Flask),
and the builders (`statement_csv`, `statement_xlsx`, `statement_pdf`, `claim_csv`, …) turn those rows into
bytes without touching the database. Money stays Decimal throughout: CSV writes it as text with two places,
XLSX as exact numbers with the format `#,##0.00`, and every total is the exact sum of the lines shown.

Labels come from this module (Chinese and English), not from the web catalog, so that the CLI and the web
produce the same documents.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.models import BillingPeriod, Charge, ChargeKind, ChargeLine, Statement
from billing.voucher_models import VoucherApplication, VoucherClaim, VoucherClaimItem
from booking.models import Facility, Reservation, Resource
from core.accounts.models import Organisation, User
from core.errors import NotFound
from core.money import to_cny
from core.timeutil import DEFAULT_TIMEZONE, to_local

ZERO = Decimal("0.00")
CJK_FONT_FILE = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
CJK_FONT = "WenQuanYiMicroHei"
MONEY_FORMAT = "#,##0.00"
QUANTITY_FORMAT = "#,##0.####"

LABELS: dict[str, dict[str, str]] = {
    "zh_CN": {
        "statement": "对账单", "claim": "科技创新券兑付申请", "number": "编号", "period": "账期",
        "organisation": "单位", "credit_code": "统一社会信用代码", "facilities": "服务设施", "issued_at": "出具时间",
        "charge": "费用编号", "service_date": "服务日期", "facility": "设施", "resource": "仪器/中试线",
        "user": "使用人", "item": "项目", "quantity": "数量", "unit": "单位", "unit_price": "单价",
        "amount": "金额", "voucher": "创新券抵扣", "net": "应付", "total": "合计", "gross_total": "费用合计",
        "voucher_total": "创新券抵扣合计", "net_total": "应付合计", "programme": "创新券项目", "claimant": "申请单位",
        "mode": "兑付方式", "state": "状态", "holder": "持券企业", "provider": "服务机构", "reservation": "预约",
        "eligible_fee": "可抵扣费用", "subsidy": "申请兑付金额", "invoice": "发票号", "payment": "付款流水号",
        "digest": "遥测数据摘要 (SHA-256)", "provider_confirmed": "服务机构确认", "customer_confirmed": "用户确认",
        "sessions": "实测使用记录", "device": "设备", "start": "开始", "end": "结束", "points": "数据点",
        "evidence": "证据", "submitted_at": "提交时间", "payout": "拨付流水号", "page": "第 %(n)s 页",
        "credit_note": "红字冲销", "yes": "是", "no": "否", "none": "—",
        "kind.usage": "仪器使用", "kind.setup": "开机/准备费", "kind.technician": "技术人员服务",
        "kind.minimum": "最低收费补足", "kind.no_show": "爽约费", "kind.late_cancellation": "逾期取消费",
        "kind.credit": "红字冲销",
        "unit.hour": "小时", "unit.day": "天", "unit.batch": "批", "unit.sample": "样品", "unit.run": "次",
        "unit.charge": "项", "unit.booked_fee": "预约费用比例",
        "mode.provider_claims": "通兑（服务机构申请）", "mode.enterprise_reimbursed": "通用（企业申请）",
        "state.draft": "草稿", "state.submitted": "已提交", "state.approved": "已批准", "state.rejected": "已驳回",
        "state.paid": "已拨付",
    },
    "en": {
        "statement": "Statement", "claim": "Innovation voucher claim", "number": "Number", "period": "Period",
        "organisation": "Organisation", "credit_code": "Unified social credit code", "facilities": "Facilities",
        "issued_at": "Issued", "charge": "Charge", "service_date": "Service date", "facility": "Facility",
        "resource": "Resource", "user": "User", "item": "Item", "quantity": "Quantity", "unit": "Unit",
        "unit_price": "Unit price", "amount": "Amount", "voucher": "Voucher", "net": "Net",
        "total": "Total", "gross_total": "Charges total", "voucher_total": "Voucher coverage total",
        "net_total": "Net total", "programme": "Programme", "claimant": "Claimant", "mode": "Redemption",
        "state": "State", "holder": "Holder", "provider": "Provider", "reservation": "Reservation",
        "eligible_fee": "Eligible fee", "subsidy": "Subsidy claimed", "invoice": "Invoice", "payment": "Payment ref.",
        "digest": "Telemetry digest (SHA-256)", "provider_confirmed": "Provider confirmed",
        "customer_confirmed": "Customer confirmed", "sessions": "Measured usage sessions", "device": "Device",
        "start": "Start", "end": "End", "points": "Points", "evidence": "Evidence", "submitted_at": "Submitted",
        "payout": "Payout ref.", "page": "Page %(n)s", "credit_note": "Credit note", "yes": "yes", "no": "no",
        "none": "—",
        "kind.usage": "Use of the resource", "kind.setup": "Setup fee", "kind.technician": "Technician time",
        "kind.minimum": "Top-up to the minimum charge", "kind.no_show": "No-show fee",
        "kind.late_cancellation": "Late cancellation fee", "kind.credit": "Credit note",
        "unit.hour": "hour", "unit.day": "day", "unit.batch": "batch", "unit.sample": "sample", "unit.run": "run",
        "unit.charge": "item", "unit.booked_fee": "share of booked fee",
        "mode.provider_claims": "provider claims (通兑)", "mode.enterprise_reimbursed": "enterprise reimbursed (通用)",
        "state.draft": "draft", "state.submitted": "submitted", "state.approved": "approved",
        "state.rejected": "rejected", "state.paid": "paid",
    },
}


def labels(locale: str) -> dict[str, str]:
    return LABELS["en" if locale == "en" else "zh_CN"]


def money_text(amount: Decimal) -> str:
    """Two places, no grouping, no symbol: what a spreadsheet or an accounting import reads back exactly."""
    return f"{to_cny(amount):.2f}"


def quantity_text(quantity: Decimal) -> str:
    text = f"{quantity:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _name(obj, locale: str) -> str:
    if obj is None:
        return ""
    return (obj.name_en if locale == "en" else obj.name_zh) or obj.name_zh


# --- what a statement says -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StatementLine:
    charge_id: int
    credit_note: bool
    service_date: date
    facility: str
    resource: str
    user: str
    kind: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal
    voucher: Decimal = ZERO  # covered by an innovation voucher

    @property
    def net(self) -> Decimal:
        return self.amount - self.voucher


@dataclass(frozen=True, slots=True)
class StatementDoc:
    id: int
    number: str
    month: str  # YYYY-MM
    issued_at: datetime
    organisation: str
    organisation_other: str  # the name in the other language, for the header
    credit_code: str
    facilities: tuple[str, ...]
    lines: tuple[StatementLine, ...]
    total: Decimal  # as stored on the statement
    locale: str = "zh_CN"
    timezone: str = DEFAULT_TIMEZONE

    @property
    def gross_total(self) -> Decimal:
        return sum((line.amount for line in self.lines), ZERO)

    @property
    def voucher_total(self) -> Decimal:
        return sum((line.voucher for line in self.lines), ZERO)

    @property
    def net_total(self) -> Decimal:
        return sum((line.net for line in self.lines), ZERO)


def load_statement(db: Session, statement_id: int, *, locale: str = "zh_CN") -> StatementDoc:
    """A statement with every line of its charges and credit notes, and the voucher coverage of each line."""
    statement = db.get(Statement, statement_id)
    if statement is None:
        raise NotFound("statement", statement_id)
    org = db.get_one(Organisation, statement.organisation_id)
    period = db.get_one(BillingPeriod, statement.period_id)
    covered = dict(db.execute(
        select(VoucherApplication.charge_line_id, VoucherApplication.amount)
        .join(Charge, Charge.id == VoucherApplication.charge_id)
        .where(Charge.statement_id == statement.id)).all())
    rows = db.execute(
        select(Charge, ChargeLine, Resource, Facility, User)
        .join(ChargeLine, ChargeLine.charge_id == Charge.id)
        .join(Resource, Resource.id == Charge.resource_id)
        .join(Facility, Facility.id == Charge.facility_id)
        .outerjoin(User, User.id == Charge.user_id)
        .where(Charge.statement_id == statement.id)
        .order_by(Charge.service_date, Charge.id, ChargeLine.id)).all()
    lines = tuple(StatementLine(
        charge_id=charge.id, credit_note=charge.kind == ChargeKind.CREDIT_NOTE, service_date=charge.service_date,
        facility=_name(facility, locale), resource=_name(resource, locale), user=_name(user, locale),
        kind=line.kind.value, quantity=line.quantity, unit=line.unit, unit_price=line.unit_price,
        amount=line.amount, voucher=covered.get(line.id, ZERO)) for charge, line, resource, facility, user in rows)
    facilities = tuple(dict.fromkeys(line.facility for line in lines))
    return StatementDoc(
        id=statement.id, number=statement.number, month=f"{period.month:%Y-%m}", issued_at=statement.issued_at,
        organisation=_name(org, locale), organisation_other=org.name_zh if locale == "en" else org.name_en,
        credit_code=org.credit_code, facilities=facilities, lines=lines, total=statement.total, locale=locale)


def _statement_header(doc: StatementDoc) -> list[str]:
    t = labels(doc.locale)
    return [t["charge"], t["service_date"], t["facility"], t["resource"], t["user"], t["item"], t["quantity"],
            t["unit"], t["unit_price"], t["amount"], t["voucher"], t["net"]]


def _kind_label(t: dict[str, str], line: StatementLine) -> str:
    text = t.get(f"kind.{line.kind}", line.kind)
    return f"{text} ({t['credit_note']})" if line.credit_note and line.kind != "credit" else text


def _statement_cells(doc: StatementDoc, line: StatementLine) -> list[object]:
    t = labels(doc.locale)
    return [line.charge_id, line.service_date.isoformat(), line.facility, line.resource, line.user,
            _kind_label(t, line), line.quantity, t.get(f"unit.{line.unit}", line.unit), line.unit_price, line.amount,
            line.voucher, line.net]


def _cell_text(value: object) -> object:
    """Text a spreadsheet must not run: a leading =, +, - or @ would start a formula (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def csv_bytes(rows: Iterable[Sequence[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow(["" if v is None else money_text(v) if isinstance(v, Decimal) and not isinstance(v, bool)
                         else _cell_text(v) for v in row])
    # UTF-8 with a byte order mark: Excel (as used in China) then opens it as UTF-8, not GBK
    return buffer.getvalue().encode("utf-8-sig")


def statement_csv(doc: StatementDoc) -> bytes:
    """One row per line (money as text with two places), then the totals row."""
    t = labels(doc.locale)

    def rows():
        yield _statement_header(doc)
        for line in doc.lines:
            cells = _statement_cells(doc, line)
            cells[6] = quantity_text(line.quantity)
            yield cells
        yield [t["total"], "", "", "", "", "", "", "", "", doc.gross_total, doc.voucher_total, doc.net_total]

    return csv_bytes(rows())


def xlsx_workbook(sheets: list[tuple[str, list[list[object]], set[int], set[int], int]]) -> bytes:
    """Workbook bytes: (title, rows, money column indexes, quantity column indexes, header row index)."""
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Font

    workbook = Workbook()
    workbook.remove(workbook.active)
    for title, rows, money_cols, quantity_cols, header_row in sheets:
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append([ILLEGAL_CHARACTERS_RE.sub("", v) if isinstance(v, str) else v for v in row])
            for cell in sheet[sheet.max_row]:
                if cell.data_type == "f":  # text typed by someone, such as "=HYPERLINK(…)": never a formula
                    cell.data_type = "s"
        for cell in sheet[header_row + 1]:
            cell.font = Font(bold=True)
        for row in sheet.iter_rows(min_row=header_row + 2):
            for cell in row:
                if cell.column - 1 in money_cols and isinstance(cell.value, Decimal | int):
                    cell.number_format = MONEY_FORMAT
                elif cell.column - 1 in quantity_cols and isinstance(cell.value, Decimal | int):
                    cell.number_format = QUANTITY_FORMAT
        for column in sheet.columns:
            width = max((len(str(c.value)) for c in column if c.value is not None), default=8)
            sheet.column_dimensions[column[0].column_letter].width = min(48, max(10, width + 4))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def statement_xlsx(doc: StatementDoc) -> bytes:
    """A sheet with a short header, the lines and the totals; amounts are exact numbers formatted #,##0.00."""
    t = labels(doc.locale)
    rows: list[list[object]] = [
        [t["statement"], doc.number], [t["period"], doc.month], [t["organisation"], doc.organisation],
        [t["credit_code"], doc.credit_code], [], _statement_header(doc)]
    header_row = len(rows) - 1
    rows += [_statement_cells(doc, line) for line in doc.lines]
    rows.append([t["total"], None, None, None, None, None, None, None, None, doc.gross_total, doc.voucher_total,
                 doc.net_total])
    return xlsx_workbook([(doc.number, rows, {8, 9, 10, 11}, {6}, header_row)])


# --- what a claim says ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EvidenceSession:
    usage_session_id: int
    device_id: str
    start: datetime | None
    end: datetime | None
    point_count: int | None
    digest: str | None


@dataclass(frozen=True, slots=True)
class ClaimLine:
    item_id: int
    charge_id: int
    reservation_id: int | None
    reservation_window: str
    service_date: date
    holder: str
    provider: str
    resource: str
    eligible_fee: Decimal
    amount: Decimal
    invoice_number: str
    payment_reference: str
    evidence_digest: str | None
    provider_confirmed_at: datetime | None
    customer_confirmed_at: datetime | None
    sessions: tuple[EvidenceSession, ...] = ()


@dataclass(frozen=True, slots=True)
class ClaimDoc:
    id: int
    programme: str
    programme_code: str
    issuer: str
    month: str
    claimant: str
    claimant_credit_code: str
    mode: str
    state: str
    created_at: datetime
    submitted_at: datetime | None
    payout_reference: str
    rejection_reason: str
    lines: tuple[ClaimLine, ...]
    total: Decimal
    locale: str = "zh_CN"
    timezone: str = DEFAULT_TIMEZONE
    facilities: tuple[str, ...] = field(default=())

    @property
    def lines_total(self) -> Decimal:
        return sum((line.amount for line in self.lines), ZERO)

    @property
    def eligible_total(self) -> Decimal:
        return sum((line.eligible_fee for line in self.lines), ZERO)


def _ns_time(ns: int | None) -> datetime | None:
    from datetime import UTC

    return None if ns is None else datetime.fromtimestamp(ns / 1_000_000_000, tz=UTC)


def load_claim(db: Session, claim_id: int, *, locale: str = "zh_CN") -> ClaimDoc:
    """A claim with its items, the reservation and measured sessions (with digests) behind each."""
    claim = db.get(VoucherClaim, claim_id)
    if claim is None:
        raise NotFound("voucher_claim", claim_id)
    period = db.get_one(BillingPeriod, claim.period_id)
    claimant = db.get_one(Organisation, claim.claimant_id)
    items: list[VoucherClaimItem] = list(claim.items)
    orgs = {o.id: o for o in db.scalars(select(Organisation).where(Organisation.id.in_(
        {i.holder_id for i in items} | {i.provider_id for i in items})))}
    charges = {c.id: c for c in db.scalars(select(Charge).where(Charge.id.in_({i.charge_id for i in items})))}
    reservations = {r.id: r for r in db.scalars(select(Reservation).where(Reservation.id.in_(
        {i.reservation_id for i in items if i.reservation_id})))}
    resources = {r.id: r for r in db.scalars(select(Resource).where(Resource.id.in_(
        {c.resource_id for c in charges.values()})))}
    facilities = {f.id: f for f in db.scalars(select(Facility).where(Facility.id.in_(
        {c.facility_id for c in charges.values()})))}
    lines = []
    for item in items:
        charge = charges[item.charge_id]
        facility = facilities[charge.facility_id]
        reservation = reservations.get(item.reservation_id) if item.reservation_id else None
        window = ""
        if reservation is not None:
            start = to_local(reservation.starts_at, facility.timezone)
            end = to_local(reservation.ends_at, facility.timezone)
            window = f"{start:%Y-%m-%d %H:%M}–{end:%H:%M}" if start.date() == end.date() else \
                f"{start:%Y-%m-%d %H:%M}–{end:%Y-%m-%d %H:%M}"
        sessions = tuple(EvidenceSession(
            usage_session_id=s["usage_session_id"], device_id=s["device_id"], start=_ns_time(s.get("start_ns")),
            end=_ns_time(s.get("end_ns")), point_count=s.get("point_count"), digest=s.get("digest"))
            for s in item.sessions)
        lines.append(ClaimLine(
            item_id=item.id, charge_id=item.charge_id, reservation_id=item.reservation_id,
            reservation_window=window, service_date=item.service_date,
            holder=_name(orgs.get(item.holder_id), locale), provider=_name(orgs.get(item.provider_id), locale),
            resource=_name(resources.get(charge.resource_id), locale), eligible_fee=item.eligible_fee,
            amount=item.amount, invoice_number=item.invoice_number, payment_reference=item.payment_reference,
            evidence_digest=item.evidence_digest, provider_confirmed_at=item.provider_confirmed_at,
            customer_confirmed_at=item.customer_confirmed_at, sessions=sessions))
    programme = claim.programme
    return ClaimDoc(
        id=claim.id, programme=programme.name_en if locale == "en" else programme.name_zh,
        programme_code=programme.code, issuer=programme.issuer_en if locale == "en" else programme.issuer_zh,
        month=f"{period.month:%Y-%m}", claimant=_name(claimant, locale), claimant_credit_code=claimant.credit_code,
        mode=claim.mode.value, state=claim.state.value, created_at=claim.created_at, submitted_at=claim.submitted_at,
        payout_reference=claim.payout_reference, rejection_reason=claim.rejection_reason, lines=tuple(lines),
        total=claim.total, locale=locale,
        facilities=tuple(dict.fromkeys(_name(facilities[charges[i.charge_id].facility_id], locale) for i in items)))


def _claim_header(doc: ClaimDoc) -> list[str]:
    t = labels(doc.locale)
    return ["#", t["service_date"], t["holder"], t["provider"], t["resource"], t["reservation"], t["charge"],
            t["eligible_fee"], t["subsidy"], t["invoice"], t["payment"], t["digest"], t["provider_confirmed"],
            t["customer_confirmed"]]


def _when(moment: datetime | None, doc) -> str:
    return "" if moment is None else f"{to_local(moment, doc.timezone):%Y-%m-%d %H:%M}"


def _claim_cells(doc: ClaimDoc, line: ClaimLine) -> list[object]:
    reservation = f"#{line.reservation_id} {line.reservation_window}" if line.reservation_id else ""
    return [line.item_id, line.service_date.isoformat(), line.holder, line.provider, line.resource, reservation,
            line.charge_id, line.eligible_fee, line.amount, line.invoice_number, line.payment_reference,
            line.evidence_digest or "", _when(line.provider_confirmed_at, doc), _when(line.customer_confirmed_at, doc)]


def claim_csv(doc: ClaimDoc) -> bytes:
    t = labels(doc.locale)

    def rows():
        yield _claim_header(doc)
        for line in doc.lines:
            yield _claim_cells(doc, line)
        yield [t["total"], "", "", "", "", "", "", doc.eligible_total, doc.lines_total, "", "", "", "", ""]

    return csv_bytes(rows())


def claim_xlsx(doc: ClaimDoc) -> bytes:
    """Two sheets: the items with totals, and every measured session with its digest."""
    t = labels(doc.locale)
    rows: list[list[object]] = [
        [t["claim"], f"#{doc.id}"], [t["programme"], f"{doc.programme} ({doc.programme_code})"],
        [t["period"], doc.month], [t["claimant"], doc.claimant], [t["credit_code"], doc.claimant_credit_code],
        [t["mode"], t.get(f"mode.{doc.mode}", doc.mode)], [t["state"], t.get(f"state.{doc.state}", doc.state)], [],
        _claim_header(doc)]
    header_row = len(rows) - 1
    rows += [_claim_cells(doc, line) for line in doc.lines]
    rows.append([t["total"], None, None, None, None, None, None, doc.eligible_total, doc.lines_total])
    sessions: list[list[object]] = [["#", t["charge"], t["device"], t["start"], t["end"], t["points"], t["digest"]]]
    for line in doc.lines:
        for s in line.sessions:
            sessions.append([line.item_id, line.charge_id, s.device_id, _when(s.start, doc), _when(s.end, doc),
                             s.point_count, s.digest or ""])
    return xlsx_workbook([(f"claim-{doc.id}", rows, {7, 8}, set(), header_row),
                  (t["sessions"][:31], sessions, set(), set(), 0)])


# --- PDF ---------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _register_font() -> str:
    """Embeds WenQuanYi Micro Hei (TrueType outlines, so reportlab can subset and embed it)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    pdfmetrics.registerFont(TTFont(CJK_FONT, str(CJK_FONT_FILE), subfontIndex=0))
    return CJK_FONT


def _styles():
    from reportlab.lib.styles import ParagraphStyle

    font = _register_font()
    base = ParagraphStyle("base", fontName=font, fontSize=8.5, leading=11, wordWrap="CJK")
    return {
        "base": base,
        "title": ParagraphStyle("title", parent=base, fontSize=16, leading=20, spaceAfter=6),
        "h2": ParagraphStyle("h2", parent=base, fontSize=11, leading=14, spaceBefore=8, spaceAfter=4),
        "small": ParagraphStyle("small", parent=base, fontSize=7, leading=9),
        "right": ParagraphStyle("right", parent=base, alignment=2),
        "mono": ParagraphStyle("mono", parent=base, fontSize=6.5, leading=8, wordWrap="CJK"),
    }


def _escape(text: object) -> str:
    from xml.sax.saxutils import escape

    return escape(str(text))


def _grid_table(data, widths, *, header_rows: int = 1, total_row: bool = False):
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    table = Table(data, colWidths=widths, repeatRows=header_rows, hAlign="LEFT")
    shaded = (0, 0), (-1, header_rows - 1) if header_rows else (0, -1)  # no header row: the key column
    style = [
        ("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#9aa5b1")),
        ("BACKGROUND", *shaded, colors.HexColor("#e8eef5")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3),
    ]
    if total_row:
        style.append(("BACKGROUND", (0, -1), (-1, -1), colors.HexColor("#f3f4f6")))
    table.setStyle(TableStyle(style))
    return table


def _pdf(story_builder, title: str, footer: str) -> bytes:
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.units import mm
    from reportlab.platypus import SimpleDocTemplate

    buffer = io.BytesIO()
    font = _register_font()

    def on_page(canvas, document):
        canvas.saveState()
        canvas.setFont(font, 7)
        canvas.drawString(12 * mm, 8 * mm, footer)
        canvas.drawRightString(landscape(A4)[0] - 12 * mm, 8 * mm, str(document.page))
        canvas.restoreState()

    document = SimpleDocTemplate(buffer, pagesize=landscape(A4), leftMargin=12 * mm, rightMargin=12 * mm,
                                 topMargin=12 * mm, bottomMargin=14 * mm, title=title, author="LabShare")
    document.build(story_builder(document.width), onFirstPage=on_page, onLaterPages=on_page)
    return buffer.getvalue()


def _key_values(pairs: list[tuple[str, str]], styles, width: float):
    from reportlab.platypus import Paragraph

    rows = [[Paragraph(_escape(k), styles["base"]), Paragraph(_escape(v), styles["base"])] for k, v in pairs]
    return _grid_table(rows, [width * 0.22, width * 0.78], header_rows=0) if rows else None


def statement_pdf(doc: StatementDoc) -> bytes:
    """A printable statement (A4 landscape): header with organisation and facilities, the lines, the totals."""
    from reportlab.platypus import Paragraph, Spacer

    t, styles = labels(doc.locale), _styles()

    def story(width: float):
        p = lambda text, style="base": Paragraph(_escape(text), styles[style])  # noqa: E731
        header = [(t["number"], doc.number), (t["period"], doc.month),
                  (t["organisation"], f"{doc.organisation}  {doc.organisation_other}".strip()),
                  (t["credit_code"], doc.credit_code), (t["facilities"], "、".join(doc.facilities) or t["none"]),
                  (t["issued_at"], _when(doc.issued_at, doc))]
        rows = [[p(h) for h in _statement_header(doc)]]
        for line in doc.lines:
            cells = _statement_cells(doc, line)
            rows.append([p(cells[0]), p(cells[1]), p(cells[2]), p(cells[3]), p(cells[4]), p(cells[5]),
                         p(quantity_text(line.quantity), "right"), p(cells[7]), p(money_text(line.unit_price), "right"),
                         p(money_text(line.amount), "right"), p(money_text(line.voucher), "right"),
                         p(money_text(line.net), "right")])
        rows.append([p(t["total"]), "", "", "", "", "", "", "", "", p(money_text(doc.gross_total), "right"),
                     p(money_text(doc.voucher_total), "right"), p(money_text(doc.net_total), "right")])
        shares = [0.06, 0.08, 0.12, 0.14, 0.08, 0.12, 0.06, 0.05, 0.07, 0.08, 0.07, 0.07]
        table = _grid_table(rows, [width * s for s in shares], total_row=True)
        totals = [(t["gross_total"], f"¥{doc.gross_total:,.2f}"), (t["voucher_total"], f"¥{doc.voucher_total:,.2f}"),
                  (t["net_total"], f"¥{doc.net_total:,.2f}")]
        return [p(f"{t['statement']} · {doc.organisation}", "title"), _key_values(header, styles, width),
                Spacer(1, 8), table, Spacer(1, 8), _key_values(totals, styles, width * 0.5)]

    return _pdf(story, f"{t['statement']} {doc.number}", f"LabShare · {t['statement']} {doc.number}")


def claim_pdf(doc: ClaimDoc) -> bytes:
    """The evidence pack of a claim: header, the items with invoice and payment references and confirmations,
    and per item the reservation and the measured usage sessions with their SHA-256 digests."""
    from reportlab.platypus import Paragraph, Spacer

    t, styles = labels(doc.locale), _styles()

    def story(width: float):
        p = lambda text, style="base": Paragraph(_escape(text), styles[style])  # noqa: E731
        header = [(t["programme"], f"{doc.programme} ({doc.programme_code}) · {doc.issuer}"),
                  (t["period"], doc.month), (t["claimant"], doc.claimant), (t["credit_code"], doc.claimant_credit_code),
                  (t["facilities"], "、".join(doc.facilities) or t["none"]),
                  (t["mode"], t.get(f"mode.{doc.mode}", doc.mode)),
                  (t["state"], t.get(f"state.{doc.state}", doc.state)),
                  (t["submitted_at"], _when(doc.submitted_at, doc) or t["none"])]
        if doc.payout_reference:
            header.append((t["payout"], doc.payout_reference))
        items = [[p(h) for h in ("#", t["service_date"], t["holder"], t["resource"], t["reservation"],
                                 t["eligible_fee"], t["subsidy"], t["invoice"], t["payment"],
                                 t["provider_confirmed"], t["customer_confirmed"])]]
        for line in doc.lines:
            reservation = f"#{line.reservation_id} {line.reservation_window}" if line.reservation_id else t["none"]
            items.append([p(line.item_id), p(line.service_date.isoformat()), p(line.holder), p(line.resource),
                          p(reservation), p(money_text(line.eligible_fee), "right"),
                          p(money_text(line.amount), "right"), p(line.invoice_number or t["none"]),
                          p(line.payment_reference or t["none"]),
                          p(_when(line.provider_confirmed_at, doc) or t["none"]),
                          p(_when(line.customer_confirmed_at, doc) or t["none"])])
        items.append([p(t["total"]), "", "", "", "", p(money_text(doc.eligible_total), "right"),
                      p(money_text(doc.lines_total), "right"), "", "", "", ""])
        shares = [0.03, 0.075, 0.12, 0.11, 0.145, 0.075, 0.075, 0.1, 0.1, 0.085, 0.085]
        flow = [p(f"{t['claim']} #{doc.id} · {doc.claimant}", "title"), _key_values(header, styles, width),
                Spacer(1, 8), _grid_table(items, [width * s for s in shares], total_row=True),
                p(t["evidence"], "h2")]
        for line in doc.lines:
            flow.append(p(f"#{line.item_id} · {line.resource} · {line.service_date.isoformat()} · "
                          f"{t['digest']}: {line.evidence_digest or t['none']}", "small"))
            rows = [[p(h) for h in (t["device"], t["start"], t["end"], t["points"], t["digest"])]]
            for s in line.sessions:
                rows.append([p(s.device_id), p(_when(s.start, doc)), p(_when(s.end, doc)),
                             p("" if s.point_count is None else s.point_count, "right"),
                             p(s.digest or t["none"], "mono")])
            if len(rows) > 1:
                flow.append(_grid_table(rows, [width * s for s in (0.16, 0.14, 0.14, 0.08, 0.48)]))
            flow.append(Spacer(1, 6))
        return flow

    return _pdf(story, f"{t['claim']} #{doc.id}", f"LabShare · {t['claim']} #{doc.id}")
