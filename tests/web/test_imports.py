"""Import pages and API: template download → fill in → dry run → confirm; all rows or none; per-role access."""

from __future__ import annotations

import base64
import dataclasses
import io
import re

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from booking.models import Resource
from core.accounts.models import Organisation, User
from core.accounts.passwords import verify_password
from core.audit import AuditEntry
from tests.factories import (
    PASSWORD,
    make_facility,
    make_organisation,
    make_token,
    make_user,
    row_counts,
    unique_credit_code,
)

TABLES = (Resource, Organisation, User, AuditEntry)


def fill_xlsx(template: bytes, rows: list[dict[str, object]]) -> bytes:
    """Fill the downloaded template below its header, matching cells to the header's English part."""
    workbook = load_workbook(io.BytesIO(template))
    sheet = workbook.worksheets[0]
    headers = [cell.value.split(" / ")[1] for cell in sheet[1]]
    for values in rows:
        sheet.append([values.get(h, "") for h in headers])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def fill_csv(template: bytes, rows: list[dict[str, object]], encoding: str = "utf-8-sig") -> bytes:
    header = template.decode("utf-8-sig").strip()
    names = [h.split(" / ")[1] for h in header.split(",")]
    lines = [header] + [",".join(str(r.get(n, "")) for n in names) for r in rows]
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


def resource_row(facility, name: str, **extra) -> dict[str, object]:
    return {"Facility": facility.id, "Kind": "仪器", "Name (zh)": name, "Name (en)": "Instrument", "Model": "X1",
            "Original value (CNY)": 2000000, "Service category": "检验检测", "Operation mode": "自主上机", **extra}


class Importer:
    def __init__(self, client, auth):
        self.client, self.auth = client, auth

    def template(self, kind: str, fmt: str) -> bytes:
        response = self.client.get(f"/imports/templates/{kind}.{fmt}")
        assert response.status_code == 200
        assert "attachment" in response.headers["Content-Disposition"]
        return response.data

    def check(self, kind: str, data: bytes, filename: str):
        token = self.auth.csrf_token(f"/imports?kind={kind}")
        return self.client.post("/imports/check", data={"csrf_token": token, "kind": kind,
                                                        "file": (io.BytesIO(data), filename)},
                                content_type="multipart/form-data")

    def confirm(self, page: str):
        form = re.search(r'data-testid="import-confirm">(.*?)</form>', page, re.S).group(1)
        fields = dict(re.findall(r'name="(\w+)" type="hidden" value="([^"]*)"', form))
        return self.client.post("/imports/confirm", data=fields)


@pytest.fixture(autouse=True)
def staging_in_tmp(app, tmp_path):
    """Staged uploads go below the data directory: a temporary one here, not the working tree's."""
    app.config["LABSHARE_SETTINGS"] = dataclasses.replace(app.config["LABSHARE_SETTINGS"], data_dir=str(tmp_path))
    return tmp_path / "import-staging"


@pytest.fixture
def importer(client, auth):
    return Importer(client, auth)


def sign_in(auth, *roles, db, **extra) -> User:
    user = make_user(db, roles=roles, locale="en", **extra)
    assert auth.login(user.email, PASSWORD).status_code == 302
    return user


def test_resources_round_trip_from_the_downloaded_template(db, auth, importer, staging_in_tmp):
    admin = sign_in(auth, "admin", db=db)
    facility = make_facility(db)
    data = fill_xlsx(importer.template("resources", "xlsx"),
                     [resource_row(facility, "扫描电镜"), resource_row(facility, "透射电镜", Kind="中试线")])
    before = row_counts(db, *TABLES)

    checked = importer.check("resources", data, "instruments.xlsx")

    page = checked.get_data(as_text=True)
    assert checked.status_code == 200
    assert 'data-testid="import-ready"' in page
    assert "2 rows are ready" in page
    assert row_counts(db, *TABLES) == before  # the dry run wrote nothing
    done = importer.confirm(page)
    assert done.status_code == 302
    assert done.headers["Location"] == "/manage/facilities"
    names = set(db.scalars(select(Resource.name_zh).where(Resource.facility_id == facility.id)))
    assert names == {"扫描电镜", "透射电镜"}
    audit = db.scalars(select(AuditEntry).where(AuditEntry.action == "import.resources")).one()
    assert (audit.actor_id, audit.data["created"]) == (admin.id, 2)
    assert list(staging_in_tmp.iterdir()) == []  # the staged file is deleted once imported
    again = importer.confirm(page)
    assert again.status_code == 302
    assert "/imports" in again.headers["Location"]
    assert db.scalar(select(Resource.id).where(Resource.facility_id == facility.id).limit(5).offset(2)) is None


def test_a_bad_row_lists_row_and_column_and_nothing_is_written(db, auth, importer):
    sign_in(auth, "admin", db=db)
    facility = make_facility(db)
    rows = [resource_row(facility, f"仪器{i}") for i in range(12)]
    rows[7]["Original value (CNY)"] = "-5"
    before = row_counts(db, *TABLES)

    response = importer.check("resources", fill_xlsx(importer.template("resources", "xlsx"), rows), "r.xlsx")

    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert re.search(r"<td>9</td><td>Original value \(CNY\)</td><td>Enter an amount in CNY, 0 or more.</td>", page)
    assert 'data-testid="import-confirm"' not in page
    assert row_counts(db, *TABLES) == before
    download = re.search(r'href="data:text/csv;charset=utf-8;base64,([^"]+)" data-testid="import-errors-download"',
                         page).group(1)
    assert base64.b64decode(download).decode("utf-8-sig").splitlines()[1] == (
        "9,Original value (CNY),\"Enter an amount in CNY, 0 or more.\"")


def test_a_lab_manager_cannot_import_into_someone_elses_facility(db, auth, importer):
    manager = sign_in(auth, "lab_manager", db=db)
    own, other = make_facility(db, managers=(manager,)), make_facility(db)
    data = fill_csv(importer.template("resources", "csv"), [resource_row(own, "甲"), resource_row(other, "乙")])

    response = importer.check("resources", data, "r.csv")

    assert response.status_code == 422
    assert "<td>3</td><td>Facility</td><td>You do not manage this facility.</td>" in response.get_data(as_text=True)
    assert importer.check("organisations", b"x", "o.csv").status_code == 422  # not a choice for lab managers


def test_an_unreadable_file_is_refused_on_the_upload_page(db, auth, importer):
    sign_in(auth, "admin", db=db)

    response = importer.check("resources", "颜色,形状\r\n红,圆\r\n".encode("gbk"), "r.csv")

    assert response.status_code == 422
    assert "Unknown columns: 颜色、形状" in response.get_data(as_text=True)


def test_organisations_from_a_gbk_csv_with_english_headers(db, auth, importer):
    sign_in(auth, "admin", db=db)
    code_a, code_b = unique_credit_code(), unique_credit_code()
    header = "Name (zh),Name (en),Unified social credit code,Kind,City or prefecture,Tech SME\r\n"
    body = (f"四川甲科技有限公司,Jia Tech,{code_a},企业,成都市,是\r\n"
            f"绵阳乙研究所,Yi Institute,{code_b},科研院所,510700,\r\n")

    checked = importer.check("organisations", (header + body).encode("gbk"), "orgs.csv")

    assert checked.status_code == 200, checked.get_data(as_text=True)
    assert importer.confirm(checked.get_data(as_text=True)).status_code == 302
    jia = db.scalars(select(Organisation).where(Organisation.credit_code == code_a)).one()
    yi = db.scalars(select(Organisation).where(Organisation.credit_code == code_b)).one()
    assert (jia.name_zh, jia.kind, jia.city, jia.tech_sme) == ("四川甲科技有限公司", "enterprise", "510100", True)
    assert (yi.kind, yi.city, yi.tech_sme) == ("institute", "510700", False)


def test_organisation_duplicates_and_bad_credit_codes(db, auth, importer):
    sign_in(auth, "admin", db=db)
    existing = make_organisation(db)
    fresh = unique_credit_code()
    rows = [{"Name (zh)": "甲", "Name (en)": "A", "Unified social credit code": fresh, "Kind": "企业",
             "City or prefecture": "成都"},
            {"Name (zh)": "乙", "Name (en)": "B", "Unified social credit code": fresh, "Kind": "企业",
             "City or prefecture": "成都"},
            {"Name (zh)": "丙", "Name (en)": "C", "Unified social credit code": existing.credit_code, "Kind": "企业",
             "City or prefecture": "成都"},
            {"Name (zh)": "丁", "Name (en)": "D", "Unified social credit code": fresh[:-1] + "0"
             if fresh[-1] != "0" else fresh[:-1] + "1", "Kind": "火星", "City or prefecture": "北京"}]

    response = importer.check("organisations", fill_xlsx(importer.template("organisations", "xlsx"), rows), "o.xlsx")

    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "<td>3</td><td>Unified social credit code</td><td>The same credit code is in row 2.</td>" in page
    assert "<td>4</td><td>Unified social credit code</td><td>An organisation with this credit code is already" in page
    assert "<td>5</td><td>Unified social credit code</td>" in page
    assert "<td>5</td><td>Kind</td><td>Unknown kind of organisation.</td>" in page
    assert "<td>5</td><td>City or prefecture</td><td>Unknown city or prefecture.</td>" in page


def test_users_get_initial_passwords_shown_once(db, auth, importer):
    sign_in(auth, "admin", db=db)
    org = make_organisation(db)
    rows = [{"E-mail": "Wang.Wu@Example.test", "Name (zh)": "王五", "Organisation credit code": org.credit_code,
             "Roles": "科研用户、实验室管理员", "Language": "英文"},
            {"E-mail": "zhao@example.test", "Name (zh)": "赵六", "Organisation credit code": org.credit_code,
             "Roles": "researcher"}]

    checked = importer.check("users", fill_xlsx(importer.template("users", "xlsx"), rows), "u.xlsx")
    done = importer.confirm(checked.get_data(as_text=True))

    assert done.status_code == 200
    assert done.headers["Cache-Control"] == "no-store"
    page = done.get_data(as_text=True)
    shown = dict(re.findall(r"<td>([^<]+@example.test)</td><td><code>([^<]+)</code>", page))
    wang = db.scalars(select(User).where(User.email == "wang.wu@example.test")).one()
    assert (wang.name_en, wang.locale, sorted(wang.roles)) == ("王五", "en", ["lab_manager", "researcher"])
    assert verify_password(wang.password_hash, shown["wang.wu@example.test"])
    assert shown["wang.wu@example.test"] not in wang.password_hash
    download = re.search(r'href="data:text/csv;charset=utf-8;base64,([^"]+)"', page).group(1)
    assert shown["zhao@example.test"] in base64.b64decode(download).decode("utf-8-sig")


def test_duplicate_emails_are_refused(db, auth, importer):
    sign_in(auth, "admin", db=db)
    org, taken = make_organisation(db), make_user(db)
    rows = [{"E-mail": "new@example.test", "Name (zh)": "甲", "Organisation credit code": org.credit_code,
             "Roles": "researcher"},
            {"E-mail": "NEW@example.test", "Name (zh)": "乙", "Organisation credit code": org.credit_code,
             "Roles": "researcher"},
            {"E-mail": taken.email, "Name (zh)": "丙", "Organisation credit code": "91510100MA0000000X",
             "Roles": "wizard"}]

    page = importer.check("users", fill_csv(importer.template("users", "csv"), rows), "u.csv").get_data(as_text=True)

    assert "<td>3</td><td>E-mail</td><td>The same e-mail address is in row 2.</td>" in page
    assert "<td>4</td><td>E-mail</td><td>A user with this e-mail address already exists.</td>" in page
    assert "<td>4</td><td>Organisation credit code</td>" in page
    assert "<td>4</td><td>Roles</td><td>Unknown role: wizard.</td>" in page


def test_a_confirm_token_works_only_for_the_user_who_uploaded(db, client, auth, importer):
    sign_in(auth, "admin", db=db)
    facility = make_facility(db)
    page = importer.check("resources", fill_csv(importer.template("resources", "csv"),
                                                [resource_row(facility, "甲")]), "r.csv").get_data(as_text=True)
    auth.logout()
    sign_in(auth, "admin", db=db)
    before = row_counts(db, Resource)

    response = importer.confirm(page.replace(re.search(r'name="csrf_token" type="hidden" value="([^"]*)"',
                                                       page).group(1), auth.csrf_token("/imports")))

    assert response.status_code == 302
    assert "/imports" in response.headers["Location"]
    assert row_counts(db, Resource) == before


def test_forms_need_their_csrf_token(db, client, auth):
    sign_in(auth, "admin", db=db)

    response = client.post("/imports/check", data={"kind": "resources", "file": (io.BytesIO(b"a"), "r.csv")},
                           content_type="multipart/form-data")

    assert response.status_code == 400


def test_the_import_page_is_in_the_admin_menu_and_on_the_managers_pages(db, client, auth):
    sign_in(auth, "admin", db=db)
    assert 'href="/imports"' in client.get("/").get_data(as_text=True)
    auth.logout()
    manager = sign_in(auth, "lab_manager", db=db)
    facility = make_facility(db, managers=(manager,))
    assert 'href="/imports?kind=resources"' in client.get(f"/manage/facilities/{facility.id}").get_data(as_text=True)
    page = client.get("/imports").get_data(as_text=True)
    assert "/imports/templates/resources.xlsx" in page
    assert "/imports/templates/users.xlsx" not in page


# --- API ----------------------------------------------------------------------------------------------------------

def post_file(client, token: str, kind: str, data: bytes, filename: str, dry_run: bool):
    return client.post(f"/api/v1/imports/{kind}?dry_run={'true' if dry_run else 'false'}",
                       data={"file": (io.BytesIO(data), filename)}, content_type="multipart/form-data",
                       headers={"Authorization": f"Bearer {token}"})


def test_api_dry_run_then_import(db, client):
    admin = make_user(db, roles=("admin",))
    _, token = make_token(db, admin)
    facility = make_facility(db)
    from booking.imports import template

    data = fill_csv(template("csv"), [resource_row(facility, "甲"), resource_row(facility, "乙")])
    before = row_counts(db, *TABLES)

    dry = post_file(client, token, "resources", data, "r.csv", dry_run=True)
    assert dry.status_code == 200
    assert dry.json == {"kind": "resources", "dry_run": True, "rows": 2, "created": 0, "credentials": []}
    assert row_counts(db, *TABLES) == before
    real = post_file(client, token, "resources", data, "r.csv", dry_run=False)
    assert (real.status_code, real.json["created"]) == (200, 2)


def test_api_reports_every_bad_row_as_422(db, client):
    admin = make_user(db, roles=("admin",))
    _, token = make_token(db, admin)
    facility = make_facility(db)
    from booking.imports import template

    rows = [resource_row(facility, "甲"), resource_row(facility, "乙", **{"Operation mode": "magic"})]
    for dry_run in (True, False):
        response = post_file(client, token, "resources", fill_csv(template("csv"), rows), "r.csv", dry_run)
        assert response.status_code == 422
        error = response.json["error"]
        assert error["code"] == "import_rejected"
        # in the platform's default language (zh-CN): API requests carry no language preference
        assert error["details"]["rows"] == [{"row": 3, "column": "operation_mode", "header": "运行方式",
                                             "message": "请从列出的选项中选择。"}]
    assert db.scalar(select(Resource.id).where(Resource.facility_id == facility.id)) is None


def test_api_users_import_returns_passwords_once_and_is_admin_only(db, client):
    org = make_organisation(db)
    _, admin_token = make_token(db, make_user(db, roles=("admin",)))
    _, manager_token = make_token(db, make_user(db, roles=("lab_manager",)))
    from core.accounts.imports import user_template

    data = fill_csv(user_template("csv"), [{"E-mail": "api@example.test", "Name (zh)": "甲",
                                            "Organisation credit code": org.credit_code, "Roles": "finance"}])

    assert post_file(client, manager_token, "users", data, "u.csv", False).status_code == 403
    response = post_file(client, admin_token, "users", data, "u.csv", False)
    assert response.status_code == 200
    [credential] = response.json["credentials"]
    user = db.scalars(select(User).where(User.email == "api@example.test")).one()
    assert credential["email"] == user.email
    assert verify_password(user.password_hash, credential["password"])
    assert post_file(client, admin_token, "things", data, "u.csv", False).status_code == 404
    bad = post_file(client, admin_token, "users", b"\x00\x01garbage", "u.csv", True)
    assert bad.status_code == 422
    assert "file" in bad.json["error"]["details"]["fields"]


def test_the_import_endpoint_is_in_the_openapi_document(client):
    spec = client.get("/api/v1/openapi.json").json
    operation = spec["paths"]["/api/v1/imports/users"]["post"]
    assert "multipart/form-data" in operation["requestBody"]["content"]
    assert {"/api/v1/imports/resources", "/api/v1/imports/organisations"} <= set(spec["paths"])


def test_two_thousand_organisations(db):
    """Not quadratic: duplicate checks are set lookups and the rows are inserted in one flush."""
    from core.accounts.imports import import_organisations, organisation_template

    admin = make_user(db, roles=("admin",))
    rows = [{"Name (zh)": f"单位{i}", "Name (en)": f"Org {i}", "Unified social credit code": unique_credit_code(),
             "Kind": "企业", "City or prefecture": "510100"} for i in range(2000)]
    data = fill_csv(organisation_template("csv"), rows)
    before = row_counts(db, Organisation)["organisation"]

    assert import_organisations(db, admin, data, "o.csv", dry_run=True).ok
    assert row_counts(db, Organisation)["organisation"] == before
    assert import_organisations(db, admin, data, "o.csv", dry_run=False).created == 2000
    assert row_counts(db, Organisation)["organisation"] == before + 2000
