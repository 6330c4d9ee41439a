"""Entity extraction with a fixed `now`: Wednesday 11 March 2026, 12:00 in Santiago (15:00 UTC)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from bot.domain import Entities, Money
from bot.nlu.entities import extract_entities

NOW = datetime(2026, 3, 11, 15, 0, tzinfo=UTC)


def extract(text: str, language: str = "es", currency: str = "CLP", timezone: str = "America/Santiago") -> Entities:
    return extract_entities(text, language=language, timezone=timezone, currency=currency, now=NOW)


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("el viernes te pago", "es", date(2026, 3, 13)),
        ("el miércoles", "es", date(2026, 3, 18)),  # today is Wednesday: "el miércoles" is next week's
        ("este miércoles", "es", date(2026, 3, 11)),
        ("el otro viernes", "es", date(2026, 3, 20)),
        ("el viernes que viene", "es", date(2026, 3, 13)),
        ("el lunes pasado pagué", "es", date(2026, 3, 9)),
        ("pago a fin de mes", "es", date(2026, 3, 31)),
        ("a principios de mes", "es", date(2026, 4, 1)),
        ("cuando me paguen la quincena", "es", date(2026, 3, 15)),
        ("mañana", "es", date(2026, 3, 12)),
        ("Pasado mañana sin falta", "es", date(2026, 3, 13)),
        ("hoy en la tarde", "es", date(2026, 3, 11)),
        ("ya pagué ayer", "es", date(2026, 3, 10)),
        ("le pago el 30", "es", date(2026, 3, 30)),
        ("el día 10", "es", date(2026, 4, 10)),  # the 10th has passed this month
        ("pago el quince", "es", date(2026, 3, 15)),
        ("el lunes 16", "es", date(2026, 3, 16)),
        ("15/12", "es", date(2026, 12, 15)),
        ("03/04", "es", date(2026, 4, 3)),  # day-first in Spanish
        ("12/15", "es", date(2026, 12, 15)),  # 15 cannot be a month
        ("15/12/2027", "es", date(2027, 12, 15)),
        ("01/03", "es", date(2027, 3, 1)),  # already past this year
        ("pago el 5 de diciembre", "es", date(2026, 12, 5)),
        ("el 3 de marzo", "es", date(2027, 3, 3)),
        ("dentro de dos semanas", "es", date(2026, 3, 25)),
        ("en 3 días", "es", date(2026, 3, 14)),
        ("I'll pay next Friday", "en", date(2026, 3, 13)),
        ("on the 30th", "en", date(2026, 3, 30)),
        ("I'll pay $200 on the 1st", "en", date(2026, 4, 1)),
        ("03/04", "en", date(2027, 3, 4)),  # month-first in English: 4 March, already past
        ("12/15", "en", date(2026, 12, 15)),
        ("15/12", "en", date(2026, 12, 15)),  # 15 cannot be a month: read day-first
        ("December 3rd", "en", date(2026, 12, 3)),
        ("tomorrow", "en", date(2026, 3, 12)),
        ("the day after tomorrow", "en", date(2026, 3, 13)),
        ("end of the month", "en", date(2026, 3, 31)),
        ("in a week", "en", date(2026, 3, 18)),
        ("last friday", "en", date(2026, 3, 6)),
    ],
)
def test_dates(text: str, language: str, expected: date) -> None:
    assert extract(text, language).dates == (expected,)


def test_dates_resolve_in_the_debtors_time_zone() -> None:
    late_evening = datetime(2026, 3, 12, 2, 0, tzinfo=UTC)  # still 11 March, 23:00, in Santiago
    in_santiago = extract_entities(
        "mañana", language="es", timezone="America/Santiago", currency="CLP", now=late_evening
    )
    in_utc = extract_entities("mañana", language="es", timezone="UTC", currency="CLP", now=late_evening)
    assert (in_santiago.dates, in_utc.dates) == ((date(2026, 3, 12),), (date(2026, 3, 13),))


def test_quincena_after_the_fifteenth_is_the_last_day_of_the_month() -> None:
    later = datetime(2026, 4, 20, 15, 0, tzinfo=UTC)
    found = extract_entities("en la quincena", language="es", timezone="America/Mexico_City", currency="MXN", now=later)
    assert found.dates == (date(2026, 4, 30),)


@pytest.mark.parametrize(
    "text",
    ["hice el depósito esta mañana", "en unos días", "puedo 500 varos por quincena", "la próxima semana", "ok"],
)
def test_no_date(text: str) -> None:
    assert extract(text).dates == ()


@pytest.mark.parametrize(
    ("text", "currency", "expected"),
    [
        ("$50.000", "CLP", Money(50_000, "CLP")),
        ("te pago 50 mil", "CLP", Money(50_000, "CLP")),
        ("50k", "CLP", Money(50_000, "CLP")),
        ("cincuenta mil pesos", "CLP", Money(50_000, "CLP")),
        ("20 lucas", "CLP", Money(20_000, "CLP")),
        ("2 palos", "CLP", Money(2_000_000, "CLP")),
        ("1.5 millones", "CLP", Money(1_500_000, "CLP")),
        ("dos millones trescientos mil pesos", "CLP", Money(2_300_000, "CLP")),
        ("puedo pagar 120,50", "CLP", Money(121, "CLP")),  # CLP has no decimals: rounded
        ("puedo pagar 120,50", "USD", Money(12_050, "USD")),
        ("USD 120.50", "USD", Money(12_050, "USD")),
        ("US$ 1.500,50", "CLP", Money(150_050, "USD")),  # a named currency wins over the debtor's
        ("50 dólares", "CLP", Money(5_000, "USD")),
        ("fifty dollars", "USD", Money(5_000, "USD")),
        ("500 varos", "MXN", Money(50_000, "MXN")),
        ("100 mangos", "ARS", Money(10_000, "ARS")),
        ("20 lucas", "PEN", Money(2_000, "PEN")),  # in Peru a luca is one sol
        ("S/ 300", "PEN", Money(30_000, "PEN")),
        ("I can do 100 a month", "USD", Money(10_000, "USD")),
        ("$1.5k", "USD", Money(150_000, "USD")),
    ],
)
def test_amounts(text: str, currency: str, expected: Money) -> None:
    assert extract(text, "en" if currency == "USD" else "es", currency).amounts == (expected,)


@pytest.mark.parametrize(
    "text",
    [
        "mi rut es 12.345.678-9",
        "hace más de 2 años",
        "el 50% ahora",
        "tengo 2 hijos",
        "llámame al +56 9 8765 4321",
        "once I get paid",
        "all 500 of them",
    ],
)
def test_no_amount(text: str) -> None:
    assert extract(text).amounts == ()


def test_several_entities_in_one_message_do_not_share_digits() -> None:
    found = extract("el 15 deposito los 50 mil, comprobante 884512")
    assert found == Entities(
        dates=(date(2026, 3, 15),), amounts=(Money(50_000, "CLP"),), installments=None, reference="884512"
    )


def test_installments_with_their_amount() -> None:
    found = extract("could we make it 12 payments of $40", "en", "USD")
    assert (found.installments, found.amounts) == (12, (Money(4_000, "USD"),))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("en 3 cuotas", 3),
        ("seis meses", 6),
        ("a 12 meses", 12),
        ("three payments", 3),
        ("in 6 installments", 6),
        ("6 monthly payments", 6),
        ("hace 2 meses pagué", None),
        ("2 months ago", None),
        ("make a payment", None),
    ],
)
def test_installments(text: str, expected: int | None) -> None:
    assert extract(text).installments == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("comprobante 123456", "123456"),
        ("Comprobante N° 99887766", "99887766"),
        ("ref ABC-123", "ABC-123"),
        ("transaction id 9XK22Q", "9XK22Q"),
        ("I paid already, confirmation number 7781234", "7781234"),
        ("hice la transferencia el lunes, comprobante de pago 884512", "884512"),
        ("folio 55321", "55321"),
        ("les mando el comprobante", None),
        ("i have a receipt, i paid", None),
    ],
)
def test_reference(text: str, expected: str | None) -> None:
    assert extract(text).reference == expected
