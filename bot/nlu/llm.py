"""LLM understanding: a langchain chat model reads the debtor's message and answers in JSON, which is validated and
converted into the very `Understanding` the offline NLU returns. Used only when OPENAI_API_KEY is configured.

The model sees the message with ids, phone numbers and emails redacted, the language, today's date and the list
of intents; never the debtor's name, balance or anything else from the database. Any timeout, exception or
malformed answer falls back to the offline NLU, counted in `cobrabot_llm_fallbacks_total{reason}`.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.config import Settings
from bot.domain import Entities, Intent, Money
from bot.nlu import Understander, Understanding, detect_language, language_of, normalize
from bot.nlu.entities import extract_entities
from bot.nlu.keywords import match_rule

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 4.0
# Dates the model resolves must be near today: a promise is days or weeks ahead, a payment days or weeks ago.
_OLDEST_DATE = timedelta(days=366)
_LATEST_DATE = timedelta(days=2 * 366)

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_RUT = re.compile(r"\b\d{1,2}\.?\d{3}\.?\d{3}-[\dkK]\b")
_ID_AFTER_WORD = re.compile(
    r"\b(rut|run|dni|c[eé]dula|cc|curp|ine|documento|ssn|id|pasaporte|passport)"
    r"(\W*(?:(?:es|is|number|n[uú]mero|nro|no)\W+)?)\d[\d.\-]*",
    re.IGNORECASE,
)
# Eight or more digits, maybe split by spaces, dots, dashes or parentheses: phone, account and id numbers.
_LONG_NUMBER = re.compile(r"\+?\(?\d(?:[\s.\-()]{0,2}\d){7,}")
# Amounts with thousands separators ("1.200.000", "1,200,000") are not ids; keep them readable for the model.
_GROUPED_AMOUNT = re.compile(r"^\d{1,3}(?:([.,])\d{3})(?:\1\d{3})*$")
_DATE_LIKE = re.compile(r"^(?:\d{1,2}([.\-])\d{1,2}\1\d{4}|\d{4}-\d{2}-\d{2})$")


def redact(text: str) -> str:
    """The message as the model may see it: emails, national ids (RUT, 'DNI 123...') and phone-like digit runs
    replaced by placeholders. Amounts with thousands separators ("$1.200.000") and dates ("15-12-2026") are kept."""
    text = _EMAIL.sub("[email]", text)
    text = _RUT.sub("[id]", text)
    text = _ID_AFTER_WORD.sub(lambda match: f"{match.group(1)}{match.group(2)}[id]", text)
    return _LONG_NUMBER.sub(_redact_long_number, text)


def _redact_long_number(match: re.Match[str]) -> str:
    digits = match.group()
    return digits if _GROUPED_AMOUNT.match(digits) or _DATE_LIKE.match(digits) else "[number]"


class LLMMetrics:
    """The LLM's counters and latency histogram, registered once per Services registry (shown at /metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.fallbacks = Counter(
            "cobrabot_llm_fallbacks_total",
            "LLM answers replaced by the offline path, by purpose and reason",
            ["purpose", "reason"],
            registry=registry,
        )
        self.tokens = Counter(
            "cobrabot_llm_tokens_total",
            "Tokens used by LLM calls (usage_metadata)",
            ["purpose", "kind"],
            registry=registry,
        )
        self.latency = Histogram(
            "cobrabot_llm_request_seconds",
            "LLM call latency, timeouts included",
            ["purpose"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8),
            registry=registry,
        )

    def record_usage(self, purpose: str, message: BaseMessage) -> None:
        usage = getattr(message, "usage_metadata", None) or {}
        for kind in ("input_tokens", "output_tokens"):
            count = usage.get(kind)
            if isinstance(count, int) and count > 0:
                self.tokens.labels(purpose, kind.removesuffix("_tokens")).inc(count)


class LLMFailure(Exception):
    """Why an LLM call could not be used; `reason` labels the fallback metric."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChatCaller:
    """Calls a chat model with a hard deadline, recording latency and tokens. The model is built on first use, so
    configuring a key costs nothing until a message arrives (and tests inject a fake model)."""

    def __init__(
        self,
        model: BaseChatModel | Callable[[], BaseChatModel],
        metrics: LLMMetrics,
        *,
        purpose: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._model = model if isinstance(model, BaseChatModel) else None
        self._factory = None if isinstance(model, BaseChatModel) else model
        self.metrics = metrics
        self.purpose = purpose
        self.timeout = timeout
        # Calls run on worker threads so a hung connection is abandoned at the deadline, not waited for.
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"llm-{purpose}")

    @property
    def model(self) -> BaseChatModel:
        if self._model is None:
            assert self._factory is not None
            self._model = self._factory()
        return self._model

    def call(self, messages: list[BaseMessage]) -> str:
        """The model's text answer; raises LLMFailure('timeout' | 'error' | 'malformed')."""
        started = time.perf_counter()
        try:
            future = self._executor.submit(self.model.invoke, messages)
            answer = future.result(timeout=self.timeout)
        except (FutureTimeout, TimeoutError) as exc:
            raise LLMFailure("timeout") from exc
        except Exception as exc:  # any provider or client failure: the offline path answers instead
            raise LLMFailure("timeout" if "timeout" in type(exc).__name__.lower() else "error") from exc
        finally:
            self.metrics.latency.labels(self.purpose).observe(time.perf_counter() - started)
        self.metrics.record_usage(self.purpose, answer)
        if not isinstance(answer.content, str):
            raise LLMFailure("malformed")
        return answer.content


def openai_chat_model(
    api_key: str, model: str, timeout: float, *, json_mode: bool = True
) -> Callable[[], BaseChatModel]:
    """A factory for the production model: ChatOpenAI (JSON mode for reading messages, plain text for
    rephrasing), no retries (the offline path and the template text are the retry)."""

    def build() -> BaseChatModel:
        from langchain_openai import ChatOpenAI  # imported only when an LLM is configured

        return ChatOpenAI(
            model=model,
            api_key=api_key,  # type: ignore[arg-type]
            timeout=timeout,
            max_retries=0,
            temperature=0,
            model_kwargs={"response_format": {"type": "json_object"}} if json_mode else {},
        )

    return build


class LLMReading(BaseModel):
    """The JSON the model must answer with. Amounts are the debtor's own words; dates are resolved by the model."""

    model_config = ConfigDict(extra="ignore")

    intent: Intent
    confidence: float = Field(ge=0.0, le=1.0)
    amounts: list[str] = Field(default_factory=list, max_length=5)
    dates: list[date] = Field(default_factory=list, max_length=5)
    installments: int | None = Field(None, ge=1, le=120)


_INTENT_NOTES = {
    Intent.PAY_NOW: "wants to pay now or asks for the payment link",
    Intent.BALANCE: "asks how much they owe or when it is due",
    Intent.PROMISE_TO_PAY: "says they will pay on a date",
    Intent.REQUEST_PLAN: "asks for installments, a plan or a discount",
    Intent.ACCEPT: "says yes to what was offered",
    Intent.REJECT: "says no to what was offered",
    Intent.COUNTER_OFFER: "proposes a different amount or number of installments",
    Intent.ALREADY_PAID: "says they already paid",
    Intent.DISPUTE: "does not recognise or disputes the debt",
    Intent.HUMAN: "asks for a person",
    Intent.OPT_OUT: "asks us to stop contacting them",
    Intent.WRONG_PERSON: "is not the debtor / wrong number",
    Intent.HARDSHIP: "cannot pay: job loss, illness, no money",
    Intent.DECEASED: "the debtor died",
    Intent.BANKRUPTCY: "bankruptcy or insolvency proceedings",
    Intent.FAQ: "a general question about the company, payment methods, receipts, credit reports",
    Intent.GREETING: "a greeting only",
    Intent.THANKS: "thanks only",
    Intent.UNKNOWN: "none of the above or not understandable",
}

_INSTRUCTIONS = """You classify one message a debtor sent to a debt collection assistant.
Answer with one JSON object and nothing else:
{{"intent": <one of the intents below>, "confidence": <0..1>, "amounts": [<each amount of money the debtor \
means, in digits with a dot for decimals and its ISO currency code, e.g. "50000 CLP" for "50 lucas", "40.50 USD">], \
"dates": [<each date mentioned, resolved to YYYY-MM-DD>], "installments": <number of installments mentioned, or null>}}
Today is {today} ({weekday}) in the debtor's time zone. The message is in "{language}"; the debt is in {currency}.
Placeholders like [id], [number] or [email] hide personal data: ignore them.
Intents:
{intents}"""


def build_prompt(text: str, *, language: str, currency: str, today: date) -> list[BaseMessage]:
    """The messages sent to the model: instructions (no personal data) and the redacted message."""
    intents = "\n".join(f"- {intent.value}: {note}" for intent, note in _INTENT_NOTES.items())
    system = _INSTRUCTIONS.format(
        today=today.isoformat(), weekday=today.strftime("%A"), language=language, currency=currency, intents=intents
    )
    return [SystemMessage(system), HumanMessage(redact(text))]


def parse_reading(content: str) -> LLMReading:
    """The model's answer as an LLMReading; tolerates a ```json fence around the object. Raises LLMFailure."""
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end < start:
        raise LLMFailure("malformed")
    try:
        return LLMReading.model_validate(json.loads(content[start : end + 1]))
    except (ValueError, ValidationError) as exc:  # JSONDecodeError is a ValueError
        raise LLMFailure("malformed") from exc


class LLMNLU:
    """The `Understander` backed by a chat model, with the offline NLU as keyword safety net and fallback."""

    def __init__(
        self,
        model: BaseChatModel | Callable[[], BaseChatModel],
        fallback: Understander,
        metrics: LLMMetrics,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.caller = ChatCaller(model, metrics, purpose="understand", timeout=timeout)
        self.fallback = fallback
        self.metrics = metrics

    def understand(
        self, text: str, *, locale: str | None, timezone: str, currency: str, now: datetime
    ) -> Understanding:
        language = language_of(locale) or detect_language(text)
        offline = self._offline(text, language, timezone, currency, now)
        normalized = normalize(text)
        if not normalized.replace("?", "").strip() or match_rule(normalized) is not None:
            return offline  # empty text, or a legally critical keyword: never left to a model's judgement
        today = _today(now, timezone)
        request_id = uuid.uuid4().hex[:12]
        try:
            content = self.caller.call(build_prompt(text, language=language, currency=currency, today=today))
            reading = parse_reading(content)
            entities = _entities(reading, offline.entities, language, currency, today)
        except LLMFailure as failure:
            self.metrics.fallbacks.labels("understand", failure.reason).inc()
            cause = type(failure.__cause__).__name__ if failure.__cause__ else "-"
            logger.warning("llm nlu fallback request=%s reason=%s cause=%s", request_id, failure.reason, cause)
            return offline
        return Understanding(
            text=text, intent=reading.intent, confidence=reading.confidence, entities=entities, locale=language
        )

    def _offline(self, text: str, language: str, timezone: str, currency: str, now: datetime) -> Understanding:
        return self.fallback.understand(text, locale=language, timezone=timezone, currency=currency, now=now)


def _today(now: datetime, timezone: str) -> date:
    aware = now if now.tzinfo else now.replace(tzinfo=ZoneInfo("UTC"))
    return aware.astimezone(ZoneInfo(timezone)).date()


def _entities(reading: LLMReading, offline: Entities, language: str, currency: str, today: date) -> Entities:
    """The model's entities in the offline types, each validated; the payment reference always comes from the
    offline extractor, since long digit runs are redacted before the model sees them."""
    for day in reading.dates:
        if not today - _OLDEST_DATE <= day <= today + _LATEST_DATE:
            raise LLMFailure("malformed")
    return Entities(
        dates=tuple(dict.fromkeys(reading.dates)),
        amounts=tuple(_amount(written, language, currency) for written in reading.amounts),
        installments=reading.installments,
        reference=offline.reference,
    )


def _amount(written: str, language: str, currency: str) -> Money:
    """One amount as the debtor wrote it, parsed by the offline entity parser (so '50 lucas' means the same)."""
    noon = datetime(2000, 1, 1, 12, tzinfo=ZoneInfo("UTC"))  # dates are not read from an amount; any day will do
    for candidate in (written, f"{written} {currency}"):  # a bare "50000" needs the debt's currency to be money
        amounts = extract_entities(candidate, language=language, timezone="UTC", currency=currency, now=noon).amounts
        if amounts:
            break
    if len(amounts) != 1 or amounts[0].minor <= 0:
        raise LLMFailure("malformed")
    return amounts[0]


def llm_understander(settings: Settings, offline: Understander, metrics: LLMMetrics) -> LLMNLU:
    """The LLM path the settings configure (ChatOpenAI built on first use), with `offline` as its fallback."""
    if settings.openai_api_key is None:
        raise ValueError("OPENAI_API_KEY is not set")
    timeout = settings.llm_timeout_seconds
    logger.info("nlu: llm model=%s timeout=%ss, offline fallback", settings.llm_model, timeout)
    model = openai_chat_model(settings.openai_api_key, settings.llm_model, timeout)
    return LLMNLU(model, offline, metrics, timeout=timeout)
