"""Optional LLM rephrasing: the validator keeps the engine's facts; anything new sends the template text instead."""

from __future__ import annotations

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from prometheus_client import CollectorRegistry

from bot.config import load_settings
from bot.nlu.llm import LLMMetrics
from bot.nlu.rephrase import Rephraser, rejection_reason

PROMISE_ES = (
    "Listo, Ana: registré su compromiso de pagar $120.000 el 27 de noviembre de 2026. "
    "Le recordaré un día antes. ¡Gracias!"
)
PROMISE_EN = "Done, Ana: I recorded your promise to pay $120.00 on November 27, 2026. I will remind you the day before."
LINK_ES = "Aquí tiene su enlace de pago por $45.990: https://pay.example.com/p/abc123"


@pytest.mark.parametrize(
    ("original", "rephrased"),
    [
        (
            PROMISE_ES,
            "¡Perfecto, Ana! Quedó anotado su compromiso: $120.000 el 27 de noviembre de 2026. Le aviso un día antes.",
        ),
        (
            PROMISE_EN,
            "Thanks, Ana! Your promise to pay $120.00 on November 27, 2026 is recorded; I'll remind you before.",
        ),
        (LINK_ES, "Este es su enlace para pagar $45.990: https://pay.example.com/p/abc123"),
        (PROMISE_ES, "Listo Ana, registré su compromiso de pagar $120,000 el 27 de noviembre de 2026."),  # same number
    ],
)
def test_rewording_that_keeps_every_fact_is_accepted(original: str, rephrased: str) -> None:
    assert rejection_reason(original, rephrased) is None


@pytest.mark.parametrize(
    ("original", "rephrased", "reason"),
    [
        (PROMISE_ES, "Listo, Ana: registré su compromiso de pagar $100.000 el 27 de noviembre de 2026.", "number"),
        (PROMISE_EN, "Done, Ana: your promise to pay $120.00 on November 28, 2026 is recorded.", "number"),
        (PROMISE_ES, "Listo, Ana: registré su compromiso de pagar $120.000 el viernes 27 de noviembre.", "date"),
        (PROMISE_EN, "Done, Ana: pay $120.00 on November 27, 2026, or tomorrow if easier.", "date"),
        (PROMISE_ES, "Listo, Ana: pague $120.000 el 27 de noviembre de 2026 y le damos cinco días más.", "number"),
        ("Su saldo está al día.", "Su saldo está al día, son 0 pesos.", "number"),
        ("Le ayudo con su pago.", "Le ayudo con su pago en pesos chilenos.", "amount"),
        (LINK_ES, "Pague $45.990 aquí: https://evil.example.net/p/abc123", "url"),
        (LINK_ES, "Pague $45.990 en https://pay.example.com/p/abc123 o en www.otro.cl", "url"),
        (PROMISE_ES, "Listo, Ana: $120.000 el 27 de noviembre de 2026, y le garantizamos un descuento.", "commitment"),
        (PROMISE_EN, "Done: $120.00 on November 27, 2026, and we will waive the late fees.", "commitment"),
        (PROMISE_EN, "", "empty"),
        ("Hola.", "Hola, " + "le escribo para saludarle muy cordialmente " * 3, "too_long"),
    ],
)
def test_rephrasing_that_adds_a_fact_is_rejected(original: str, rephrased: str, reason: str) -> None:
    assert rejection_reason(original, rephrased) == reason


def rephraser(answer: str, registry: CollectorRegistry) -> Rephraser:
    return Rephraser(FakeListChatModel(responses=[answer]), LLMMetrics(registry), timeout=2)


def fallbacks(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value("cobrabot_llm_fallbacks_total", {"purpose": "rephrase", "reason": reason})
    return value or 0.0


def test_an_accepted_rephrasing_is_sent() -> None:
    registry = CollectorRegistry()
    reworded = "Este es su enlace para pagar $45.990: https://pay.example.com/p/abc123"

    assert rephraser(reworded, registry).rephrase(LINK_ES, "es") == reworded
    assert registry.get_sample_value("cobrabot_llm_request_seconds_count", {"purpose": "rephrase"}) == 1


def test_a_rephrasing_that_adds_an_amount_falls_back_to_the_template_text() -> None:
    registry = CollectorRegistry()
    added = "Aquí tiene su enlace por $45.990 (o $40.000 si paga hoy): https://pay.example.com/p/abc123"

    assert rephraser(added, registry).rephrase(LINK_ES, "es", message_id=7) == LINK_ES
    assert fallbacks(registry, "rejected_number") == 1


def test_a_rephrasing_that_adds_a_date_falls_back_to_the_template_text() -> None:
    registry = CollectorRegistry()
    added = "Ana, registré su compromiso de pagar $120.00 on November 27, 2026, due tomorrow."

    assert rephraser(added, registry).rephrase(PROMISE_EN, "en") == PROMISE_EN
    assert fallbacks(registry, "rejected_date") == 1


def test_a_failing_model_falls_back_to_the_template_text() -> None:
    registry = CollectorRegistry()

    class Broken(FakeListChatModel):
        def _call(self, *args: object, **kwargs: object) -> str:
            raise ConnectionError("provider down")

    phraser = Rephraser(Broken(responses=["unused"]), LLMMetrics(registry), timeout=2)

    assert phraser.rephrase(PROMISE_ES, "es") == PROMISE_ES
    assert fallbacks(registry, "error") == 1


def test_rephrasing_is_off_by_default() -> None:
    assert load_settings(database_url="sqlite://").llm_rephrase is False
