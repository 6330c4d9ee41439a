"""Natural-language understanding: the contract the engine depends on, plus text helpers shared by understanders.

`Understander.understand()` turns one debtor message into an intent, a confidence and typed entities. The offline
implementation is `bot.nlu.offline.OfflineNLU`; this module stays free of scikit-learn so importing the contract
is cheap.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bot.domain import Entities, Intent

LANGUAGES = ("es", "en")
DEFAULT_LANGUAGE = "es"


@dataclass(frozen=True, slots=True)
class Understanding:
    text: str
    intent: Intent
    confidence: float  # 0..1
    entities: Entities
    locale: str  # "es" or "en" (detected when the caller did not say)


class Understander(Protocol):
    def understand(
        self, text: str, *, locale: str | None, timezone: str, currency: str, now: datetime
    ) -> Understanding: ...


# SMS shorthand and contractions, applied per token after accents are stripped. Only expansions that are
# unambiguous in a collections chat: "x" is "por" ("x favor", "x mes"), "u" is "you" (Spanish "u" is rare here).
_SHORTHAND = {
    "q": "que",
    "k": "que",
    "ke": "que",
    "qe": "que",
    "xq": "porque",
    "xk": "porque",
    "pq": "porque",
    "porq": "porque",
    "tb": "tambien",
    "tmb": "tambien",
    "tbn": "tambien",
    "dnd": "donde",
    "x": "por",
    "xa": "para",
    "pa": "para",
    "d": "de",
    "cn": "con",
    "bn": "bien",
    "nd": "nada",
    "msj": "mensaje",
    "msjs": "mensajes",
    "xfa": "por favor",
    "xfavor": "por favor",
    "porfa": "por favor",
    "porfis": "por favor",
    "plis": "por favor",
    "grax": "gracias",
    "grcs": "gracias",
    "grs": "gracias",
    "gcs": "gracias",
    "toy": "estoy",
    "stoy": "estoy",
    "tas": "estas",
    "dsp": "despues",
    "dps": "despues",
    "hla": "hola",
    "mnn": "manana",
    "wsp": "whatsapp",
    "wpp": "whatsapp",
    "pls": "please",
    "plz": "please",
    "u": "you",
    "ur": "your",
    "r": "are",
    "thx": "thanks",
    "thnx": "thanks",
    "thanx": "thanks",
    "tnx": "thanks",
    "ty": "thank you",
    "tmr": "tomorrow",
    "tmrw": "tomorrow",
    "2moro": "tomorrow",
    "im": "i am",
    "ive": "i have",
    "dont": "do not",
    "doesnt": "does not",
    "didnt": "did not",
    "cant": "can not",
    "cannot": "can not",
    "wont": "will not",
    "isnt": "is not",
    "wasnt": "was not",
    "aint": "is not",
    "wanna": "want to",
    "gonna": "going to",
    "whats": "what is",
    "thats": "that is",
}
# A lone "k" or "kk" is "ok", not "que".
_WHOLE_MESSAGE = {"k": "ok", "kk": "ok", "okk": "ok", "oki": "ok", "okis": "ok"}
_EMOJI = {"👍": " ok ", "👌": " ok ", "🙏": " please "}
_REPEATS = re.compile(r"([a-z])\1{2,}")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NOT_WORD = re.compile(r"[^a-z0-9$?]+")
_QUESTION = re.compile(r"[?¿]+")


def word_set(words: str) -> frozenset[str]:
    """A set of words written as one space-separated string, which reads better than a long list literal."""
    return frozenset(words.split())


def fold(text: str) -> str:
    """Strip accents (NFKD, combining marks dropped) but keep case: 'Mañana' -> 'Manana'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def normalize(text: str) -> str:
    """Canonical form for classifying and keyword rules: lowercase, no accents, letters repeated 3+ times
    collapsed ('holaaa' -> 'hola'), SMS shorthand expanded, every number as '0', '?' kept as a token."""
    for emoji, replacement in _EMOJI.items():
        text = text.replace(emoji, replacement)
    lowered = fold(text).lower().replace("'", "").replace("’", "")
    lowered = _REPEATS.sub(r"\1", lowered)
    lowered = _NUMBER.sub(" 0 ", lowered)
    lowered = _QUESTION.sub(" ? ", lowered)
    tokens = _NOT_WORD.sub(" ", lowered).split()
    if len(tokens) == 1 and tokens[0] in _WHOLE_MESSAGE:
        return _WHOLE_MESSAGE[tokens[0]]
    return " ".join(_SHORTHAND.get(token, token) for token in tokens)


_ES_WORDS = word_set(
    "que de el la los las un una y en si por para con mi mis te le lo es esta estoy ya pero como cuanto cuando "
    "donde hola gracias pagar pago pague debo deuda cuota cuotas mas quiero puedo tengo hoy manana dia plata "
    "favor nada bueno dale vale numero persona ustedes usted soy del al se su sus nos porque tambien muy eso "
    "esto ese esa sin ni hasta hacer tiene hay dinero mes semana viernes lunes buenas buenos dias tardes noches "
    "gracias claro acuerdo nunca mensajes escriban dejen baja sipo po che wena dale altiro ahorita pues nel "
    "cancelar persona ejecutivo humano equivocado fallecio quiebra cuanto cuando hola ola buenas"
)
_EN_WORDS = word_set(
    "the to i you your my is it this that and of in on for with be can will not do am have pay paid owe debt "
    "hi hello thanks thank please yes what how when where who why are was want need today tomorrow money "
    "number person just already anymore month week friday monday get got would could should about our "
    "there their they he she his her them anything nothing account bill texting good morning evening night "
    "sounds agreed yep yeah yup nope nah way deal sure okay fine great these those sending send messages message "
    "quit cancel unsubscribe opt out representative agent human lol hey hiya thx ty wrong died passed all"
)
_SPANISH_MARKS = re.compile(r"[ñáéíóú¿¡]", re.IGNORECASE)


def detect_language(text: str, default: str = DEFAULT_LANGUAGE) -> str:
    """'es' or 'en' by counting common words of each language; Spanish-only characters count double.
    Ties (e.g. 'ok', 'STOP') go to `default`."""
    tokens = normalize(text).split()
    spanish = sum(token in _ES_WORDS for token in tokens) + 2 * len(_SPANISH_MARKS.findall(text))
    english = sum(token in _EN_WORDS for token in tokens)
    if spanish == english:
        return default
    return "es" if spanish > english else "en"


def language_of(locale: str | None) -> str | None:
    """'es-CL' -> 'es'; languages other than es/en fall back to the default; None stays None."""
    if locale is None:
        return None
    language = locale.replace("_", "-").split("-")[0].lower()
    return language if language in LANGUAGES else DEFAULT_LANGUAGE
