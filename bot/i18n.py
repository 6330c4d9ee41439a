"""Locale-aware formatting of money and dates (Babel), and locale negotiation."""

from __future__ import annotations

import functools
from datetime import date

from babel import Locale, UnknownLocaleError
from babel.dates import format_date as babel_format_date
from babel.numbers import format_currency

from bot.domain import Money

SUPPORTED_LANGUAGES = ("es", "en")


@functools.lru_cache(maxsize=256)
def babel_locale(tag: str) -> Locale:
    """'es-CL', 'es_CL' or 'es' to a Babel Locale; unknown tags fall back to Spanish.

    Cached: parsing a tag costs more than formatting an amount, and bulk reminder planning formats a million.
    """
    try:
        return Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse("es")


def language_of(tag: str) -> str:
    """The template language for a locale tag: 'es-MX' -> 'es'; anything unsupported -> 'es'."""
    language = babel_locale(tag).language
    return language if language in SUPPORTED_LANGUAGES else "es"


def format_money(money: Money, locale: str) -> str:
    """$5.000.000 for CLP in es-CL (no decimals), $1,234.50 for USD in en-US: the currency's own digits."""
    return format_currency(money.amount, money.currency, locale=babel_locale(locale), currency_digits=True)


def format_date(value: date, locale: str, style: str = "long") -> str:
    """'15 de diciembre de 2026' in Spanish, 'December 15, 2026' in English."""
    return babel_format_date(value, format=style, locale=babel_locale(locale))
