"""Unified social credit codes (GB 32100-2015): what is accepted, what is rejected, and why."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.accounts.credit_code import (
    CHARSET,
    REASONS,
    REGISTRATION_AUTHORITIES,
    InvalidCreditCode,
    credit_code_check_character,
    is_valid_credit_code,
    make_credit_code,
    normalise_credit_code,
    organisation_code_check_character,
    validate_credit_code,
)

# The example printed in GB 32100-2015 and in most descriptions of it.
STANDARD_EXAMPLE = "91350100M000100Y43"

# Codes in the shapes real organisations have, with check characters worked out independently
# (see test_examples_satisfy_the_checksum_equations_of_the_standards).
EXAMPLES = [
    pytest.param(("1", "2", "510000", "45071234"), "125100004507123479", id="institution-sichuan"),
    pytest.param(("1", "1", "511500", "00871526"), "11511500008715262Y", id="government-organ-yibin"),
    pytest.param(("5", "1", "510100", "MJ0123AB"), "51510100MJ0123AB3B", id="social-group-chengdu"),
    pytest.param(("9", "1", "510107", "MA62XK3R"), "91510107MA62XK3R42", id="enterprise-wuhou"),
    pytest.param(("9", "2", "510104", "MA6DG4HL"), "92510104MA6DG4HL8M", id="sole-trader-jinjiang"),
    pytest.param(("9", "3", "511402", "MA64QW7Y"), "93511402MA64QW7Y3P", id="cooperative-dongpo"),
    pytest.param(("Y", "1", "510700", "MA6A28CN"), "Y1510700MA6A28CN4A", id="other-mianyang"),
]

CODE_WEIGHTS = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]
ORG_CODE_WEIGHTS = [3, 7, 9, 10, 5, 8, 4, 2]


def reason_of(raw: str) -> tuple[str, int | None]:
    with pytest.raises(InvalidCreditCode) as caught:
        validate_credit_code(raw)
    return caught.value.reason, caught.value.position


def with_checks(first16: str) -> str:
    """Complete 16 characters into a code with both check characters right, whatever else is wrong."""
    first17 = first16 + organisation_code_check_character(first16[8:])
    return first17 + credit_code_check_character(first17)


def test_the_example_of_the_standard_is_valid():
    assert validate_credit_code(STANDARD_EXAMPLE) == STANDARD_EXAMPLE
    assert is_valid_credit_code(STANDARD_EXAMPLE)
    assert organisation_code_check_character("M000100Y") == "4"
    assert credit_code_check_character(STANDARD_EXAMPLE[:17]) == "3"


@pytest.mark.parametrize(("parts", "expected"), EXAMPLES)
def test_make_credit_code_builds_the_expected_code(parts, expected):
    assert make_credit_code(*parts) == expected
    assert validate_credit_code(expected) == expected


@pytest.mark.parametrize(("parts", "expected"), EXAMPLES)
def test_examples_satisfy_the_checksum_equations_of_the_standards(parts, expected):
    del parts
    # GB 11714: weighted body plus check value (X = 10) is a multiple of 11.
    org_check = 10 if expected[16] == "X" else int(expected[16])
    body_sum = sum(
        int(char, 36) * weight for char, weight in zip(expected[8:16], ORG_CODE_WEIGHTS, strict=True)
    )
    assert (body_sum + org_check) % 11 == 0
    # GB 32100: weighted first 17 plus the value of the check character is a multiple of 31.
    values = [CHARSET.index(char) for char in expected]
    assert (sum(v * w for v, w in zip(values, CODE_WEIGHTS, strict=False)) + values[17]) % 31 == 0


def test_org_code_check_character_uses_x_for_ten_and_zero_for_eleven():
    # 3*1 + 7*2 = 17 = 11 + 6 -> 11 - 6 = 5; 3*4 = 12 = 11 + 1 -> 10 -> X; 0 -> 11 -> 0.
    assert organisation_code_check_character("12000000") == "5"
    assert organisation_code_check_character("40000000") == "X"
    assert organisation_code_check_character("00000000") == "0"
    code = make_credit_code("9", "1", "510100", "40000000")
    assert code[16] == "X"
    assert is_valid_credit_code(code)


def test_lowercase_and_whitespace_are_accepted_after_normalisation():
    assert normalise_credit_code(" 9135 0100 m000 100y43\n") == STANDARD_EXAMPLE
    assert validate_credit_code("91350100m000100y43") == STANDARD_EXAMPLE
    assert validate_credit_code("\t91350100M000100Y43  ") == STANDARD_EXAMPLE


def test_full_width_characters_and_ideographic_spaces_are_folded():
    assert validate_credit_code("９１３５０１００\u3000Ｍ０００１００Ｙ４３") == STANDARD_EXAMPLE


@pytest.mark.parametrize("raw", ["", "9135010", STANDARD_EXAMPLE[:17], STANDARD_EXAMPLE + "0", "   "])
def test_wrong_length_is_reported_without_a_position(raw):
    assert reason_of(raw) == ("length", None)
    assert not is_valid_credit_code(raw)


@pytest.mark.parametrize("letter", ["I", "O", "S", "V", "Z"])
@pytest.mark.parametrize("position", [1, 2, 9, 13, 18])
def test_forbidden_letters_are_reported_with_their_position(letter, position):
    raw = STANDARD_EXAMPLE[: position - 1] + letter + STANDARD_EXAMPLE[position:]
    assert reason_of(raw) == ("charset", position)


@pytest.mark.parametrize("char", ["-", "_", "*", "é", "中"])
def test_punctuation_and_non_latin_characters_are_not_in_the_charset(char):
    raw = STANDARD_EXAMPLE[:5] + char + STANDARD_EXAMPLE[6:]
    assert reason_of(raw) == ("charset", 6)


def test_the_first_charset_violation_is_the_one_reported():
    assert reason_of("9I350100M000100Y4O") == ("charset", 2)


def test_unknown_registration_authority_is_rejected():
    assert set("1259Y") <= REGISTRATION_AUTHORITIES
    for authority in sorted(set(CHARSET) - REGISTRATION_AUTHORITIES):
        assert reason_of(with_checks(authority + "1510100MA62XK3R")) == ("authority", 1)


@pytest.mark.parametrize("authority", sorted(REGISTRATION_AUTHORITIES))
def test_every_known_registration_authority_is_accepted(authority):
    assert is_valid_credit_code(make_credit_code(authority, "1", "510100", "MA62XK3R"))


def test_division_must_be_six_digits():
    assert reason_of(with_checks("9151A100MA62XK3R")) == ("division", 5)
    assert reason_of(with_checks("91M10100MA62XK3R")) == ("division", 3)


def test_division_must_start_with_a_province_or_the_national_level():
    assert reason_of(with_checks("91990000MA62XK3R")) == ("division", 3)
    assert reason_of(with_checks("91000000MA62XK3R")) == ("division", 3)
    assert is_valid_credit_code(with_checks("12100000MA62XK3R"))  # national-level registration


def test_bad_org_code_check_character_is_reported_at_position_17():
    first16 = "91510107MA62XK3R"
    good = organisation_code_check_character(first16[8:])
    for wrong in "0123456789X":
        if wrong == good:
            continue
        first17 = first16 + wrong
        assert reason_of(first17 + credit_code_check_character(first17)) == ("org_code_check", 17)


def test_bad_final_check_character_is_reported_at_position_18():
    for wrong in CHARSET:
        if wrong != STANDARD_EXAMPLE[17]:
            assert reason_of(STANDARD_EXAMPLE[:17] + wrong) == ("check_character", 18)


def test_corrupting_the_organisation_body_is_caught_by_its_own_check():
    assert reason_of("91350100M100100Y43") == ("org_code_check", 17)


def test_corrupting_the_organisation_type_is_caught_by_the_final_check():
    assert reason_of("92350100M000100Y43") == ("check_character", 18)


def test_reasons_are_the_documented_stable_codes():
    assert REASONS == ("length", "charset", "authority", "division", "org_code_check", "check_character")
    with pytest.raises(ValueError, match="unknown reason"):
        InvalidCreditCode("typo")


def test_invalid_credit_code_is_a_value_error_with_a_readable_message():
    with pytest.raises(ValueError, match="position 18") as caught:
        validate_credit_code(STANDARD_EXAMPLE[:17] + "0")
    assert isinstance(caught.value, InvalidCreditCode)


@pytest.mark.parametrize("raw", [None, 91350100, b"91350100M000100Y43", ["91350100M000100Y43"]])
def test_non_strings_are_not_valid(raw):
    assert is_valid_credit_code(raw) is False


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        (("91", "1", "510100", "MA62XK3R"), "length"),
        (("9", "1", "51010", "MA62XK3R"), "length"),
        (("9", "1", "510100", "MA62XK3"), "length"),
        (("9", "1", "510100", "MA62XK3RQ"), "length"),
        (("9", "1", "510100", "MA62XK3O"), "charset"),
        (("Z", "1", "510100", "MA62XK3R"), "charset"),
        (("H", "1", "510100", "MA62XK3R"), "authority"),
        (("9", "1", "5101A0", "MA62XK3R"), "division"),
    ],
)
def test_make_credit_code_refuses_parts_that_cannot_make_a_valid_code(parts, reason):
    with pytest.raises(InvalidCreditCode) as caught:
        make_credit_code(*parts)
    assert caught.value.reason == reason


def test_make_credit_code_normalises_its_parts():
    assert make_credit_code("9", "1", " 510107 ", "ma62xk3r") == "91510107MA62XK3R42"


@pytest.mark.parametrize("bad", ["", "1234567890123456", "123456789012345678", "1234567890123456I"])
def test_check_character_needs_seventeen_characters_from_the_charset(bad):
    with pytest.raises(InvalidCreditCode):
        credit_code_check_character(bad)


# --- properties over random codes -------------------------------------------------------------------

PROVINCE_PREFIXES = ["10", "11", "31", "44", "51", "54", "65", "82"]

valid_codes = st.builds(
    make_credit_code,
    authority=st.sampled_from(sorted(REGISTRATION_AUTHORITIES)),
    org_type=st.sampled_from(CHARSET),
    division=st.builds(
        lambda prefix, rest: prefix + rest,
        st.sampled_from(PROVINCE_PREFIXES),
        st.text(alphabet="0123456789", min_size=4, max_size=4),
    ),
    org_body8=st.text(alphabet=CHARSET, min_size=8, max_size=8),
)


@settings(database=None, deadline=None)
@given(code=valid_codes)
def test_generated_codes_are_valid_and_round_trip(code):
    assert validate_credit_code(code) == code
    assert validate_credit_code(code.lower()) == code


@settings(database=None, deadline=None)
@given(code=valid_codes)
def test_changing_any_one_character_of_a_valid_code_makes_it_invalid(code):
    for index in range(len(code)):
        for replacement in CHARSET + "IOSVZ":
            if replacement == code[index]:
                continue
            corrupted = code[:index] + replacement + code[index + 1 :]
            assert not is_valid_credit_code(corrupted), (code, index + 1, replacement)


@settings(database=None, deadline=None)
@given(code=valid_codes, data=st.data())
def test_swapping_two_adjacent_different_characters_before_the_check_is_detected(code, data):
    index = data.draw(st.integers(min_value=0, max_value=15))
    if code[index] == code[index + 1]:
        return
    swapped = code[:index] + code[index + 1] + code[index] + code[index + 2 :]
    assert not is_valid_credit_code(swapped)


@settings(database=None, deadline=None)
@given(code=valid_codes, data=st.data())
def test_a_single_corruption_is_reported_with_a_documented_reason(code, data):
    index = data.draw(st.integers(min_value=0, max_value=17))
    replacement = data.draw(st.sampled_from(CHARSET + "IOSVZ").filter(lambda c: c != code[index]))
    with pytest.raises(InvalidCreditCode) as caught:
        validate_credit_code(code[:index] + replacement + code[index + 1 :])
    assert caught.value.reason in REASONS
    assert caught.value.position is not None
    # The fault is never reported before the corrupted position.
    assert caught.value.position >= index + 1 or caught.value.reason == "division"
