"""Reading import files: XLSX and CSV in every encoding Chinese offices produce, any header language, bounded."""

from __future__ import annotations

import codecs
import io

import pytest
from openpyxl import Workbook, load_workbook

from core.errors import Message
from core.tabular import (
    Column,
    InvalidFile,
    cell_text,
    parse_bool,
    read_table,
    template_csv,
    template_xlsx,
)

COLUMNS = (Column("name_zh", "名称（中文）", "Name (zh)", True), Column("value", "原值", "Value", True),
           Column("note", "备注", "Note"))


def xlsx(rows) -> bytes:
    workbook = Workbook()
    for row in rows:
        workbook.active.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def problem(exc: InvalidFile) -> str:
    message = exc.fields["file"][0]
    return message.template if isinstance(message, Message) else message


def test_the_templates_header_reads_back_in_both_formats():
    for data in (template_csv(COLUMNS), template_xlsx(COLUMNS, title_zh="测试", title_en="Test")):
        table = read_table(data, "t", COLUMNS)
        assert table.rows == []
        assert table.columns == ("name_zh", "value", "note")


def test_the_xlsx_template_explains_the_columns_and_has_an_example_row():
    workbook = load_workbook(io.BytesIO(template_xlsx(COLUMNS, title_zh="测试", title_en="Test",
                                                      allowed_values=[("类型 / Kind", [("a", "甲", "A")])])))
    assert [c.value for c in workbook.worksheets[0][1]] == ["名称（中文） / Name (zh)", "原值 / Value", "备注 / Note"]
    help_text = " ".join(str(c.value) for row in workbook.worksheets[1].iter_rows() for c in row if c.value)
    assert "Example row" in help_text
    assert "甲" in help_text


def test_the_csv_template_starts_with_a_utf8_bom():
    assert template_csv(COLUMNS).startswith(codecs.BOM_UTF8)


@pytest.mark.parametrize("header", [["名称（中文）", "原值"], ["Name (zh)", "Value"], ["name_zh", "value"],
                                    ["名称(中文) / Name (zh)", "原值/Value"], ["  NAME (ZH) ", "value"]])
def test_any_header_language_is_accepted(header):
    table = read_table(xlsx([header, ["电镜", 1500000.0]]), "t.xlsx", COLUMNS)
    assert table.rows[0].values == {"name_zh": "电镜", "value": "1500000"}
    assert table.rows[0].number == 2


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030", "utf-16"])
def test_csv_in_the_encodings_excel_writes(encoding):
    data = "名称（中文）,原值,备注\r\n扫描电镜,100,“引号”\r\n".encode(encoding)
    table = read_table(data, "t.csv", COLUMNS)
    assert table.rows[0].values == {"name_zh": "扫描电镜", "value": "100", "note": "“引号”"}


def test_blank_rows_are_skipped_and_row_numbers_stay_those_of_excel():
    data = b"name_zh,value\n\n,\na,1\n\nb,2\n"
    assert [(r.number, r.values["name_zh"]) for r in read_table(data, "t.csv", COLUMNS).rows] == [(4, "a"), (6, "b")]


def test_semicolon_and_tab_separated_files():
    for sep in (";", "\t"):
        table = read_table(f"name_zh{sep}value\na{sep}1\n".encode(), "t.csv", COLUMNS)
        assert table.rows[0].values == {"name_zh": "a", "value": "1"}


@pytest.mark.parametrize(("data", "expected"), [
    (b"", "The file is empty."),
    ("名称（中文）,原值,颜色\n".encode(), "Unknown columns: %(columns)s. Use the headers of the template."),
    ("名称（中文）\n".encode(), "Required columns are missing: %(columns)s."),
    ("名称（中文）,原值,name_zh\n".encode(), "The column “%(column)s” appears twice."),
    (b"name_zh,value\na,1,surprise\n", "Row %(row)s has values in a column without a header."),
    (b"\xd0\xcf\x11\xe0rest of an old xls", "Old .xls files are not supported: save the file as .xlsx or CSV."),
    (b"PK\x03\x04 not really a zip", "The file is not a readable .xlsx or CSV file."),
    (b"\xff\xfe\x00\xd8\x00", "The file is not a readable .xlsx or CSV file."),
])
def test_files_that_cannot_be_imported_are_refused_with_a_reason(data, expected):
    with pytest.raises(InvalidFile) as caught:
        read_table(data, "t", COLUMNS)
    assert problem(caught.value) == expected
    assert caught.value.code == "invalid_file"


def test_rows_and_bytes_are_capped():
    data = ("name_zh,value\n" + "a,1\n" * 11).encode()
    with pytest.raises(InvalidFile) as caught:
        read_table(data, "t.csv", COLUMNS, max_rows=10)
    assert "more than" in problem(caught.value)
    assert len(read_table(data, "t.csv", COLUMNS, max_rows=11).rows) == 11
    with pytest.raises(InvalidFile):
        read_table(data, "t.csv", COLUMNS, max_bytes=len(data) - 1)


def test_cells_read_as_typed():
    assert [cell_text(v) for v in (None, 3, 2.5, 1500000.0, True, " x ")] == ["", "3", "2.5", "1500000", "TRUE", "x"]
    assert [parse_bool(t) for t in ("是", "否", "YES", "no", "1", "0", "TRUE", "maybe", "")] == [
        True, False, True, False, True, False, True, None, None]
    assert parse_bool("", default=True) is True


def test_csv_output_never_holds_a_formula_for_excel():
    from core.tabular import rows_csv

    text = rows_csv(["a", "b"], [["=1+1", "ok"], ["-x", "@y"]]).decode("utf-8-sig")
    assert text == "a,b\r\n'=1+1,ok\r\n'-x,'@y\r\n"


def test_initial_passwords_are_long_random_and_excel_safe():
    from core.accounts.imports import PASSWORD_ALPHABET, new_password

    passwords = {new_password() for _ in range(200)}
    assert len(passwords) == 200
    assert all(len(p) == 16 and set(p) <= set(PASSWORD_ALPHABET) for p in passwords)
    assert not set("=+-@0O1lI") & set(PASSWORD_ALPHABET)
