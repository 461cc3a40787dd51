"""Validate and build unified social credit codes (统一社会信用代码, GB 32100-2015) of organisations.

A code has 18 characters from a 31-character set (digits and capital letters except I, O, S, V, Z):

    position 1      registration authority (登记管理部门代码): 1 机构编制, 5 民政, 9 工商, Y 其他, ...
    position 2      organisation type within that authority (机构类别代码)
    positions 3-8   administrative division of the registering authority (GB/T 2260, six digits)
    positions 9-17  organisation code (组织机构代码, GB 11714): eight body characters and a mod-11 check
                    character (0-9 or X) in position 17
    position 18     check character over positions 1-17 (mod 31)

Both check characters are verified. Pure Python: used by the account services, the web forms, the demo
seed and the test factories alike.
"""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = [
    "CHARSET",
    "REASONS",
    "REGISTRATION_AUTHORITIES",
    "InvalidCreditCode",
    "credit_code_check_character",
    "is_valid_credit_code",
    "make_credit_code",
    "normalise_credit_code",
    "organisation_code_check_character",
    "validate_credit_code",
]

CODE_LENGTH: Final = 18

#: The 31 characters a code may contain, in the order of their values 0..30.
CHARSET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_VALUE = {char: value for value, char in enumerate(CHARSET)}

#: Weights of positions 1..17 for the final check character: 3**(i-1) mod 31.
_CODE_WEIGHTS: Final = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

#: Weights of the eight body characters of a GB 11714 organisation code.
_ORG_CODE_WEIGHTS: Final = (3, 7, 9, 10, 5, 8, 4, 2)

#: Registration authorities (登记管理部门代码). GB 32100-2015 itself names 1 机构编制, 5 民政,
#: 9 工商, Y 其他; code-assignment tables issued since fill 2-8 and A (e.g. 2 外交, 3 司法行政, 8 工会,
#: A 中央军委) and N 农业, and some published tables also list B-G. All of these are accepted: rejecting
#: a real organisation's code is worse than accepting an unusual one, and both check characters apply.
REGISTRATION_AUTHORITIES: Final = frozenset("123456789ABCDEFGNY")

#: First two digits of the division codes a registering authority can have: the province-level units of
#: GB/T 2260 (incl. 71 台湾, 81 香港, 82 澳门) and 10 for authorities at national level (100000).
_DIVISION_PREFIXES: Final = frozenset(
    str(prefix)
    for block in (range(10, 16), range(21, 24), range(31, 38), range(41, 47), range(50, 55), range(61, 66))
    for prefix in block
) | {"71", "81", "82"}

#: Every value `InvalidCreditCode.reason` can take.
REASONS: Final = ("length", "charset", "authority", "division", "org_code_check", "check_character")

_MESSAGES: Final = {
    "length": "A unified social credit code has 18 characters.",
    "charset": "Only digits and the capital letters A-Y except I, O, S and V are allowed.",
    "authority": "The first character is not a known registration authority.",
    "division": "Characters 3 to 8 must be an administrative division code (six digits).",
    "org_code_check": "The organisation code (characters 9 to 17) has a wrong check character.",
    "check_character": "The last character does not match the check character of the code.",
}


class InvalidCreditCode(ValueError):
    """A unified social credit code that fails validation.

    `reason` is a stable code (one of `REASONS`) for the web layer to translate; `position` is the 1-based
    position of the offending character, or None when no single position is at fault (wrong length).
    """

    def __init__(self, reason: str, position: int | None = None):
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        self.reason = reason
        self.position = position
        where = f" (position {position})" if position is not None else ""
        super().__init__(_MESSAGES[reason] + where)


def normalise_credit_code(raw: str) -> str:
    """The code as users mean it: whitespace removed, full-width characters folded, upper case."""
    folded = unicodedata.normalize("NFKC", raw)
    return "".join(folded.split()).upper()


def _check_charset(text: str, first_position: int = 1) -> None:
    for offset, char in enumerate(text):
        if char not in _VALUE:
            raise InvalidCreditCode("charset", first_position + offset)


def organisation_code_check_character(body8: str) -> str:
    """The GB 11714 check character (0-9 or X) for the eight body characters of an organisation code."""
    if len(body8) != 8:
        raise InvalidCreditCode("length")
    _check_charset(body8, first_position=9)
    # GB 11714 values letters A=10 .. Z=35, unlike the credit code's own 31-character set.
    total = sum(int(char, 36) * weight for char, weight in zip(body8, _ORG_CODE_WEIGHTS, strict=True))
    check = 11 - total % 11
    return {10: "X", 11: "0"}.get(check, str(check))


def credit_code_check_character(first17: str) -> str:
    """The check character (position 18) for the first 17 characters of a code."""
    if len(first17) != CODE_LENGTH - 1:
        raise InvalidCreditCode("length")
    _check_charset(first17)
    total = sum(_VALUE[char] * weight for char, weight in zip(first17, _CODE_WEIGHTS, strict=True))
    return CHARSET[(31 - total % 31) % 31]


def validate_credit_code(raw: str) -> str:
    """The normalised code if it is valid; raises InvalidCreditCode (reason, position) otherwise."""
    code = normalise_credit_code(raw)
    if len(code) != CODE_LENGTH:
        raise InvalidCreditCode("length")
    _check_charset(code)
    if code[0] not in REGISTRATION_AUTHORITIES:
        raise InvalidCreditCode("authority", 1)
    division = code[2:8]
    for offset, char in enumerate(division):
        if not char.isdigit():
            raise InvalidCreditCode("division", 3 + offset)
    if division[:2] not in _DIVISION_PREFIXES:
        raise InvalidCreditCode("division", 3)
    if organisation_code_check_character(code[8:16]) != code[16]:
        raise InvalidCreditCode("org_code_check", 17)
    if credit_code_check_character(code[:17]) != code[17]:
        raise InvalidCreditCode("check_character", 18)
    return code


def is_valid_credit_code(raw: object) -> bool:
    """Whether `raw` is a valid code (after normalisation); anything but a string is not."""
    if not isinstance(raw, str):
        return False
    try:
        validate_credit_code(raw)
    except InvalidCreditCode:
        return False
    return True


def make_credit_code(authority: str, org_type: str, division: str, org_body8: str) -> str:
    """A valid code from its parts, computing both check characters (demo data and test factories).

    Raises InvalidCreditCode when a part has the wrong length or the result would not be valid.
    """
    parts = [normalise_credit_code(part) for part in (authority, org_type, division, org_body8)]
    if [len(part) for part in parts] != [1, 1, 6, 8]:
        raise InvalidCreditCode("length")
    authority, org_type, division, org_body8 = parts
    first17 = authority + org_type + division + org_body8 + organisation_code_check_character(org_body8)
    return validate_credit_code(first17 + credit_code_check_character(first17))
