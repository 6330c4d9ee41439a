"""Money: integer minor units of one currency; arithmetic never mixes currencies or invents decimals."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.domain import Money


def test_adding_and_subtracting_keep_minor_units_and_currency() -> None:
    assert Money(45990, "CLP") + Money(10, "CLP") == Money(46000, "CLP")
    assert Money(12050, "USD") - Money(50, "USD") == Money(12000, "USD")
    assert Money(100, "MXN") - Money(250, "MXN") == Money(-150, "MXN")


@pytest.mark.parametrize("operation", [Money.__add__, Money.__sub__])
def test_mixing_currencies_is_an_error(operation: object) -> None:
    with pytest.raises(ValueError, match="cannot mix CLP and USD"):
        operation(Money(1000, "CLP"), Money(1000, "USD"))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("45990", "CLP", 45990),
        (45990, "CLP", 45990),
        ("120.50", "USD", 12050),
        (Decimal("0.01"), "USD", 1),
        ("1234.5", "MXN", 123450),
        ("99.99", "EUR", 9999),
        ("100.00", "CLP", 100),
    ],
)
def test_from_amount_converts_major_units_with_the_currency_digits(
    amount: Decimal | int | str, currency: str, minor: int
) -> None:
    assert Money.from_amount(amount, currency) == Money(minor, currency)


@pytest.mark.parametrize(("amount", "currency"), [("100.5", "CLP"), ("0.001", "USD"), ("10.125", "MXN")])
def test_from_amount_rejects_fractions_the_currency_cannot_hold(amount: str, currency: str) -> None:
    with pytest.raises(ValueError, match=f"more decimals than {currency} allows"):
        Money.from_amount(amount, currency)


def test_amount_and_digits_follow_iso_4217() -> None:
    assert (Money(5000000, "CLP").digits, Money(5000000, "CLP").amount) == (0, Decimal("5000000"))
    assert (Money(12050, "USD").digits, Money(12050, "USD").amount) == (2, Decimal("120.50"))


@pytest.mark.parametrize("minor", [10.5, Decimal("10"), "10", True])
def test_minor_units_must_be_a_plain_int(minor: object) -> None:
    with pytest.raises(TypeError):
        Money(minor, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize("currency", ["usd", "US", "DOLLAR", ""])
def test_currency_must_be_an_iso_code(currency: str) -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        Money(100, currency)


def test_money_is_immutable_and_hashable() -> None:
    money = Money(100, "CLP")
    with pytest.raises(AttributeError):
        money.minor = 200  # type: ignore[misc]
    assert len({Money(100, "CLP"), Money(100, "CLP"), Money(100, "USD")}) == 2
