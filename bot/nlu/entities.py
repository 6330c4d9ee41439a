"""Entities in a debtor's message: dates, amounts, an installment count and a payment reference.

Extraction runs in a fixed order on the accent-stripped text, and each finding blanks out its span so the
next extractor cannot read the same digits twice: the reference ("comprobante 884512") first, then dates
("el 15", "15/12"), installment counts ("6 cuotas"), and finally amounts. Dates resolve in the debtor's time
zone relative to `now`; formats and conventions are listed in docs/nlu.md.
"""

from __future__ import annotations

import calendar
import functools
import re
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from zoneinfo import ZoneInfo

import dateparser
from babel.numbers import get_currency_precision, list_currencies

from bot.domain import Entities, Money
from bot.nlu import fold, word_set

_ES_NUMBERS = {
    **dict.fromkeys(("un", "uno", "una"), 1),
    **dict(dos=2, tres=3, cuatro=4, cinco=5, seis=6, siete=7, ocho=8, nueve=9, diez=10, once=11, doce=12),
    **dict(trece=13, catorce=14, quince=15, dieciseis=16, diecisiete=17, dieciocho=18, diecinueve=19, veinte=20),
    **dict.fromkeys(("veintiun", "veintiuno", "veintiuna"), 21),
    **dict(veintidos=22, veintitres=23, veinticuatro=24, veinticinco=25, veintiseis=26, veintisiete=27),
    **dict(veintiocho=28, veintinueve=29),
    **dict(treinta=30, cuarenta=40, cincuenta=50, sesenta=60, setenta=70, ochenta=80, noventa=90, cien=100),
    **dict(ciento=100, quinientos=500, quinientas=500, medio=0.5, media=0.5),
    **{f"{p}cientos": n * 100 for p, n in (("dos", 2), ("tres", 3), ("cuatro", 4), ("seis", 6))},
    **{f"{p}cientas": n * 100 for p, n in (("dos", 2), ("tres", 3), ("cuatro", 4), ("seis", 6))},
    **dict(setecientos=700, setecientas=700, ochocientos=800, ochocientas=800, novecientos=900, novecientas=900),
}
_EN_NUMBERS = {
    **dict(zero=0, one=1, two=2, three=3, four=4, five=5, six=6, seven=7, eight=8, nine=9, ten=10, eleven=11),
    **dict(twelve=12),
    **dict(thirteen=13, fourteen=14, fifteen=15, sixteen=16, seventeen=17, eighteen=18, nineteen=19, half=0.5),
    **dict(twenty=20, thirty=30, forty=40, fifty=50, sixty=60, seventy=70, eighty=80, ninety=90),
}
_UNITS = {**_ES_NUMBERS, **_EN_NUMBERS}
_THOUSAND = frozenset({"mil", "thousand"})
_MILLION = frozenset({"millon", "millones", "million", "millions"})
_CONNECTORS = frozenset({"y", "and"})
_ARTICLES = frozenset({"un", "uno", "una", "one", "medio", "media", "half"})
_NUMBER_WORD = "|".join(sorted({*_UNITS, *_THOUSAND, *_MILLION, "hundred"}, key=len, reverse=True))
_WORDS = rf"(?:{_NUMBER_WORD})(?:[\s-]+(?:(?:y|and)\s+)?(?:{_NUMBER_WORD}))*"
_DIGITS = r"\d+(?:[.,]\d+)*"
_NUM = rf"(?:{_DIGITS}|\b{_WORDS})"

_MONTHS = {
    **dict(enero=1, ene=1, febrero=2, feb=2, marzo=3, abril=4, abr=4, mayo=5, junio=6, jun=6, julio=7, jul=7),
    **dict(agosto=8, ago=8, septiembre=9, setiembre=9, sept=9, sep=9, octubre=10, oct=10, noviembre=11, nov=11),
    **dict(diciembre=12, dic=12, january=1, jan=1, february=2, march=3, mar=3, april=4, apr=4, may=5, june=6),
    **dict(july=7, august=8, aug=8, september=9, october=10, november=11, december=12, dec=12),
}
_WEEKDAYS = {
    **dict(lunes=0, martes=1, miercoles=2, jueves=3, viernes=4, biernes=4, sabado=5, domingo=6),
    **dict(monday=0, mon=0, tuesday=1, tues=1, tue=1, wednesday=2, wed=2, thursday=3, thurs=3, thur=3, thu=3),
    **dict(friday=4, fri=4, saturday=5, sunday=6),
}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WEEKDAY = "|".join(sorted(_WEEKDAYS, key=len, reverse=True))
_ORDINAL = r"(?:st|nd|rd|th)"
# After a number, these make it something other than a day of the month or a bare amount.
_NOT_A_DAY = (
    r"(?![.,]?\d|\s*%|\s*(?:mil|k|lucas?|lukas?|palos?|pesos?|varos?|mangos?|soles|dolares|dollars|bucks|cuotas|pagos"
    r"|meses|installments|payments|months|dias|days|semanas|weeks|horas|hours|anos|years)\b)"
)


class _Scratch:
    """The message being read: `lower` for matching, `cased` for copying references; used spans are blanked."""

    def __init__(self, text: str) -> None:
        self.cased = fold(text)
        self.lower = "".join(ch.lower() if len(ch.lower()) == 1 else ch for ch in self.cased)

    def take(self, pattern: re.Pattern[str]) -> Iterator[re.Match[str]]:
        for found in list(pattern.finditer(self.lower)):
            yield found
            self.blank(found.start(), found.end())

    def blank_all(self, pattern: re.Pattern[str]) -> None:
        for found in list(pattern.finditer(self.lower)):
            self.blank(found.start(), found.end())

    def blank(self, start: int, end: int) -> None:
        self.lower = self.lower[:start] + " " * (end - start) + self.lower[end:]


def extract_entities(text: str, *, language: str, timezone: str, currency: str, now: datetime) -> Entities:
    """Dates (debtor's zone, relative to `now`), amounts in `currency` unless another is named, installments, ref."""
    scratch = _Scratch(text)
    reference = _reference(scratch)
    scratch.blank_all(_ID_NUMBER)  # identity numbers are neither dates nor amounts
    today = (now if now.tzinfo else now.replace(tzinfo=ZoneInfo("UTC"))).astimezone(ZoneInfo(timezone)).date()
    dates = _dates(scratch, language, today)
    installments = _installments(scratch)
    amounts = _amounts(scratch, currency)
    return Entities(dates=dates, amounts=amounts, installments=installments, reference=reference)


@functools.cache
def warm_up() -> None:
    """Load dateparser's language data once, so the first debtor does not pay ~100 ms for it."""
    _month_date("15 de diciembre", "es", date(2000, 1, 1))
    _month_date("december 15", "en", date(2000, 1, 1))


# --- reference -----------------------------------------------------------------------------------------------

_REFERENCE_KEY = re.compile(
    r"\b(?:comprobante|voucher|recibo|folio|ref|referencia|reference|operacion|transaccion|transaction"
    r"|confirmation|confirmacion|receipt|txn|tx|autorizacion|authorization|tracking)"
    r"(?:\s+de\s+(?:pago|la\s+transferencia|transferencia|deposito|operacion))?\b"
)
# Words allowed between the key and the reference ("comprobante n° 123", "transaction id is 9XK22Q").
_REFERENCE_FILLER = word_set("id number num no nro n o numero code codigo es is was my mi el la of")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]|[A-Za-z0-9]")
# A Chilean RUT (12.345.678-9) or a number right after an ID word (DNI, cédula, SSN...).
_ID_NUMBER = re.compile(
    r"\b\d{1,2}\.?\d{3}\.?\d{3}-[\dk]\b"
    r"|\b(?:rut|run|dni|cedula|cc|curp|ine|documento|ssn|id)\b\W*(?:(?:es|is|number|numero|nro|no|n)\W+)?[\d.\-]+"
)


def _reference(scratch: _Scratch) -> str | None:
    """The token after 'comprobante', 'ref', 'transaction id'...: it must hold a digit ('el lunes' does not)."""
    for key in _REFERENCE_KEY.finditer(scratch.lower):
        for skipped, token in enumerate(_TOKEN.finditer(scratch.cased, key.end())):
            word = token.group().lower()
            if any(ch.isdigit() for ch in word) and len(word) >= 3:
                scratch.blank(key.start(), token.end())
                return token.group()
            if word not in _REFERENCE_FILLER or skipped >= 3:
                break
    return None


# --- dates ---------------------------------------------------------------------------------------------------

_DateRule = tuple[re.Pattern[str], Callable[[re.Match[str], str, date], date | None]]


def _dates(scratch: _Scratch, language: str, today: date) -> tuple[date, ...]:
    found: list[tuple[int, date]] = []
    for pattern, resolve in _DATE_RULES:
        for match in list(pattern.finditer(scratch.lower)):
            resolved = resolve(match, language, today)
            if resolved is not None:
                found.append((match.start(), resolved))
                scratch.blank(match.start(), match.end())
    return tuple(dict.fromkeys(day for _, day in sorted(found)))


def _numeric(match: re.Match[str], language: str, today: date) -> date | None:
    """15/12 is day-first in Spanish; English reads month-first (12/15) unless the first number cannot be a month.
    Spanish also accepts 12/15 because 15 cannot be a month. Without a year: the next such day from today."""
    first, second = int(match["a"]), int(match["b"])
    month_first = (language == "en" and first <= 12) or (language != "en" and second > 12 >= first)
    day, month = (second, first) if month_first else (first, second)
    if match["y"]:
        year = int(match["y"]) + (2000 if len(match["y"]) == 2 else 0)
        return _valid(year, month, day)
    return _next_month_day(today, month, day)


def _iso(match: re.Match[str], language: str, today: date) -> date | None:
    return _valid(int(match["y"]), int(match["b"]), int(match["a"]))


def _month_name(match: re.Match[str], language: str, today: date) -> date | None:
    return _month_date(re.sub(r"\s+", " ", match.group().strip()), language, today)


@functools.lru_cache(maxsize=512)
def _month_date(span: str, language: str, today: date) -> date | None:
    # dateparser knows month names, abbreviations and ordinals in both languages; "future" picks next year
    # for a day already past. Cached per day: the same span recurs across messages.
    settings = {
        "PREFER_DATES_FROM": "future",
        "RELATIVE_BASE": datetime.combine(today, time(12)),
        "DATE_ORDER": "MDY" if language == "en" else "DMY",
        "REQUIRE_PARTS": ["day", "month"],
        "RETURN_AS_TIMEZONE_AWARE": False,
    }
    parsed = dateparser.parse(span, languages=["es", "en"] if language == "es" else ["en", "es"], settings=settings)
    return parsed.date() if parsed is not None else None


def _day_of_month(match: re.Match[str], language: str, today: date) -> date | None:
    """'el 30', 'on the 30th', 'el lunes 15': that day this month, or next month once it has passed."""
    raw = match["day"]
    day = int(raw) if raw.isdigit() else _UNITS.get(raw)
    if not isinstance(day, int) or not 1 <= day <= 31:
        return None
    month_start = today.replace(day=1)
    for offset in (0, 1):
        start = _add_months(month_start, offset)
        candidate = start.replace(day=min(day, calendar.monthrange(start.year, start.month)[1]))
        if candidate >= today:
            return candidate
    return None


def _weekday(match: re.Match[str], language: str, today: date) -> date | None:
    """'el viernes' / 'next Friday' = the coming Friday (never today); 'este viernes' / 'this Friday' may be
    today; 'el otro viernes' (Chile, Argentina) = the Friday after the coming one; 'el viernes pasado' /
    'last Friday' = the latest Friday before today."""
    target = _WEEKDAYS[match["wd"]]
    modifier = " ".join((match["mod"] or "").split())
    if modifier == "last" or match["past"]:
        return today - timedelta(days=(today.weekday() - target - 1) % 7 + 1)
    ahead = (target - today.weekday()) % 7
    if ahead == 0 and modifier not in ("este", "esta", "this"):
        ahead = 7
    return today + timedelta(days=ahead + (7 if modifier == "el otro" else 0))


def _relative(match: re.Match[str], language: str, today: date) -> date | None:
    """'en 3 dias', 'dentro de dos semanas', 'in a week', 'in a couple of days'; 'en unos dias' is too vague."""
    raw, unit = match["n"], match["unit"]
    if raw is None and unit.endswith("s"):
        return None
    count = 1 if raw is None else int(raw) if raw.isdigit() else {"par": 2, "couple": 2}.get(raw, _UNITS.get(raw))
    if not isinstance(count, int) or count < 1:
        return None
    return today + timedelta(days=count * (7 if unit.startswith(("sem", "week")) else 1))


def _quincena(match: re.Match[str], language: str, today: date) -> date | None:
    """Mexican payday: the 15th or the last day of the month, whichever comes first from today."""
    if match["per"]:  # "por quincena", "cada quincena" is a frequency, not a date
        return None
    last = calendar.monthrange(today.year, today.month)[1]
    return today.replace(day=15) if today.day <= 15 else today.replace(day=last)


def _month_end(match: re.Match[str], language: str, today: date) -> date | None:
    month = _add_months(today.replace(day=1), 1 if match["next"] else 0)
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


def _offset(days: int) -> Callable[[re.Match[str], str, date], date | None]:
    def resolve(match: re.Match[str], language: str, today: date) -> date | None:
        return None if match.groupdict().get("skip") else today + timedelta(days=days)

    return resolve


def _next_weekday(target: int) -> Callable[[re.Match[str], str, date], date | None]:
    def resolve(match: re.Match[str], language: str, today: date) -> date | None:
        return today + timedelta(days=(target - today.weekday()) % 7)

    return resolve


def _valid(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _next_month_day(today: date, month: int, day: int) -> date | None:
    """The next `day`/`month` from today on (29/02 waits for a leap year)."""
    for year in range(today.year, today.year + 5):
        candidate = _valid(year, month, day)
        if candidate is not None and candidate >= today:
            return candidate
    return None


def _add_months(first_of_month: date, months: int) -> date:
    index = first_of_month.month - 1 + months
    return first_of_month.replace(year=first_of_month.year + index // 12, month=index % 12 + 1)


_ES_DAY_WORDS = "|".join(
    sorted((w for w, n in _ES_NUMBERS.items() if isinstance(n, int) and n <= 31 and w not in _ARTICLES), key=len)[::-1]
)
_DATE_RULES: tuple[_DateRule, ...] = tuple(
    (re.compile(pattern), resolve)
    for pattern, resolve in (
        (r"\b(?P<y>\d{4})-(?P<b>\d{1,2})-(?P<a>\d{1,2})\b", _iso),
        (r"\b(?P<a>\d{1,2})([/-])(?P<b>\d{1,2})(?:\2(?P<y>\d{4}|\d{2}))?\b(?![.,]\d)", _numeric),
        (r"\b(?P<a>\d{1,2})\.(?P<b>\d{1,2})\.(?P<y>\d{4})\b", _numeric),
        (rf"\b\d{{1,2}}{_ORDINAL}?(?:\s+de|\s+of)?\s+(?:{_MONTH})\b\.?(?:(?:\s+de|,)?\s+\d{{4}}\b)?", _month_name),
        (rf"\b(?:{_MONTH})\.?\s+\d{{1,2}}{_ORDINAL}?\b(?:,?\s+\d{{4}}\b)?", _month_name),
        (rf"\b(?:{_WEEKDAY})\s+(?P<day>\d{{1,2}}){_ORDINAL}?\b{_NOT_A_DAY}", _day_of_month),
        (r"\bpasado\s+manana\b|\bday\s+after\s+tomorrow\b", _offset(2)),
        (r"\bante\s*ayer\b|\bantes\s+de\s+ayer\b|\bantier\b|\bday\s+before\s+yesterday\b", _offset(-2)),
        (
            r"(?P<skip>\b(?:la|esta|en\s+la|por\s+la|de\s+la|toda\s+la)\s+)?\bmanana\b|\btomorrow\b|\btmrw?\b",
            _offset(1),
        ),
        (r"\bhoy\b|\btoday\b|\btonight\b|\besta\s+(?:noche|tarde)\b|\bthis\s+(?:afternoon|evening)\b", _offset(0)),
        (r"\bayer\b|\byesterday\b", _offset(-1)),
        (r"\b(?P<per>por|cada|x|per|every)?\s*(?:la\s+)?quincena\b(?!s)", _quincena),
        (
            r"\b(?:(?:a|para|al)\s+)?(?:fin|fines|final|finales)\s+(?:de|del)\s+(?:este\s+)?(?P<next>proximo\s+)?mes"
            r"(?:\s+que\s+viene)?\b|\bend\s+of\s+(?:the\s+|this\s+)?(?P<next2>next\s+)?month\b|\bmonth\s+end\b",
            lambda m, lang, today: (
                _month_end(m, lang, today)
                if not m["next2"]
                else _add_months(today.replace(day=1), 2) - timedelta(days=1)
            ),
        ),
        (
            r"\b(?:principios?|inicios?|comienzos?)\s+(?:de|del)\s+(?:proximo\s+)?mes\b"
            r"|\b(?:beginning|start|first)\s+of\s+(?:the\s+|next\s+)?month\b",
            lambda m, lang, today: _add_months(today.replace(day=1), 1),
        ),
        (r"\b(?:el\s+|este\s+)?fin\s+de\s+semana\b|\b(?:this\s+|the\s+)?weekend\b", _next_weekday(5)),
        (
            rf"\b(?P<mod>el\s+otro|el\s+proximo|proximo|este|esta|this|next|last|el|on|by|until)?\s*\b(?P<wd>{_WEEKDAY})\b"
            r"(?:\s+que\s+viene|\s+proximo|(?P<past>\s+pasado))?",
            _weekday,
        ),
        (
            r"\b(?:en|dentro\s+de|in|within)\s+(?:(?:unos|unas|un|una|a)\s+)?(?:(?P<n>\d{1,2}|par|couple|"
            + _NUMBER_WORD
            + r")\s+(?:de\s+|of\s+)?)?(?P<unit>dias?|semanas?|days?|weeks?)\b",
            _relative,
        ),
        (
            rf"\b(?:el|del|al|hasta\s+el|para\s+el|antes\s+del)\s+(?:dia\s+)?(?P<day>\d{{1,2}}|{_ES_DAY_WORDS})\b"
            + _NOT_A_DAY
            + r"(?!\s+(?:de\s+)?(?:cuotas|pagos|meses|mil)\b)",
            _day_of_month,
        ),
        (rf"\b(?:(?:on|by|before|until)\s+)?the\s+(?P<day>\d{{1,2}}){_ORDINAL}?\b{_NOT_A_DAY}", _day_of_month),
        (rf"\b(?:on|by|before|until)\s+(?P<day>\d{{1,2}}){_ORDINAL}\b", _day_of_month),
    )
)

# --- installments --------------------------------------------------------------------------------------------

_INSTALLMENTS = re.compile(
    rf"(?P<ago>\bhace\s+)?\b(?P<n>\d{{1,3}}|{_NUMBER_WORD})\s+(?:monthly\s+|mensuales\s+)?"
    r"(?:cuotas|pagos|mensualidades|parcialidades|partes|abonos|meses|installments|payments|months)\b"
    r"(?P<ago2>\s+(?:ago|atras))?"
)


def _installments(scratch: _Scratch) -> int | None:
    """'en 3 cuotas', 'seis meses', 'three payments': the first count; 'hace 2 meses' / '2 months ago' is not one."""
    for match in scratch.take(_INSTALLMENTS):
        raw = match["n"]
        count = int(raw) if raw.isdigit() else _UNITS.get(raw)
        if match["ago"] or match["ago2"] or raw in _ARTICLES or not isinstance(count, int):
            continue
        if 1 <= count <= 120:
            return count
    return None


# --- amounts -------------------------------------------------------------------------------------------------

# Codes a debtor in the Americas might type; a generic 3-letter match would read "all 500" as Albanian lek.
_ISO_CODES = frozenset(
    code
    for code in word_set("usd clp mxn ars cop pen uyu pyg brl eur cad gbp gtq crc dop hnl nio pab")
    if code.upper() in list_currencies()
)
_CODE = "|".join(sorted(_ISO_CODES))
_SYMBOL_CURRENCY = {"us$": "USD", "u$s": "USD", "usd": "USD", "s/": "PEN", "s/.": "PEN", "€": "EUR"}
_MULTIPLIERS = {
    **dict.fromkeys(("mil", "k", "thousand", "grand", "lucas", "luca", "lukas", "luka"), 1000),
    **dict.fromkeys(("millon", "millones", "million", "millions", "palo", "palos", "mill"), 1_000_000),
}
_LOCAL_WORDS = ("pesos", "peso", "varos", "varo", "baros", "mangos", "mango", "lucas", "luca", "lukas", "luka", "palos")
_DOLLAR_WORDS = ("dolares", "dolar", "dollars", "dollar", "bucks", "buck")
_NAMED = {"soles": "PEN", "sol": "PEN", "euros": "EUR", "euro": "EUR"}
_CURRENCY_WORD = "|".join((*_LOCAL_WORDS, *_DOLLAR_WORDS, *_NAMED, "palo"))
_AMOUNT = re.compile(
    rf"(?P<prefix>us\$|u\$s|\bs/\.?|\$|€|\b(?:{_CODE})\b)?\s?(?P<num>{_NUM})(?:\s?(?P<mult>mil|millones|millon"
    rf"|millions|million|thousand|grand|palos|palo|lucas|luca|lukas|luka|mill|k)\b)?"
    rf"(?:\s+(?:de\s+)?(?P<word>{_CURRENCY_WORD})\b|\s?(?P<code>\b(?:{_CODE})\b))?"
)
# A bare number followed by one of these is a duration, a count or a percentage, not money.
_UNIT_AFTER = re.compile(
    r"^\s*(?:%|por\s*ciento|percent|dias?|days?|semanas?|weeks?|meses|mes|months?|anos?|years?|horas?|hours?"
    r"|hrs?|minutos?|minutes?|am|pm|cuotas?|pagos?|installments?|payments?|veces|times)\b"
)
# A bare number counts as money right after a paying verb: "puedo pagar 50000", "I can do 100", "cuotas de 60".
_PAY_CONTEXT = re.compile(
    r"\b(?:pag\w*|abon\w*|deposit\w*|transfer\w*|doy|dar|ofrezco|ofrecer|puedo|pay|paid|send|sent|offer|give|do"
    r"|take|of|de|only|solo|nomas|about|around|unos|like)\s+(?:los|las|unos|you|me|te|le|like|about|around|como)?\s*$"
)
_GROUPED = re.compile(r"^\d{1,3}(?:([.,])\d{3})(?:\1\d{3})*(?:[.,]\d+)?$")


def _amounts(scratch: _Scratch, currency: str) -> tuple[Money, ...]:
    amounts = []
    for match in list(_AMOUNT.finditer(scratch.lower)):
        money = _money(match, scratch.lower, currency)
        if money is not None:
            amounts.append(money)
            scratch.blank(match.start(), match.end())
    return tuple(amounts)


def _money(match: re.Match[str], text: str, currency: str) -> Money | None:
    prefix, code = match["prefix"], match["code"]
    raw, multiplier, word = match["num"], match["mult"], match["word"]
    is_words = not raw[0].isdigit()
    value = _words_value(raw) if is_words else _digits_value(raw)
    if value is None or value <= 0:
        return None
    marked = prefix or code or multiplier or word
    if not marked and (is_words or not (_GROUPED.match(raw) or _PAY_CONTEXT.search(text[: match.start("num")]))):
        return None
    if not marked and _UNIT_AFTER.match(text[match.end("num") :]):
        return None
    if is_words and raw in _ARTICLES and not (multiplier or word):
        return None
    if multiplier:
        lucas_are_units = currency == "PEN" and multiplier.startswith(("luca", "luka"))
        value *= 1 if lucas_are_units else _MULTIPLIERS[multiplier]
    if word and word.startswith(("luca", "luka", "palo")) and not multiplier:
        value *= 1 if currency == "PEN" and word.startswith(("luca", "luka")) else _MULTIPLIERS[word]
    return _to_money(value, _currency_of(prefix, code, word, currency))


def _currency_of(prefix: str | None, code: str | None, word: str | None, debtor_currency: str) -> str:
    """Explicit currencies win ('USD 120', '300 soles'); '$', 'pesos' and slang mean the debtor's currency.
    'dollars' is the debtor's currency when it is a dollar, else USD."""
    if prefix in _SYMBOL_CURRENCY:
        return _SYMBOL_CURRENCY[prefix]
    if prefix and prefix != "$":
        return prefix.upper()
    if code:
        return code.upper()
    if word in _NAMED:
        return _NAMED[word]
    if word in _DOLLAR_WORDS and not debtor_currency.endswith("D"):
        return "USD"
    return debtor_currency


def _to_money(value: Decimal, currency: str) -> Money | None:
    # More decimals than the currency has (120,50 CLP) are rounded: the debtor meant an amount, not a typo.
    try:
        quantum = Decimal(1).scaleb(-get_currency_precision(currency))
        return Money.from_amount(value.quantize(quantum, rounding=ROUND_HALF_UP), currency)
    except (ValueError, InvalidOperation):
        return None


def _digits_value(raw: str) -> Decimal | None:
    """'50.000' and '50,000' are fifty thousand (a group of exactly three digits); '120,50' and '120.50' have
    decimals; with both separators ('1.500,50', '1,500.50') the last one is the decimal point."""
    separators = [ch for ch in raw if ch in ".,"]
    if not separators:
        return Decimal(raw)
    last = raw.rfind(separators[-1])
    grouping = len(set(separators)) == 1 and (len(separators) > 1 or len(raw) - last - 1 == 3)
    if grouping:
        return Decimal(raw.replace(separators[0], ""))
    whole, fraction = raw[:last], raw[last + 1 :]
    try:
        return Decimal(re.sub(r"[.,]", "", whole) + "." + fraction)
    except InvalidOperation:
        return None


def _words_value(raw: str) -> Decimal | None:
    """'cincuenta mil' -> 50000, 'un millon quinientos mil' -> 1500000, 'two hundred fifty' -> 250."""
    total, current = Decimal(0), Decimal(0)
    for word in re.split(r"[\s-]+", raw):
        if word in _CONNECTORS:
            continue
        if word in _UNITS:
            current += Decimal(str(_UNITS[word]))
        elif word == "hundred":
            current = (current or 1) * 100
        elif word in _THOUSAND:
            total, current = total + (current or 1) * 1000, Decimal(0)
        elif word in _MILLION:
            total, current = (total + (current or 1)) * 1_000_000, Decimal(0)
        else:
            return None
    return total + current
