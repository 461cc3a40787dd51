"""The REST API under /api/v1: bearer tokens, the error format, tokens, collections and the OpenAPI document."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.accounts.models import ApiToken, Organisation, OrganisationKind, User
from core.audit import AuditEntry
from tests.factories import PASSWORD, make_facility, make_organisation, make_token, make_user, row_counts

TABLES = (User, Organisation, ApiToken, AuditEntry)
UNKNOWN_TOKEN = "lsk_" + "A" * 43


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def assert_error(response, status: int, code: str, message: str | None = None) -> dict:
    """The response is the project's error format; returns its details."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.json
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    if message is not None:
        assert body["error"]["message"] == message
    return body["error"]["details"]


@pytest.fixture
def user(db) -> User:
    return make_user(db)


@pytest.fixture
def secret(db, user) -> str:
    return make_token(db, user)[1]


# --- authentication and the error format -------------------------------------------------------------------

AUTH_FAILURES = [
    # case                   Authorization header                code             reason              message
    ("no header",            None,                               "unauthorized",  None,
     "请提供 API 令牌：Authorization: Bearer <令牌>。"),
    ("empty header",         "",                                 "unauthorized",  None, None),
    ("basic scheme",         "Basic dXNlcjpwYXNz",               "unauthorized",  None, None),
    ("token without scheme", "{secret}",                         "unauthorized",  None, None),
    ("bearer without token", "Bearer ",                          "unauthorized",  None, None),
    ("malformed token",      "Bearer not-a-token",               "invalid_token", "malformed",
     "API 令牌格式错误：应以 lsk_ 开头，共 47 个字符。"),
    ("truncated token",      "Bearer {secret_truncated}",        "invalid_token", "malformed", None),
    ("unknown token",        f"Bearer {UNKNOWN_TOKEN}",          "invalid_token", "unknown", "API 令牌不存在。"),
    ("revoked token",        "Bearer {revoked}",                 "invalid_token", "revoked", "API 令牌已被吊销。"),
    ("disabled account",     "Bearer {disabled}",                "invalid_token", "account_disabled",
     "该 API 令牌所属账号已被停用。"),
]


@pytest.mark.parametrize(("case", "header", "code", "reason", "message"), AUTH_FAILURES,
                         ids=[row[0] for row in AUTH_FAILURES])
def test_requests_without_a_usable_token_get_401_in_the_error_format(db, client, user, secret, case, header, code,
                                                                     reason, message):
    revoked, revoked_secret = make_token(db, user, name="revoked")
    revoked.revoked_at = revoked.created_at
    disabled_user = make_user(db, active=False)
    _disabled_token, disabled_secret = make_token(db, disabled_user)
    db.flush()
    headers = {}
    if header is not None:
        headers["Authorization"] = header.format(secret=secret, secret_truncated=secret[:-1], revoked=revoked_secret,
                                                 disabled=disabled_secret)
    before = row_counts(db, *TABLES)
    last_used = {t.id: t.last_used_at for t in db.scalars(select(ApiToken))}

    response = client.get("/api/v1/me", headers=headers)

    details = assert_error(response, 401, code, message)
    assert details == ({} if reason is None else {"reason": reason})
    db.expire_all()
    assert row_counts(db, *TABLES) == before
    assert {t.id: t.last_used_at for t in db.scalars(select(ApiToken))} == last_used


def test_the_bearer_scheme_is_case_insensitive(client, secret):
    assert client.get("/api/v1/me", headers={"Authorization": f"bearer {secret}"}).status_code == 200


def test_a_good_token_records_when_it_was_last_used(db, client, user, secret):
    token = db.scalar(select(ApiToken).where(ApiToken.user_id == user.id))
    assert token.last_used_at is None

    assert client.get("/api/v1/me", headers=bearer(secret)).status_code == 200

    db.expire_all()
    assert db.get(ApiToken, token.id).last_used_at is not None


def test_unknown_api_path_is_404_in_the_error_format(client, secret):
    for headers in ({}, bearer(secret)):
        assert_error(client.get("/api/v1/no-such-thing", headers=headers), 404, "not_found", "页面不存在。")


def test_wrong_method_is_405_in_the_error_format(client, secret):
    assert_error(client.put("/api/v1/me", headers=bearer(secret), json={}), 405, "method_not_allowed")


# --- /me --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("roles", "managed"), [
    (("researcher",), "none"),
    (("finance",), "none"),
    (("lab_manager",), "two"),
    (("lab_manager", "finance"), "two"),
    (("admin",), "all"),
])
def test_me_describes_the_tokens_owner(db, client, roles, managed):
    org = make_organisation(db, name_zh="四川大学", name_en="Sichuan University", kind=OrganisationKind.UNIVERSITY)
    user = make_user(db, roles=roles, organisation=org, name_zh="赵六", name_en="Zhao Liu")
    facilities = [make_facility(db, managers=(user,)).id for _ in range(2)] if managed == "two" else []
    make_facility(db)  # one the user does not manage
    _token, secret = make_token(db, user)

    response = client.get("/api/v1/me", headers=bearer(secret))

    assert response.status_code == 200
    assert response.json == {
        "id": user.id, "email": user.email, "name_zh": "赵六", "name_en": "Zhao Liu", "locale": "zh_CN",
        "roles": sorted(roles),
        "organisation": {"id": org.id, "name_zh": "四川大学", "name_en": "Sichuan University",
                         "credit_code": org.credit_code, "kind": "university", "city": org.city, "tech_sme": False},
        "managed_facility_ids": None if managed == "all" else sorted(facilities),
    }


# --- tokens -------------------------------------------------------------------------------------------------------

def test_create_list_and_revoke_a_token(db, client, user, secret):
    created = client.post("/api/v1/tokens", headers=bearer(secret), json={"name": "lab robot"})

    assert created.status_code == 201
    new_secret = created.json["token"]
    assert new_secret.startswith("lsk_")
    assert len(new_secret) == 47
    assert created.json["name"] == "lab robot"
    assert created.json["prefix"] == new_secret[:8]
    assert created.json["revoked_at"] is None
    assert client.get("/api/v1/me", headers=bearer(new_secret)).json["id"] == user.id

    listed = client.get("/api/v1/tokens", headers=bearer(secret))
    assert listed.status_code == 200
    assert sorted(t["name"] for t in listed.json) == sorted(["lab robot", db.scalar(
        select(ApiToken.name).where(ApiToken.user_id == user.id, ApiToken.name != "lab robot"))])
    for token in listed.json:
        assert set(token) == {"id", "name", "prefix", "created_at", "last_used_at", "revoked_at"}
    assert new_secret not in listed.get_data(as_text=True)

    deleted = client.delete(f"/api/v1/tokens/{created.json['id']}", headers=bearer(secret))
    assert deleted.status_code == 204
    assert deleted.get_data() == b""
    details = assert_error(client.get("/api/v1/me", headers=bearer(new_secret)), 401, "invalid_token")
    assert details == {"reason": "revoked"}
    revoked = {t["name"]: t["revoked_at"] for t in client.get("/api/v1/tokens", headers=bearer(secret)).json}
    assert revoked["lab robot"] is not None
    db.expire_all()
    actions = db.scalars(select(AuditEntry.action).where(
        AuditEntry.actor_id == user.id, AuditEntry.target_id == str(created.json["id"])).order_by(AuditEntry.id))
    assert list(actions) == ["api_token.created", "api_token.revoked"]


def test_a_token_may_revoke_itself(client, secret):
    me = client.get("/api/v1/tokens", headers=bearer(secret)).json[0]

    assert client.delete(f"/api/v1/tokens/{me['id']}", headers=bearer(secret)).status_code == 204

    assert client.get("/api/v1/me", headers=bearer(secret)).status_code == 401


@pytest.mark.parametrize("whose", ["another user's", "nonexistent"])
def test_revoking_a_token_that_is_not_yours_is_404_and_changes_nothing(db, client, secret, whose):
    other, other_secret = make_token(db, make_user(db))
    token_id = other.id if whose == "another user's" else other.id + 1000
    before = row_counts(db, *TABLES)

    response = client.delete(f"/api/v1/tokens/{token_id}", headers=bearer(secret))

    details = assert_error(response, 404, "not_found")
    assert details == {"kind": "api_token", "id": str(token_id)}
    db.expire_all()
    assert row_counts(db, *TABLES) == before
    assert db.get(ApiToken, other.id).revoked_at is None
    assert client.get("/api/v1/me", headers=bearer(other_secret)).status_code == 200


@pytest.mark.parametrize(("body", "message"), [
    ({}, "缺少必填字段。"),  # marshmallow's fixed messages are translated …
    ({"name": ""}, "Length must be between 1 and 100."),  # … those with numbers in them are not
    ({"name": "x" * 101}, "Length must be between 1 and 100."),
    ({"name": 42}, "不是有效的字符串。"),
    ({"name": "   "}, "请为令牌输入 1 至 100 个字符的名称。"),
    ({"name": "taken"}, "您已有同名令牌。"),
])
def test_creating_a_token_with_a_bad_name_is_422_with_the_field_and_writes_nothing(db, client, user, secret, body,
                                                                                  message):
    make_token(db, user, name="taken")
    before = row_counts(db, *TABLES)

    response = client.post("/api/v1/tokens", headers=bearer(secret), json=body)

    details = assert_error(response, 422, "invalid_input", "部分填写内容无效。")
    assert details["fields"] == {"name": [message]}
    db.expire_all()
    assert row_counts(db, *TABLES) == before


def test_the_api_needs_no_csrf_token(app, client, secret):
    assert app.config.get("WTF_CSRF_ENABLED", True)

    response = client.post("/api/v1/tokens", headers=bearer(secret), json={"name": "no csrf needed"})

    assert response.status_code == 201


def test_a_session_cookie_alone_does_not_authenticate_the_api(db, client, auth, user):
    assert auth.login(user.email, PASSWORD).status_code == 302
    assert client.get("/").status_code == 200  # signed in on the pages
    before = row_counts(db, *TABLES)

    assert_error(client.get("/api/v1/me"), 401, "unauthorized")
    assert_error(client.post("/api/v1/tokens", json={"name": "via cookie"}), 401, "unauthorized")
    db.expire_all()
    assert row_counts(db, *TABLES) == before


# --- collections ---------------------------------------------------------------------------------------------------

@pytest.fixture
def organisations(db) -> dict[str, list[int]]:
    """Seven organisations in Zigong (510300) and one elsewhere; the caller's own is a government body."""
    rows = [("university", False), ("university", False), ("institute", False), ("enterprise", True),
            ("enterprise", True), ("enterprise", False), ("enterprise", True)]
    zigong = [make_organisation(db, kind=OrganisationKind(kind), city="510300", tech_sme=sme).id
              for kind, sme in rows]
    elsewhere = make_organisation(db, kind=OrganisationKind.ENTERPRISE, city="510700", tech_sme=True).id
    return {"zigong": zigong, "elsewhere": [elsewhere]}


@pytest.fixture
def caller(db) -> str:
    government = make_organisation(db, kind=OrganisationKind.GOVERNMENT, city="510100")
    return make_token(db, make_user(db, organisation=government))[1]


@pytest.mark.parametrize(("query", "page", "per_page", "expected_index"), [
    ("city=510300&per_page=3", 1, 3, [0, 1, 2]),
    ("city=510300&per_page=3&page=2", 2, 3, [3, 4, 5]),
    ("city=510300&per_page=3&page=3", 3, 3, [6]),
    ("city=510300&per_page=3&page=4", 4, 3, []),
    ("city=510300", 1, 20, [0, 1, 2, 3, 4, 5, 6]),
    ("city=510300&kind=university", 1, 20, [0, 1]),
    ("city=510300&kind=enterprise&tech_sme=true", 1, 20, [3, 4, 6]),
    ("city=510300&tech_sme=false", 1, 20, [0, 1, 2, 5]),
    ("city=510300&kind=government", 1, 20, []),
])
def test_organisations_are_paginated_and_filtered(client, organisations, caller, query, page, per_page,
                                                  expected_index):
    response = client.get(f"/api/v1/organisations?{query}", headers=bearer(caller))

    assert response.status_code == 200
    total = {"city=510300&kind=university": 2, "city=510300&kind=enterprise&tech_sme=true": 3,
             "city=510300&tech_sme=false": 4, "city=510300&kind=government": 0}.get(query, 7)
    assert (response.json["page"], response.json["per_page"], response.json["total"]) == (page, per_page, total)
    assert [item["id"] for item in response.json["items"]] == [organisations["zigong"][i] for i in expected_index]


def test_all_organisations_without_filters(client, organisations, caller):
    response = client.get("/api/v1/organisations?per_page=100", headers=bearer(caller))

    assert response.json["total"] == 9  # seven in Zigong, one elsewhere, the caller's own
    item = response.json["items"][0]
    assert set(item) == {"id", "name_zh", "name_en", "credit_code", "kind", "city", "tech_sme"}
    ids = [i["id"] for i in response.json["items"]]
    assert ids == sorted(ids)


@pytest.mark.parametrize(("query", "field"), [
    ("per_page=0", "per_page"),
    ("per_page=101", "per_page"),
    ("per_page=-1", "per_page"),
    ("per_page=ten", "per_page"),
    ("page=0", "page"),
    ("page=-3", "page"),
    ("kind=laboratory", "kind"),
    ("city=Chengdu", "city"),
    ("tech_sme=perhaps", "tech_sme"),
])
def test_bad_collection_parameters_are_422_in_the_error_format(client, caller, query, field):
    response = client.get(f"/api/v1/organisations?{query}", headers=bearer(caller))

    details = assert_error(response, 422, "invalid_input", "部分填写内容无效。")
    assert list(details["fields"]) == [field]
    assert all(isinstance(m, str) and m for m in details["fields"][field])


@pytest.mark.parametrize("query", ["per_page=0", "page=0", "per_page=101"])
def test_facility_pagination_is_checked_as_well(client, caller, query):
    assert_error(client.get(f"/api/v1/facilities?{query}", headers=bearer(caller)), 422, "invalid_input")


def test_facilities_list_with_pagination(db, client, caller):
    created = [make_facility(db, name_zh=f"分岛{i}", opening_hours={"mon": "09:00-17:00"}) for i in range(3)]

    first = client.get("/api/v1/facilities?per_page=2", headers=bearer(caller))
    second = client.get("/api/v1/facilities?per_page=2&page=2", headers=bearer(caller))

    assert first.status_code == 200
    assert (first.json["total"], first.json["page"], first.json["per_page"]) == (3, 1, 2)
    assert [f["id"] for f in first.json["items"] + second.json["items"]] == [f.id for f in created]
    item = first.json["items"][0]
    assert item == {"id": created[0].id, "name_zh": "分岛0", "name_en": created[0].name_en, "city": "510100",
                    "address_zh": "成都市", "address_en": "Chengdu", "timezone": "Asia/Shanghai",
                    "owner_id": created[0].owner_id, "opening_hours": {"mon": "09:00-17:00"},
                    "manager_ids": []}


@pytest.mark.parametrize("path", ["/api/v1/organisations", "/api/v1/facilities", "/api/v1/tokens"])
def test_collections_need_a_token(client, path):
    assert_error(client.get(path), 401, "unauthorized")


# --- OpenAPI and health ----------------------------------------------------------------------------------------------

def resolve(document: dict, ref: str) -> dict:
    assert ref.startswith("#/"), ref
    node = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def all_refs(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [r for v in node.values() for r in all_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in all_refs(v)]
    return []


def test_openapi_document_is_public_and_describes_the_api(client):
    response = client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    doc = response.json
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] == "LabShare API"
    assert doc["info"]["version"] == "v1"
    assert {"/api/v1/me", "/api/v1/tokens", "/api/v1/tokens/{token_id}", "/api/v1/organisations",
            "/api/v1/facilities"} <= set(doc["paths"])
    assert set(doc["paths"]["/api/v1/tokens"]) >= {"get", "post"}
    assert "delete" in doc["paths"]["/api/v1/tokens/{token_id}"]
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearerAuth": []}]
    for path, operations in doc["paths"].items():
        assert path.startswith("/api/v1/")
        for method, operation in operations.items():
            if method == "parameters":
                continue
            assert method in {"get", "post", "put", "patch", "delete"}, (path, method)
            assert operation["responses"], (path, method)
    for ref in all_refs(doc):
        assert resolve(doc, ref), ref
    query = {p["name"] for p in doc["paths"]["/api/v1/organisations"]["get"]["parameters"] if p["in"] == "query"}
    assert {"page", "per_page", "kind", "city", "tech_sme"} <= query


def test_health_reports_the_database_up(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json["status"] == "ok"
    assert response.json["checks"]["database"]["status"] == "up"
    assert set(response.json["checks"]) == {"database", "broker", "tsdb"}
