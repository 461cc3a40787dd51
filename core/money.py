"""Money: CNY amounts as Decimal with 2 places, rounded half-up; never float."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CNY_STEP = Decimal("0.01")


def to_cny(value: Decimal | int | str) -> Decimal:
    """An exact CNY amount, rounded half-up to the fen. Floats are refused: they are not exact."""
    if isinstance(value, float | bool):
        raise TypeError(f"money must be Decimal, int or str, not {type(value).__name__}")
    try:
        amount = Decimal(value) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    return round_half_up(amount, CNY_STEP)


def round_half_up(amount: Decimal, step: Decimal = CNY_STEP) -> Decimal:
    """Round to a multiple of `step` (0.01, 0.1, 1, …), halves away from zero as Chinese invoices do."""
    rounded = (amount / step).quantize(Decimal(1), rounding=ROUND_HALF_UP) * step
    return rounded + 0 if rounded else abs(rounded)  # no "-0.00" on an invoice


def format_cny(amount: Decimal, *, symbol: bool = True) -> str:
    """`¥1,234,567.80` — grouping and two places, independent of the UI language."""
    text = f"{to_cny(amount):,.2f}"
    return f"¥{text}" if symbol else text
