"""Spreadsheets in and out for bulk imports: bilingual templates (XLSX, CSV) and a small, bounded reader.

A template names each column in both languages ("名称（中文） / Name (zh)"); the reader accepts a header in
Chinese, English, the bilingual form or the column's key, in any order. Files are .xlsx (openpyxl) or CSV in
UTF-8 (with or without BOM) or GBK/GB18030, as Chinese Excel saves it. Blank rows are skipped; row numbers
are those Excel shows (the header is row 1). Anything unreadable is an `InvalidFile` with a reason, never an
exception from the parser.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from core.errors import N_, InvalidInput, Message

Progress = Callable[[int, int], None]  # an import's rows done so far, of how many

MAX_ROWS = 20_000
MAX_BYTES = 10 * 1024 * 1024
MAX_CELL_CHARS = 10_000  # no column of any import needs more; a bigger cell is a wrong file
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_TYPE = "text/csv; charset=utf-8"


@dataclass(frozen=True)
class Column:
    """One column of an import: its key (the service's field name), its headers, and help for the template."""

    key: str
    zh: str
    en: str
    required: bool = False
    help_zh: str = ""
    help_en: str = ""
    example: str = ""
    text: bool = False  # stored as text in the XLSX template (credit codes, ids: Excel would mangle them)

    @property
    def header(self) -> str:
        return f"{self.zh} / {self.en}"

    def label(self, locale: str) -> str:
        return self.en if locale == "en" else self.zh


@dataclass(frozen=True)
class Row:
    number: int  # as Excel shows it: the header is row 1
    values: dict[str, str]


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)
    columns: tuple[str, ...] = ()  # the keys present in the file's header


class InvalidFile(InvalidInput):
    """The file as a whole cannot be imported (not a spreadsheet, wrong columns, too big)."""

    code = "invalid_file"
    message = N_("The file cannot be imported.")

    def __init__(self, message: str):
        super().__init__({"file": [message]})


def _fold(text: str) -> str:
    """A header as compared: NFKC (full-width brackets → ASCII), no spaces or underscores, case-folded."""
    return re.sub(r"[\s_]+", "", unicodedata.normalize("NFKC", text)).casefold()


def _header_index(columns: Sequence[Column]) -> dict[str, str]:
    index: dict[str, str] = {}
    for column in columns:
        for name in (column.key, column.zh, column.en, column.header, f"{column.zh}/{column.en}"):
            index[_fold(name)] = column.key
    return index


def cell_text(value: Any) -> str:
    """A cell as the text a user typed: 1500000.0 → "1500000", True → "TRUE", a date → ISO."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        exact = Decimal(repr(value))
        return format(exact.quantize(Decimal(1)) if exact == exact.to_integral_value() else exact.normalize(), "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).strip()


def read_table(data: bytes, filename: str, columns: Sequence[Column], *, max_rows: int = MAX_ROWS,
               max_bytes: int = MAX_BYTES) -> Table:
    """The data rows of an uploaded .xlsx or .csv file, keyed by column key; raises InvalidFile."""
    if len(data) > max_bytes:
        raise InvalidFile(Message(N_("The file is larger than %(mb)s MB."), mb=max_bytes // (1024 * 1024)))
    if not data.strip():
        raise InvalidFile(N_("The file is empty."))
    if data[:4] == b"\xd0\xcf\x11\xe0":
        raise InvalidFile(N_("Old .xls files are not supported: save the file as .xlsx or CSV."))
    raw_rows = _xlsx_rows(data) if data[:4] == b"PK\x03\x04" else _csv_rows(data)
    return _tabulate(raw_rows, columns, max_rows)


def _tabulate(raw_rows: Iterator[tuple[int, list[str]]], columns: Sequence[Column], max_rows: int) -> Table:
    index = _header_index(columns)
    header: list[str] | None = None
    for number, cells in raw_rows:
        if any(cells):
            header = cells
            header_number = number
            break
    if header is None:
        raise InvalidFile(N_("The file has no header row."))
    if header_number != 1:
        raise InvalidFile(N_("The header must be in the first row."))
    keys: list[str | None] = []
    unknown: list[str] = []
    for name in header:
        if not name:
            keys.append(None)
            continue
        key = index.get(_fold(name))
        if key is None:
            unknown.append(name)
        elif key in keys:
            raise InvalidFile(Message(N_("The column “%(column)s” appears twice."), column=name))
        keys.append(key)
    if unknown:
        raise InvalidFile(Message(N_("Unknown columns: %(columns)s. Use the headers of the template."),
                                  columns="、".join(unknown[:10])))
    missing = [c.header for c in columns if c.required and c.key not in keys]
    if missing:
        raise InvalidFile(Message(N_("Required columns are missing: %(columns)s."), columns="、".join(missing)))
    table = Table(columns=tuple(k for k in keys if k))
    for number, cells in raw_rows:
        if not any(cells):
            continue
        if len(table.rows) >= max_rows:
            raise InvalidFile(Message(N_("The file has more than %(n)s rows: split it into several files."),
                                      n=max_rows))
        stray = [cell for key, cell in zip(keys, cells, strict=False) if key is None] + cells[len(keys):]
        if any(stray):
            raise InvalidFile(Message(N_("Row %(row)s has values in a column without a header."), row=number))
        if any(len(cell) > MAX_CELL_CHARS for cell in cells):
            raise InvalidFile(Message(N_("Row %(row)s has a cell longer than %(n)s characters."), row=number,
                                      n=MAX_CELL_CHARS))
        table.rows.append(Row(number, {key: cell for key, cell in zip(keys, cells, strict=False) if key}))
    return table


def _xlsx_rows(data: bytes) -> Iterator[tuple[int, list[str]]]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        sheet = workbook.worksheets[0]
        rows = sheet.iter_rows(values_only=True)
        first = next(rows, None)
    except Exception as exc:  # a damaged or foreign zip: openpyxl raises many kinds of error
        raise InvalidFile(N_("The file is not a readable .xlsx or CSV file.")) from exc
    return _xlsx_iter(workbook, first, rows)


def _xlsx_iter(workbook, first, rows) -> Iterator[tuple[int, list[str]]]:
    try:
        if first is None:
            return
        width = max((i + 1 for i, v in enumerate(first) if v not in (None, "")), default=0)
        yield 1, [cell_text(v) for v in first[:width]]
        for number, values in enumerate(rows, start=2):
            cells = [cell_text(v) for v in values]
            while cells and not cells[-1]:
                cells.pop()
            yield number, cells
    except InvalidFile:
        raise
    except Exception as exc:
        raise InvalidFile(N_("The file is not a readable .xlsx or CSV file.")) from exc
    finally:
        workbook.close()


def decode_csv(data: bytes) -> str:
    """CSV text: UTF-8 (BOM or not), UTF-16 with BOM, else GB18030 (a superset of GBK) from Chinese Excel."""
    if data.startswith(codecs.BOM_UTF8):
        encodings = ("utf-8-sig",)
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encodings = ("utf-16",)
    else:
        encodings = ("utf-8", "gb18030")
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" not in text:
            return text
    raise InvalidFile(N_("The file is not a readable .xlsx or CSV file."))


def _csv_rows(data: bytes) -> Iterator[tuple[int, list[str]]]:
    text = decode_csv(data)
    first_line = text.split("\n", 1)[0]
    delimiter = max((",", "\t", ";"), key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)

    def rows() -> Iterator[tuple[int, list[str]]]:
        try:
            for cells in reader:
                cells = [cell.strip() for cell in cells]
                while cells and not cells[-1]:
                    cells.pop()
                yield reader.line_num, cells
        except csv.Error as exc:
            raise InvalidFile(Message(N_("The CSV file is malformed near line %(row)s."), row=reader.line_num)) from exc

    return rows()


# --- reports and values ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowError:
    """One problem of one row: `row` as Excel numbers it, `column` a column key (None: the row as a whole)."""

    row: int
    column: str | None
    message: str  # an English template (N_ or Message), translated by the caller


@dataclass
class ImportResult:
    kind: str
    columns: tuple[Column, ...]
    rows: int
    errors: list[RowError]
    dry_run: bool
    created: int = 0
    # users only: (e-mail, initial password), shown once to the importer and never stored in clear
    credentials: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def column(self, key: str | None) -> Column | None:
        return next((c for c in self.columns if c.key == key), None)


class ImportRejected(InvalidInput):
    """A real import with at least one bad row: nothing was written. `result.errors` lists every problem."""

    code = "import_rejected"
    message = N_("%(count)s problems were found in the file; nothing was imported.")

    def __init__(self, result: ImportResult):
        super().__init__({}, None, count=len(result.errors))
        self.result = result


YES = frozenset({"是", "y", "yes", "true", "t", "1", "√", "✓", "可", "可以"})
NO = frozenset({"否", "n", "no", "false", "f", "0", "×", "不", "不可"})


def parse_bool(text: str, default: bool | None = None) -> bool | None:
    """是/否, yes/no, true/false, 1/0; empty gives `default`; anything else None (the caller reports it)."""
    folded = _fold(text)
    if not folded:
        return default
    if folded in YES:
        return True
    if folded in NO:
        return False
    return None


def choice_index(options: Sequence[tuple[Any, Sequence[str]]]) -> dict[str, Any]:
    """A lookup from every spelling (code, 中文, English) to its value, for `pick`."""
    return {_fold(str(name)): value for value, names in options for name in names}


def pick(index: dict[str, Any], text: str) -> Any:
    return index.get(_fold(text))


# --- templates ----------------------------------------------------------------------------------------

def template_csv(columns: Sequence[Column]) -> bytes:
    """The header row as CSV, UTF-8 with BOM so that Excel shows the Chinese headers."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([c.header for c in columns])
    return codecs.BOM_UTF8 + out.getvalue().encode("utf-8")


def _inert(text: str) -> str:
    """A cell Excel shows as typed: text starting with = + - @ would be run as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def rows_csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """Rows as CSV for Excel: UTF-8 with BOM, and no cell that Excel would evaluate as a formula."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([[_inert(cell_text(v)) for v in row] for row in rows])
    return codecs.BOM_UTF8 + out.getvalue().encode("utf-8")


def template_xlsx(columns: Sequence[Column], *, title_zh: str, title_en: str,
                  allowed_values: Sequence[tuple[str, Sequence[tuple[str, str, str]]]] = ()) -> bytes:
    """A workbook: sheet 1 the header to fill in (help as cell comments), sheet 2 the columns explained with an
    example row, then one table per list of allowed values ((value, 中文, English) rows)."""
    from openpyxl import Workbook
    from openpyxl.comments import Comment
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    bold, fill = Font(bold=True), PatternFill("solid", fgColor="DDEBF7")
    required_fill = PatternFill("solid", fgColor="FCE4D6")
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "导入 Import"
    for i, column in enumerate(columns, start=1):
        cell = sheet.cell(row=1, column=i, value=column.header)
        cell.font, cell.fill = bold, required_fill if column.required else fill
        note = "\n".join(p for p in (("必填 / Required" if column.required else "选填 / Optional"),
                                     column.help_zh, column.help_en) if p)
        cell.comment = Comment(note, "LabShare", width=300, height=120)
        letter = get_column_letter(i)
        sheet.column_dimensions[letter].width = max(14, min(40, len(column.header) + 4))
        if column.text:  # text, so that Excel keeps 18-digit codes and leading zeros
            sheet.column_dimensions[letter].number_format = "@"
    sheet.freeze_panes = "A2"

    help_sheet = workbook.create_sheet("说明 Help")
    help_sheet.append([f"{title_zh} / {title_en}"])
    help_sheet["A1"].font = Font(bold=True, size=13)
    help_sheet.append(["第 1 行是表头；从第 2 行起每行一条记录。空行会被忽略。先“试导入”检查，全部无误后才会写入。",
                       "Row 1 is the header; one record per row from row 2. Blank rows are ignored. A dry run "
                       "checks every row; nothing is written unless every row is valid."])
    help_sheet.append([])
    help_sheet.append(["列 / Column", "必填 / Required", "说明", "Notes", "示例 / Example"])
    for cell in help_sheet[help_sheet.max_row]:
        cell.font, cell.fill = bold, fill
    for column in columns:
        help_sheet.append([column.header, "是 / yes" if column.required else "否 / no", column.help_zh,
                           column.help_en, column.example])
    help_sheet.append([])
    help_sheet.append(["示例行 / Example row（复制到第一个工作表 / copy it to the first sheet）"])
    help_sheet[help_sheet.max_row][0].font = bold
    help_sheet.append([c.header for c in columns])
    help_sheet.append([c.example for c in columns])
    for title, values in allowed_values:
        help_sheet.append([])
        help_sheet.append([title])
        help_sheet[help_sheet.max_row][0].font = bold
        help_sheet.append(["值 / Value", "中文", "English"])
        for cell in help_sheet[help_sheet.max_row]:
            cell.font, cell.fill = bold, fill
        for value in values:
            help_sheet.append(list(value))
    for letter, width in zip("ABCDE", (34, 16, 50, 60, 30), strict=True):
        help_sheet.column_dimensions[letter].width = width
    for row in help_sheet.iter_rows(min_row=2):
        for cell in row:
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
