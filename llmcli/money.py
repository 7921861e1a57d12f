"""Exact amounts of money: what a call cost, as a Decimal, stored as whole picodollars.

Prices are quoted per million tokens with up to six decimals (Gemini's cached input costs
$0.01875/M), so one token can cost a fraction of a nanodollar. Binary floats added up over a
log print `9.000000000000002e-07`; these amounts are instead exact decimals, rounded once to
the picodollar (10^-12 USD) when a call is priced, and summed as integers by the log. This
module imports nothing of ours.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

PICO = Decimal("1e-12")


def exact(amount: Decimal | float | int | str) -> Decimal:
    """`amount` as a Decimal rounded to the picodollar (a float is read as it prints)."""
    value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    return value.quantize(PICO, rounding=ROUND_HALF_EVEN).normalize() + 0


def to_pico(amount: Decimal) -> int:
    """Whole picodollars, for storage and exact sums."""
    return int(exact(amount).scaleb(12))


def from_pico(picos: int) -> Decimal:
    return exact(Decimal(picos).scaleb(-12))


def plain(amount: Decimal | float) -> str:
    """`0.000022`: digits only, never an exponent or float noise (CSV, tables)."""
    value = exact(amount)
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def usd(amount: Decimal | float | None) -> str:
    """An amount for people: `$0.000031`; `n/a` when the price is unknown (never $0).

    Six decimals, except for an amount below a millionth of a dollar that is not zero: its
    digits are shown (`$0.00000015`), so a call that cost something never reads as free.
    """
    if amount is None:
        return "n/a"
    if amount and abs(amount) < 0.0000005:
        return f"${plain(amount)}"
    return f"${amount:,.6f}"
