"""The demo data file web/demo/data.toml: well-formed, consistent and rich enough for a convincing demo."""

import re
import tomllib
from collections import Counter
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from core.accounts.credit_code import validate_credit_code
from core.regions import SICHUAN_CITIES

DATA_FILE = Path(__file__).resolve().parents[2] / "web" / "demo" / "data.toml"

KEY = re.compile(r"[a-z0-9_]+")
HOURS = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)")
CJK = re.compile(r"[\u4e00-\u9fff]")
EMAIL = re.compile(r"[a-z0-9.]+@labshare\.demo")

ORG_KINDS = {"university", "institute", "enterprise", "government"}
RESOURCE_KINDS = {"instrument", "pilot_line"}
CATEGORIES = {
    "research_development",
    "tech_transfer",
    "pilot_scale",
    "incubation",
    "tech_promotion",
    "testing",
    "information_technology",
    "engineering",
    "sci_tech_finance",
    "intellectual_property",
    "consulting",
}
OPERATION_MODES = {"self_service", "technician", "both"}
ROLES = {"researcher", "lab_manager", "finance", "admin"}
LOCALES = {"zh_CN", "en"}
WEEKDAYS = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"}

ORG_FIELDS = {"key", "name_zh", "name_en", "credit_code", "kind", "city", "tech_sme", "affiliations"}
FACILITY_FIELDS = {
    "key",
    "name_zh",
    "name_en",
    "owner",
    "city",
    "address_zh",
    "address_en",
    "timezone",
    "opening_hours",
}
RESOURCE_FIELDS = {
    "key",
    "facility",
    "kind",
    "name_zh",
    "name_en",
    "description_zh",
    "description_en",
    "model",
    "manufacturer",
    "original_value_cny",
    "category",
    "operation_mode",
    "voucher_eligible",
    "specs",
}
SPEC_FIELDS = {"key_zh", "key_en", "value"}
USER_FIELDS = {"email", "name_zh", "name_en", "org", "roles", "facilities", "locale", "password"}


@pytest.fixture(scope="module")
def data():
    with DATA_FILE.open("rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def orgs(data):
    return {org["key"]: org for org in data["organisations"]}


@pytest.fixture(scope="module")
def facilities(data):
    return {facility["key"]: facility for facility in data["facilities"]}


def duplicates(values):
    return sorted(value for value, count in Counter(values).items() if count > 1)


def test_file_has_exactly_the_known_sections(data):
    assert set(data) == {"organisations", "facilities", "resources", "users", "rules", "devices"}


def test_demo_devices_are_valid_registry_entries_on_real_resources(data):
    """Every demo device names a resource of the file, a usage source the registry accepts and a simulator
    behaviour, with unique ids that are valid MQTT topic levels."""
    from devices.models import UsageSource
    from devices.registry import DEVICE_ID_RE

    keys = {resource["key"] for resource in data["resources"]}
    ids = [device["device_id"] for device in data["devices"]]
    assert duplicates(ids) == []
    for device in data["devices"]:
        assert DEVICE_ID_RE.fullmatch(device["device_id"])
        assert device["resource"] in keys, device["device_id"]
        assert device["usage_source"] in {s.value for s in UsageSource}
        assert device["sim"] in {"sem", "hplc", "fermenter", "generic"}
        if device["usage_source"] == "power":
            assert float(device["power_threshold_w"]) > 0
    assert {d["usage_source"] for d in data["devices"]} == {"events", "status", "power"}  # the demo shows all three


def test_booking_rules_name_real_resources_and_columns(data):
    from booking.catalog import EDITABLE_FIELDS, _validated

    keys = {resource["key"] for resource in data["resources"]}
    assert set(data["rules"]) <= keys
    for key, rules in data["rules"].items():
        assert set(rules) <= set(EDITABLE_FIELDS), key
        _validated(rules)  # raises InvalidInput for a value the resource editor would refuse


def test_every_record_has_exactly_the_schema_fields(data):
    for section, fields in [
        ("organisations", ORG_FIELDS),
        ("facilities", FACILITY_FIELDS),
        ("resources", RESOURCE_FIELDS),
        ("users", USER_FIELDS),
    ]:
        for record in data[section]:
            assert set(record) == fields, (section, record.get("key") or record.get("email"))
    for resource in data["resources"]:
        for spec in resource["specs"]:
            assert set(spec) == SPEC_FIELDS, resource["key"]
            assert all(isinstance(spec[field], str) and spec[field].strip() for field in SPEC_FIELDS)


def test_keys_are_unique_handles(data):
    for section in ("organisations", "facilities", "resources"):
        keys = [record["key"] for record in data[section]]
        assert duplicates(keys) == [], section
        assert all(KEY.fullmatch(key) for key in keys), section


def test_names_are_given_in_chinese_and_english(data):
    for section in ("organisations", "facilities", "resources", "users"):
        for record in data[section]:
            assert CJK.search(record["name_zh"]), record["name_zh"]
            assert record["name_en"].strip(), record["name_zh"]
            assert not CJK.search(record["name_en"]), record["name_en"]


def test_every_credit_code_is_valid_normalised_and_unique(data):
    codes = [org["credit_code"] for org in data["organisations"]]
    for code in codes:
        assert validate_credit_code(code) == code
    assert duplicates(codes) == []


def test_credit_code_division_lies_in_the_organisations_city(data):
    for org in data["organisations"]:
        assert org["credit_code"][2:6] == org["city"][:4], org["key"]


def test_organisation_kinds_cities_and_flags(data):
    for org in data["organisations"]:
        assert org["kind"] in ORG_KINDS, org["key"]
        assert org["city"] in SICHUAN_CITIES, org["key"]
        assert isinstance(org["tech_sme"], bool), org["key"]
        if org["tech_sme"]:
            assert org["kind"] == "enterprise", org["key"]
    kinds = Counter(org["kind"] for org in data["organisations"])
    assert kinds["university"] >= 3
    assert kinds["institute"] >= 2
    assert kinds["enterprise"] >= 6
    assert sum(org["tech_sme"] for org in data["organisations"]) >= 4
    assert any(org["kind"] == "enterprise" and not org["tech_sme"] for org in data["organisations"])


def test_affiliations_resolve_and_one_enterprise_declares_a_university(orgs):
    for key, org in orgs.items():
        assert isinstance(org["affiliations"], list), key
        assert duplicates(org["affiliations"]) == [], key
        for other in org["affiliations"]:
            assert other in orgs, (key, other)
            assert other != key
    assert any(
        org["kind"] == "enterprise"
        and any(orgs[other]["kind"] == "university" for other in org["affiliations"])
        for org in orgs.values()
    )


def test_facilities_have_owner_city_time_zone_and_address(data, orgs):
    cities = set()
    for facility in data["facilities"]:
        assert facility["owner"] in orgs, facility["key"]
        assert facility["city"] in SICHUAN_CITIES, facility["key"]
        assert ZoneInfo(facility["timezone"]).key == "Asia/Shanghai"
        assert CJK.search(facility["address_zh"]), facility["key"]
        assert facility["address_en"].strip(), facility["key"]
        cities.add(facility["city"])
    assert len(data["facilities"]) >= 3
    assert "510100" in cities
    assert len(cities - {"510100"}) >= 2, "two branches outside Chengdu"


def test_opening_hours_are_weekday_ranges_that_start_before_they_end(data):
    for facility in data["facilities"]:
        hours = facility["opening_hours"]
        assert hours, facility["key"]
        assert set(hours) <= WEEKDAYS, facility["key"]
        for day, window in hours.items():
            match = HOURS.fullmatch(window)
            assert match, (facility["key"], day, window)
            start_h, start_m, end_h, end_m = map(int, match.groups())
            assert (start_h, start_m) < (end_h, end_m) <= (24, 0), (facility["key"], day, window)


def test_resources_reference_facilities_and_use_the_allowed_codes(data, facilities):
    for resource in data["resources"]:
        key = resource["key"]
        assert resource["facility"] in facilities, key
        assert resource["kind"] in RESOURCE_KINDS, key
        assert resource["category"] in CATEGORIES, key
        assert resource["operation_mode"] in OPERATION_MODES, key
        assert isinstance(resource["voucher_eligible"], bool), key
        for field in ("model", "manufacturer", "description_en"):
            assert resource[field].strip(), (key, field)
        assert CJK.search(resource["description_zh"]), key


def test_original_values_are_cny_strings_with_two_decimals(data):
    for resource in data["resources"]:
        raw = resource["original_value_cny"]
        assert isinstance(raw, str), resource["key"]
        assert re.fullmatch(r"\d+\.\d{2}", raw), (resource["key"], raw)
        value = Decimal(raw)
        if resource["kind"] == "instrument":
            assert value >= Decimal("500000"), resource["key"]  # 大型科研仪器: 原值 50 万元及以上
        else:
            assert value >= Decimal("10000000"), resource["key"]  # pilot lines cost tens of millions


def test_every_resource_has_three_to_six_distinct_specs(data):
    for resource in data["resources"]:
        specs = resource["specs"]
        assert 3 <= len(specs) <= 6, resource["key"]
        assert duplicates(spec["key_en"] for spec in specs) == [], resource["key"]
        assert duplicates(spec["key_zh"] for spec in specs) == [], resource["key"]


def test_there_are_enough_instruments_and_pilot_lines_in_every_facility(data, facilities):
    kinds = Counter(resource["kind"] for resource in data["resources"])
    assert kinds["instrument"] >= 30
    assert kinds["pilot_line"] >= 4
    per_facility = Counter(resource["facility"] for resource in data["resources"])
    assert set(per_facility) == set(facilities)
    assert all(count >= 5 for count in per_facility.values()), per_facility


def test_users_are_unique_and_reference_organisations_and_facilities(data, orgs, facilities):
    emails = [user["email"] for user in data["users"]]
    assert duplicates(emails) == []
    for user in data["users"]:
        email = user["email"]
        assert EMAIL.fullmatch(email), email
        assert user["org"] in orgs, email
        assert user["roles"], email
        assert set(user["roles"]) <= ROLES, email
        assert duplicates(user["roles"]) == [], email
        assert user["locale"] in LOCALES, email
        assert all(facility in facilities for facility in user["facilities"]), email
        # Facilities scope the lab-manager role and nothing else.
        assert bool(user["facilities"]) == ("lab_manager" in user["roles"]), email


def test_all_demo_users_share_the_demo_password(data):
    assert {user["password"] for user in data["users"]} == {"labshare-demo"}


def test_every_role_has_a_user_and_every_facility_a_manager(data, facilities):
    assert set().union(*(user["roles"] for user in data["users"])) == ROLES
    managed = set().union(*(user["facilities"] for user in data["users"]))
    assert managed == set(facilities)


def test_the_documented_demo_accounts_exist(data, orgs):
    users = {user["email"]: user for user in data["users"]}
    assert users["admin@labshare.demo"]["roles"] == ["admin"]
    assert users["manager@labshare.demo"]["roles"] == ["lab_manager"]
    assert users["manager@labshare.demo"]["facilities"] == ["eco_island"]
    assert users["manager2@labshare.demo"]["roles"] == ["lab_manager"]
    assert users["manager2@labshare.demo"]["facilities"] != ["eco_island"]
    assert users["finance@labshare.demo"]["roles"] == ["finance"]
    researcher = users["researcher@labshare.demo"]
    assert researcher["roles"] == ["researcher"]
    assert orgs[researcher["org"]]["kind"] == "university"
    engineer = users["engineer@labshare.demo"]
    assert engineer["roles"] == ["researcher"]
    assert engineer["locale"] == "en"
    assert orgs[engineer["org"]]["kind"] == "enterprise"
    assert orgs[engineer["org"]]["tech_sme"] is True
    assert sum(user["roles"] == ["researcher"] for user in data["users"]) >= 5
