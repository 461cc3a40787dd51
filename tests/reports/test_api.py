"""/api/v1/reports/sharing and its drill-downs, on the worked example (tests/reports/worked_example.py)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from openpyxl import load_workbook

from core.accounts.models import Role
from reports.sharing import ReportScope, compute, year_range
from tests.factories import make_facility, make_resource, make_token, make_user
from tests.reports.worked_example import build_year


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def year(db):
    return build_year(db)


@pytest.fixture
def admin_headers(db):
    return bearer(make_token(db, make_user(db, roles=(Role.ADMIN,)))[1])


def test_the_year_s_figures_per_instrument_with_where_they_come_from(client, db, year, admin_headers):
    response = client.get("/api/v1/reports/sharing?year=2026&per_page=1000", headers=admin_headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.json
    assert (body["start"], body["end"], body["group"]) == ("2026-01-01", "2026-12-31", "instrument")
    r = next(item for item in body["items"] if item["resource_id"] == year["r"].id)
    # the session still open at the end of 2026 counts up to the real clock, which the API reads; the rest of
    # the worked example is fixed (tests/reports/test_sharing.py checks every figure against a frozen clock)
    expected = next(f for f in compute(db, ReportScope(*year_range(2026))).instruments if f.resource_id == year["r"].id)
    assert r["effective_hours"] == str(expected.effective_hours)
    assert Decimal(r["effective_hours"]) >= Decimal("9.42")
    assert (r["external_hours"], r["sharing_rate"]) == ("4.42", str(expected.sharing_rate))
    assert (r["external_income"], r["voucher_subsidy"], r["voucher_share"]) == ("1150.00", "500.00", "0.4348")
    assert (r["reservations_due"], r["no_shows"], r["users_served"]) == (4, 1, 4)
    assert r["metered"] is True
    assert "¥400.00" in r["fee_standard"]  # the enterprise price of the card in force
    sessions = client.get(r["sessions_url"] + "&per_page=100", headers=admin_headers).json
    assert sessions["total"] == 7
    # the open session is still running (counted against the real clock here), so compare the closed ones
    closed = [s for s in sessions["items"] if s["ended_at"] is not None]
    assert sum(Decimal(s["counted_hours"]) for s in closed if s["external"]) == Decimal("4.42")
    charges = client.get(r["charges_url"], headers=admin_headers).json
    assert sum(Decimal(c["total"]) for c in charges["items"]) == Decimal(r["income"])
    assert Decimal(body["totals"]["external_income"]) == sum(Decimal(i["external_income"]) for i in body["items"])


@pytest.mark.parametrize("group", ["facility", "organisation", "city"])
def test_groups(client, db, year, admin_headers, group):
    body = client.get(f"/api/v1/reports/sharing?year=2026&group={group}&facility_id={year['facility'].id}",
                      headers=admin_headers).json
    [row] = body["items"]
    assert row["instruments"] == 2
    assert row["external_income"] == "1150.00"
    assert row["external_organisations_served"] == 2


def test_downloads_in_the_annual_layout(client, db, year, admin_headers):
    url = f"/api/v1/reports/sharing?year=2026&facility_id={year['facility'].id}"
    response = client.get(url + "&format=csv", headers=admin_headers)
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].endswith('.csv"')
    rows = list(csv.reader(io.StringIO(response.get_data().decode("utf-8-sig"))))
    assert rows[0][:9] == ["序号", "仪器名称", "型号", "原值（元）", "所属单位", "所在平台/场地", "所在市州",
                           "共享方式", "收费标准"]
    r = next(row for row in rows if row[1] == "扫描电镜R")
    assert (r[9], r[10], r[18], r[20]) == ("4.42", "1150.00", "500.00", "设备计量")
    assert rows[-1][0] == "合计"
    response = client.get(url + "&format=xlsx&locale=en", headers=admin_headers)
    sheet = load_workbook(io.BytesIO(response.get_data())).active
    values = list(sheet.iter_rows(values_only=True))
    assert values[2][1] == "Instrument"
    row = next(v for v in values if v[2] == "R-1")
    # spreadsheet numbers come back as floats; their shortest text is the exact amount written
    assert (Decimal(str(row[9])), Decimal(str(row[10]))) == (Decimal("4.42"), Decimal("1150"))


def test_a_lab_manager_sees_their_facilities_only(client, db, year):
    headers = bearer(make_token(db, year["manager"])[1])
    other = make_facility(db)
    make_resource(db, facility=other)
    body = client.get("/api/v1/reports/sharing?year=2026", headers=headers).json
    assert {item["resource_id"] for item in body["items"]} == {year["r"].id, year["u"].id}
    response = client.get(f"/api/v1/reports/sharing?year=2026&facility_id={other.id}", headers=headers)
    assert response.status_code == 403
    foreign = make_resource(db, facility=other)
    response = client.get(f"/api/v1/reports/sharing/resources/{foreign.id}/sessions?start=2026-01-01&end=2026-12-31",
                          headers=headers)
    assert response.status_code == 403


def test_researchers_and_strangers_are_refused(client, db, year):
    assert client.get("/api/v1/reports/sharing?year=2026").status_code == 401
    researcher = bearer(make_token(db, make_user(db))[1])
    response = client.get("/api/v1/reports/sharing?year=2026", headers=researcher)
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"


@pytest.mark.parametrize(("query", "field"), [
    ("", "year"),
    ("year=2026&start=2026-01-01&end=2026-02-01", "year"),
    ("start=2026-03-01&end=2026-02-01", "end"),
    ("start=0001-01-01&end=2026-02-01", "start"),
    ("start=2026-01-01&end=9999-12-31", "end"),
    ("year=99999", "year"),
    ("year=2026&group=colour", "group"),
    ("year=2026&format=pdf", "format"),
    ("year=2026&city=chengdu", "city"),
])
def test_bad_queries_say_what_is_wrong(client, db, admin_headers, query, field):
    response = client.get(f"/api/v1/reports/sharing?{query}", headers=admin_headers)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert field in str(response.json["error"]["details"])


def test_unknown_resource_is_404(client, db, admin_headers):
    response = client.get("/api/v1/reports/sharing/resources/999999/charges?start=2026-01-01&end=2026-12-31",
                          headers=admin_headers)
    assert response.status_code == 404


def test_the_openapi_document_lists_the_report(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    assert "/api/v1/reports/sharing" in paths or "/reports/sharing" in paths
