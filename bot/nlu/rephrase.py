"""Optional rephrasing of a rendered reply by the LLM (COBRABOT_LLM_REPHRASE, off by default).

The engine decides every fact; the template renders them. The model may only change the wording: a validator
rejects any rephrasing that brings a number, amount, currency, date word, URL or promise that the rendered
template did not contain, and then the template's own text is sent. Failures count in
`cobrabot_llm_fallbacks_total{purpose="rephrase"}`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from bot.nlu import fold, word_set
from bot.nlu.llm import DEFAULT_TIMEOUT_SECONDS, ChatCaller, LLMFailure, LLMMetrics

logger = logging.getLogger(__name__)

MAX_GROWTH = 1.5  # a rephrasing may be at most this much longer than the template (plus a little slack)

_NUMBER = re.compile(r"\d(?:[\d.,]*\d)?")
_URL = re.compile(r"(?:https?://|www\.)\S+|\b[\w-]+(?:\.[\w-]+)*\.(?:com|cl|mx|ar|co|pe|net|org|io|app|link|ly)\b")
_CURRENCY_MARK = re.compile(r"[$€£¥]|\b(?:clp|usd|mxn|ars|cop|pen|eur|pesos?|dolares|dollars?|lucas|bucks)\b")
_WORD = re.compile(r"[a-z]+")
_NUMBER_WORDS = word_set(
    """
    dos tres cuatro cinco seis siete ocho nueve diez doce quince veinte treinta cuarenta cincuenta sesenta
    setenta ochenta noventa cien ciento mil millon millones doscientos trescientos quinientos
    two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty fifty sixty seventy
    eighty ninety hundred thousand million
    """
)
_DATE_WORDS = word_set(
    """
    hoy manana ayer pasado lunes martes miercoles jueves viernes sabado domingo semana mes quincena
    enero febrero marzo abril mayo junio julio agosto septiembre setiembre octubre noviembre diciembre
    today tomorrow yesterday tonight monday tuesday wednesday thursday friday saturday sunday week month weekend
    january february march april june july august september october november december
    """
)
# Promises the engine never decided: discounts, waivers, guarantees. Matched on folded, lowercase text.
_COMMITMENTS = re.compile(
    r"\b(?:prometo|prometemos|promesa|garantiz\w*|asegur(?:o|amos)|nos comprometemos|me comprometo|condon\w*"
    r"|descuento\w*|rebaja\w*|sin interes\w*|perdon(?:ar|amos|aremos)|anular\w*|eliminar la deuda"
    r"|promise\w*|guarantee\w*|we commit|i commit|waive\w*|forgiv\w*|discount\w*|interest[- ]free|no interest"
    r"|write[- ]off|cancel the debt|erase)\b"
)


def rejection_reason(original: str, rephrased: str) -> str | None:
    """Why `rephrased` may not replace `original` (a rendered template), or None when it only changed wording."""
    source, candidate = _folded(original), _folded(rephrased)
    if not candidate.strip():
        return "empty"
    if len(rephrased) > MAX_GROWTH * len(original) + 40:
        return "too_long"
    if not _numbers(candidate) <= _numbers(source):
        return "number"
    if not set(_CURRENCY_MARK.findall(candidate)) <= set(_CURRENCY_MARK.findall(source)):
        return "amount"
    if not set(_URL.findall(candidate)) <= set(_URL.findall(source)):
        return "url"
    words, source_words = set(_WORD.findall(candidate)), set(_WORD.findall(source))
    if not (words & _NUMBER_WORDS) <= source_words:
        return "number"
    if not (words & _DATE_WORDS) <= source_words:
        return "date"
    if not set(_COMMITMENTS.findall(candidate)) <= set(_COMMITMENTS.findall(source)):
        return "commitment"
    return None


def _folded(text: str) -> str:
    return fold(text).lower()


def _numbers(text: str) -> set[str]:
    """Every number with its separators removed: "$120.000", "120,000" and "120 000" are all "120000"."""
    return {re.sub(r"\D", "", found) for found in _NUMBER.findall(text)}


_INSTRUCTIONS = """Rewrite the message a debt collection assistant is about to send so it reads warm, clear and \
respectful, in the same language ({language}). Keep every fact exactly: do not add, remove or change any number, \
amount, date, link or condition, and do not promise anything the message does not say. Answer with the rewritten \
message only."""


class Rephraser:
    """Rewords rendered replies with a chat model; the template text wins whenever the validator objects."""

    def __init__(
        self,
        model: BaseChatModel | Callable[[], BaseChatModel],
        metrics: LLMMetrics,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.caller = ChatCaller(model, metrics, purpose="rephrase", timeout=timeout)
        self.metrics = metrics

    def rephrase(self, text: str, language: str, *, message_id: int | None = None) -> str:
        """The reworded `text`, or `text` itself when the model fails or the rewording adds a fact."""
        messages = [SystemMessage(_INSTRUCTIONS.format(language=language)), HumanMessage(text)]
        try:
            candidate = self.caller.call(messages).strip()
        except LLMFailure as failure:
            return self._fallback(failure.reason, message_id, text)
        reason = rejection_reason(text, candidate)
        if reason is not None:
            return self._fallback(f"rejected_{reason}", message_id, text)
        return candidate

    def _fallback(self, reason: str, message_id: int | None, text: str) -> str:
        self.metrics.fallbacks.labels("rephrase", reason).inc()
        logger.warning("llm rephrase fallback message=%s reason=%s", message_id, reason)
        return text
