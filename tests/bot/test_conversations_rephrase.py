"""COBRABOT_LLM_REPHRASE wired into the inbound path: only verified conversations, only conversational texts,
and a rewording that adds a fact is replaced by the template text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from bot.config import Settings
from bot.conversations import REPHRASABLE
from bot.domain import InboundMessage
from bot.models import Debtor, Message
from bot.nlu.llm import LLMMetrics
from bot.nlu.rephrase import Rephraser
from bot.services import Services, bootstrap
from bot.store import Database
from tests.conftest import FixedClock


@dataclass
class SpyRephraser:
    calls: list[str] = field(default_factory=list)

    def rephrase(self, text: str, language: str, *, message_id: int | None = None) -> str:
        self.calls.append(text)
        return f"[{language}] {text}"


def _say(services: Services, debtor: Debtor, text: str, clock: FixedClock, *, verified: bool) -> list[Message]:
    message = InboundMessage("webchat", f"portal:{debtor.id}", text, None, received_at=clock())
    services.conversations.receive(message, debtor.id, verified=verified)
    with services.database.session() as session:
        return list(session.scalars(select(Message).where(Message.direction == "out").order_by(Message.id)))


def test_verified_conversational_replies_are_reworded(
    services: Services, make_debtor: Callable[..., Debtor], clock: FixedClock
) -> None:
    spy = SpyRephraser()
    services.conversations.rephraser = spy
    [reply] = _say(services, make_debtor(), "hola", clock, verified=True)
    assert reply.template_key in REPHRASABLE
    assert reply.body.startswith("[es] ") and spy.calls == [reply.body.removeprefix("[es] ")]


def test_identity_and_legal_texts_are_never_reworded(
    services: Services, make_debtor: Callable[..., Debtor], clock: FixedClock
) -> None:
    spy = SpyRephraser()
    services.conversations.rephraser = spy
    debtor = make_debtor()
    replies = _say(services, debtor, "hola", clock, verified=False)  # asks for the last 4 digits first
    replies += _say(services, debtor, "no me escriban más", clock, verified=False)
    assert replies[0].template_key == "verify_identity"
    assert spy.calls == [] and not any(r.body.startswith("[") for r in replies)


def test_a_rewording_that_adds_an_amount_is_replaced_by_the_template_text(
    services: Services, make_debtor: Callable[..., Debtor], clock: FixedClock
) -> None:
    registry = CollectorRegistry()
    model = FakeListChatModel(responses=["Hola Ana, hoy le condonamos $10.000 de su deuda."])
    services.conversations.rephraser = Rephraser(model, LLMMetrics(registry), timeout=2)
    debtor = make_debtor()
    [reply] = _say(services, debtor, "hola", clock, verified=True)
    assert "10.000" not in reply.body and reply.body.startswith("Hola Ana")
    labels = {"purpose": "rephrase", "reason": "rejected_number"}
    assert registry.get_sample_value("cobrabot_llm_fallbacks_total", labels) == 1


@pytest.mark.parametrize("rephrase", [True, False])
def test_configuration_alone_switches_rephrasing_on(
    settings: Settings, db: Database, clock: FixedClock, rephrase: bool
) -> None:
    configured = settings.model_copy(
        update={"openai_api_key": "sk-test-not-used", "llm_model": "gpt-4o-mini", "llm_rephrase": rephrase}
    )
    services = bootstrap(configured, database=db, clock=clock)  # the model is built on first use: no network
    assert isinstance(services.conversations.rephraser, Rephraser) is rephrase
