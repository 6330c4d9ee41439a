"""Money and dates formatted the way each locale writes them, with the currency's own digits."""

from __future__ import annotations

from datetime import date

import pytest

from bot.domain import Money
from bot.i18n import babel_locale, format_date, format_money, language_of

NBSP = "\xa0"


@pytest.mark.parametrize(
    ("money", "locale", "expected"),
    [
        (Money(5000000, "CLP"), "es-CL", "$5.000.000"),
        (Money(1234567, "CLP"), "es-CL", "$1.234.567"),
        (Money(1234567, "CLP"), "en-US", "CLP1,234,567"),
        (Money(1234567, "CLP"), "es-MX", "CLP1,234,567"),
        (Money(123450, "USD"), "en-US", "$1,234.50"),
        (Money(123450, "USD"), "es-CL", "US$1.234,50"),
        (Money(123450, "USD"), "es-MX", "USD1,234.50"),
        (Money(123450, "MXN"), "es-MX", "$1,234.50"),
        (Money(123450, "MXN"), "en-US", "MX$1,234.50"),
        (Money(123450, "MXN"), "es-CL", "MXN1.234,50"),
        (Money(123450, "EUR"), "en-US", "€1,234.50"),
        (Money(123450, "EUR"), "es-CL", "EUR1.234,50"),
        (Money(123450, "EUR"), "es-MX", "EUR1,234.50"),
        (Money(123450, "EUR"), "es", f"1.234,50{NBSP}€"),
        (Money(5, "USD"), "en-US", "$0.05"),
        (Money(0, "CLP"), "es-CL", "$0"),
    ],
)
def test_format_money(money: Money, locale: str, expected: str) -> None:
    assert format_money(money, locale) == expected


@pytest.mark.parametrize("locale", ["es-CL", "es_CL"])
def test_both_tag_spellings_are_understood(locale: str) -> None:
    assert format_money(Money(45990, "CLP"), locale) == "$45.990"


@pytest.mark.parametrize(
    ("locale", "style", "expected"),
    [
        ("es", "long", "5 de diciembre de 2026"),
        ("es-CL", "long", "5 de diciembre de 2026"),
        ("es-MX", "long", "5 de diciembre de 2026"),
        ("en", "long", "December 5, 2026"),
        ("en-US", "long", "December 5, 2026"),
        ("es-CL", "medium", "05-12-2026"),
        ("en-US", "medium", "Dec 5, 2026"),
        ("en-US", "short", "12/5/26"),
    ],
)
def test_format_date(locale: str, style: str, expected: str) -> None:
    assert format_date(date(2026, 12, 5), locale, style) == expected


@pytest.mark.parametrize(
    ("tag", "language"),
    [("es", "es"), ("es-CL", "es"), ("es_MX", "es"), ("en-US", "en"), ("en", "en"), ("fr-FR", "es"), ("zz", "es")],
)
def test_language_of_falls_back_to_spanish(tag: str, language: str) -> None:
    assert language_of(tag) == language


@pytest.mark.parametrize("tag", ["xx-YY", "not a locale", ""])
def test_unknown_locale_formats_in_spanish_instead_of_failing(tag: str) -> None:
    assert str(babel_locale(tag)) == "es"
    assert format_date(date(2026, 12, 5), tag) == "5 de diciembre de 2026"
