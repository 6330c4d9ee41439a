"""The LLM understanding path with langchain's fake chat models: mapping, validation, fallback, redaction, wiring."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ConfigDict, Field

from bot.config import load_settings
from bot.domain import Entities, Intent, Money
from bot.nlu import Understanding
from bot.nlu.llm import LLMNLU, LLMMetrics, build_prompt, redact
from bot.nlu.offline import OfflineNLU
from bot.services import bootstrap
from bot.store import Database

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # a Wednesday
TZ = "America/Santiago"


class RecordingChatModel(GenericFakeChatModel):
    """GenericFakeChatModel that keeps every prompt it was given."""

    prompts: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.prompts.append(messages)
        return super()._generate(messages, stop, run_manager, **kwargs)


class HangingChatModel(GenericFakeChatModel):
    """Answers only once the test releases it: a provider that does not reply in time."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    release: threading.Event

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.release.wait(10)
        return super()._generate(messages, stop, run_manager, **kwargs)


class RaisingChatModel(GenericFakeChatModel):
    error: BaseException

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise self.error


@pytest.fixture(scope="module")
def offline() -> OfflineNLU:
    return OfflineNLU()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def recording(*answers: str | AIMessage) -> RecordingChatModel:
    return RecordingChatModel(messages=iter(answers))


def llm_nlu(model: Any, offline: OfflineNLU, registry: CollectorRegistry, timeout: float = 2.0) -> LLMNLU:
    return LLMNLU(model, offline, LLMMetrics(registry), timeout=timeout)


def understand(nlu: Any, text: str, locale: str | None = "es", currency: str = "CLP") -> Understanding:
    return nlu.understand(text, locale=locale, timezone=TZ, currency=currency, now=NOW)


def fallbacks(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value("cobrabot_llm_fallbacks_total", {"purpose": "understand", "reason": reason})
    return value or 0.0


def test_spanish_answer_becomes_the_offline_types(offline: OfflineNLU, registry: CollectorRegistry) -> None:
    answer = '{"intent": "promise_to_pay", "confidence": 0.93, "amounts": ["50000 CLP"], "dates": ["2026-11-27"]}'
    nlu = llm_nlu(recording(answer), offline, registry)

    result = understand(nlu, "el viernes te pago 50 lucas")

    assert result == Understanding(
        text="el viernes te pago 50 lucas",
        intent=Intent.PROMISE_TO_PAY,
        confidence=0.93,
        entities=Entities(dates=(date(2026, 11, 27),), amounts=(Money(50000, "CLP"),)),
        locale="es",
    )
    assert fallbacks(registry, "malformed") == 0


def test_english_answer_with_installments_and_a_fenced_json(offline: OfflineNLU, registry: CollectorRegistry) -> None:
    answer = '```json\n{"intent": "counter_offer", "confidence": 0.8, "amounts": ["50.00 USD"], "installments": 6}\n```'
    nlu = llm_nlu(recording(answer), offline, registry)

    result = understand(nlu, "how about $50 a month for 6 months", locale=None, currency="USD")

    assert result.intent is Intent.COUNTER_OFFER
    assert result.entities == Entities(amounts=(Money(5000, "USD"),), installments=6)
    assert result.locale == "en"


def test_a_bare_amount_takes_the_debt_currency_and_slang_is_parsed_like_offline(
    offline: OfflineNLU, registry: CollectorRegistry
) -> None:
    answer = '{"intent": "counter_offer", "confidence": 0.7, "amounts": ["20000", "20 lucas"]}'
    result = understand(llm_nlu(recording(answer), offline, registry), "puedo 20 lucas al mes")

    assert result.entities.amounts == (Money(20000, "CLP"), Money(20000, "CLP"))


def test_the_payment_reference_comes_from_the_offline_extractor(
    offline: OfflineNLU, registry: CollectorRegistry
) -> None:
    answer = '{"intent": "already_paid", "confidence": 0.9}'
    result = understand(llm_nlu(recording(answer), offline, registry), "ya pagué, comprobante 884512")

    assert result.intent is Intent.ALREADY_PAID
    assert result.entities.reference == "884512"


def test_token_use_and_latency_are_recorded(offline: OfflineNLU, registry: CollectorRegistry) -> None:
    usage = {"input_tokens": 310, "output_tokens": 24, "total_tokens": 334}
    answer = AIMessage(content='{"intent": "balance", "confidence": 0.9}', usage_metadata=usage)
    understand(llm_nlu(recording(answer), offline, registry), "cuanto debo?")

    assert registry.get_sample_value("cobrabot_llm_tokens_total", {"purpose": "understand", "kind": "input"}) == 310
    assert registry.get_sample_value("cobrabot_llm_tokens_total", {"purpose": "understand", "kind": "output"}) == 24
    assert registry.get_sample_value("cobrabot_llm_request_seconds_count", {"purpose": "understand"}) == 1


@pytest.mark.parametrize(
    "answer",
    [
        "I think the debtor wants to pay",
        '{"intent": "promise_to_pay", "confidence": 0.9',
        '{"intent": "make_coffee", "confidence": 0.9}',
        '{"intent": "accept", "confidence": 3}',
        '{"intent": "accept"}',
        '{"intent": "counter_offer", "confidence": 0.8, "amounts": ["lots of money"]}',
        '{"intent": "promise_to_pay", "confidence": 0.8, "dates": ["2026-02-30"]}',
        '{"intent": "promise_to_pay", "confidence": 0.8, "dates": ["1999-01-01"]}',
        '{"intent": "request_plan", "confidence": 0.8, "installments": 0}',
    ],
)
def test_malformed_answers_fall_back_to_offline(offline: OfflineNLU, registry: CollectorRegistry, answer: str) -> None:
    text = "el viernes te pago 50 lucas"
    result = understand(llm_nlu(recording(answer), offline, registry), text)

    assert result == understand(offline, text)
    assert fallbacks(registry, "malformed") == 1


def test_a_model_that_does_not_answer_in_time_falls_back(offline: OfflineNLU, registry: CollectorRegistry) -> None:
    release = threading.Event()
    model = HangingChatModel(messages=iter(['{"intent": "accept", "confidence": 0.9}']), release=release)
    try:
        result = understand(llm_nlu(model, offline, registry, timeout=0.05), "quiero pagar ahora")
    finally:
        release.set()

    assert result == understand(offline, "quiero pagar ahora")
    assert fallbacks(registry, "timeout") == 1
    assert registry.get_sample_value("cobrabot_llm_request_seconds_count", {"purpose": "understand"}) == 1


@pytest.mark.parametrize(
    ("error", "reason"),
    [(TimeoutError("read timed out"), "timeout"), (ConnectionError("refused"), "error"), (ValueError("x"), "error")],
)
def test_exceptions_fall_back_to_offline_and_are_counted_by_reason(
    offline: OfflineNLU,
    registry: CollectorRegistry,
    error: BaseException,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = RaisingChatModel(messages=iter([]), error=error)
    text = "mi fono es +56 9 8765 4321, cuanto debo"

    result = understand(llm_nlu(model, offline, registry), text)

    assert result == understand(offline, text)
    assert fallbacks(registry, reason) == 1
    assert f"reason={reason}" in caplog.text
    assert "8765" not in caplog.text and "debo" not in caplog.text  # ids only, never the message


def test_legally_critical_keywords_never_reach_the_model(offline: OfflineNLU, registry: CollectorRegistry) -> None:
    model = recording('{"intent": "greeting", "confidence": 0.9}')
    result = understand(llm_nlu(model, offline, registry), "STOP", locale="en")

    assert result.intent is Intent.OPT_OUT
    assert model.prompts == []


def test_the_prompt_holds_no_phone_national_id_or_email(offline: OfflineNLU, registry: CollectorRegistry) -> None:
    model = recording('{"intent": "promise_to_pay", "confidence": 0.9, "dates": ["2026-11-27"]}')
    text = "soy 12.345.678-9, llámame al +56 9 8765 4321 o a juan.perez@correo.cl, pago el viernes $120.000"

    understand(llm_nlu(model, offline, registry), text)

    sent = "\n".join(str(message.content) for message in model.prompts[0])
    for secret in ("12.345.678", "345678", "8765", "4321", "juan.perez", "correo.cl"):
        assert secret not in sent
    assert "[id]" in sent and "[number]" in sent and "[email]" in sent
    assert "$120.000" in sent and "pago el viernes" in sent
    assert "2026-11-25" in sent  # today in the debtor's zone, for resolving "el viernes"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mi rut es 12.345.678-9", "mi rut es [id]"),
        ("RUT 123456789", "RUT [id]"),
        ("DNI: 30123456", "DNI: [id]"),
        ("my ssn is 123-45-6789", "my ssn is [id]"),
        ("call me at (555) 123-4567", "call me at [number]"),
        ("wsp +56987654321", "wsp [number]"),
        ("write to ana@example.com", "write to [email]"),
        ("te pago $1.200.000 el 15-12-2026", "te pago $1.200.000 el 15-12-2026"),
        ("6 cuotas de 50000", "6 cuotas de 50000"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_build_prompt_lists_every_intent_and_the_language() -> None:
    system, human = build_prompt("hola", language="en", currency="USD", today=date(2026, 11, 25))

    assert all(intent.value in str(system.content) for intent in Intent)
    assert '"en"' in str(system.content) and "USD" in str(system.content)
    assert human.content == "hola"


def test_fake_list_chat_model_works_too(offline: OfflineNLU, registry: CollectorRegistry) -> None:
    model = FakeListChatModel(responses=['{"intent": "hardship", "confidence": 0.75}'])
    assert understand(llm_nlu(model, offline, registry), "quedé sin pega este mes").intent is Intent.HARDSHIP


def test_the_model_is_built_lazily_on_first_message(offline: OfflineNLU, registry: CollectorRegistry) -> None:
    built: list[int] = []

    def factory() -> FakeListChatModel:
        built.append(1)
        return FakeListChatModel(responses=['{"intent": "thanks", "confidence": 0.9}'])

    nlu = llm_nlu(factory, offline, registry)
    assert built == []
    assert understand(nlu, "muchas gracias po").intent is Intent.THANKS
    assert built == [1]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr("socket.create_connection", refuse)
    yield


def test_without_a_key_bootstrap_uses_the_offline_nlu(database_url: str, db: Database) -> None:
    settings = load_settings(database_url=database_url, openai_api_key=None)
    services = bootstrap(settings, database=db)

    assert isinstance(services.conversations.engine.nlu, OfflineNLU)
    assert b"cobrabot_llm_fallbacks_total" not in generate_latest(services.metrics)


def test_a_key_alone_switches_the_llm_on_without_touching_the_network(
    database_url: str, db: Database, no_network: None
) -> None:
    settings = load_settings(database_url=database_url, openai_api_key="sk-test", llm_timeout_seconds=2)
    services = bootstrap(settings, database=db)

    nlu = services.conversations.engine.nlu
    assert isinstance(nlu, LLMNLU)
    assert isinstance(nlu.fallback, OfflineNLU)
    assert nlu.caller.timeout == 2
    exposed = generate_latest(services.metrics)
    assert b"cobrabot_llm_fallbacks_total" in exposed and b"cobrabot_llm_request_seconds" in exposed
