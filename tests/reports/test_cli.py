"""`labshare reports sharing` on a fresh, migrated database per backend: the annual layout written as XLSX
or CSV; bad arguments give one line and exit non-zero."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from openpyxl import load_workbook

from core.db import begin_write, make_engine
from tests.conftest import create_pg_database, drop_pg_database
from tests.reports.worked_example import build_year
from tests.web.test_cli import CliDatabase, assert_one_line_failure


@pytest.fixture
def cli_db(backend, tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}" if backend == "sqlite" else create_pg_database("labshare_reports_cli")
    engine = make_engine(url)
    try:
        database = CliDatabase(url, engine)
        assert database.run("db", "upgrade").exit_code == 0
        with database.session() as db:
            begin_write(db)
            build_year(db)
            db.commit()
        yield database
    finally:
        engine.dispose()
        if backend == "postgresql":
            drop_pg_database(url)


def test_the_year_as_xlsx(cli_db, tmp_path):
    out = tmp_path / "report.xlsx"
    result = cli_db.run("reports", "sharing", "--year", "2026", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "2 instruments" in result.stderr
    rows = list(load_workbook(out).active.iter_rows(values_only=True))
    assert "2026-01-01" in rows[0][0]
    assert rows[2][:3] == ("序号", "仪器名称", "型号")
    r = next(row for row in rows if row[1] == "扫描电镜R")
    assert (Decimal(str(r[9])), Decimal(str(r[10]))) == (Decimal("4.42"), Decimal("1150"))
    assert rows[-1][0] == "合计"


def test_a_range_as_csv_on_stdout_in_english(cli_db):
    result = cli_db.run("reports", "sharing", "--start", "2026-03-16", "--end", "2026-03-16", "--format", "csv",
                        "--locale", "en", "--output", "-")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout_bytes.decode("utf-8-sig"))))
    assert rows[0][1] == "Instrument"
    r = next(row for row in rows if row[2] == "R-1")
    assert (r[9], r[10], r[11]) == ("3.42", "1000.00", "3.42")


@pytest.mark.parametrize(("args", "fragment"), [
    ((), "--year"),
    (("--year", "2026", "--start", "2026-01-01"), "not both"),
    (("--start", "2026-02-01", "--end", "2026-01-01"), "before"),
    (("--year", "20266"), "20266"),
    (("--year", "2026", "--format", "pdf"), "pdf"),
])
def test_bad_arguments_fail_in_one_line(cli_db, args, fragment):
    assert_one_line_failure(cli_db.run("reports", "sharing", *args), 2, fragment)
