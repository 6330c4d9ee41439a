"""DialogEngine mechanics with a scripted understander: globals, identity gating, slots, misunderstandings."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from bot import commands
from bot.domain import ConversationState, Entities, InboundMessage, Intent, Money
from bot.engine import DebtorFacts, DialogEngine
from bot.nlu import Understanding

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


class ScriptedNLU:
    """Understands exactly what the test says a message means: 'intent' or 'intent|entities'."""

    def __init__(self, meanings: dict[str, Understanding]) -> None:
        self.meanings = meanings

    def understand(self, text: str, *, locale, timezone, currency, now) -> Understanding:
        return self.meanings.get(text) or Understanding(text, Intent.UNKNOWN, 0.0, Entities(), "es")


def meaning(text: str, intent: Intent, **entities) -> Understanding:
    return Understanding(text, intent, 0.95, Entities(**entities), "es")


MEANINGS = {
    m.text: m
    for m in [
        meaning("hola", Intent.GREETING),
        meaning("1234", Intent.UNKNOWN),
        meaning("9999", Intent.UNKNOWN),
        meaning("quiero pagar", Intent.PAY_NOW),
        meaning("STOP", Intent.OPT_OUT),
        meaning("no reconozco esta deuda", Intent.DISPUTE),
        meaning("persona", Intent.HUMAN),
        meaning("pago el viernes", Intent.PROMISE_TO_PAY, dates=(date(2026, 11, 27),)),
        meaning(
            "pago el viernes 20 mil", Intent.PROMISE_TO_PAY, dates=(date(2026, 11, 27),), amounts=(Money(20000, "CLP"),)
        ),
        meaning("el 30", Intent.UNKNOWN, dates=(date(2026, 11, 30),)),
        meaning("en cuotas", Intent.REQUEST_PLAN),
        meaning("acepto", Intent.ACCEPT),
        meaning("en 12 cuotas", Intent.COUNTER_OFFER, installments=12),
        meaning("perdí mi trabajo", Intent.HARDSHIP),
        meaning("ya pagué", Intent.ALREADY_PAID),
    ]
}


@pytest.fixture
def engine() -> DialogEngine:
    return DialogEngine(ScriptedNLU(MEANINGS))


def facts(**overrides) -> DebtorFacts:
    values = dict(
        debtor_name="Ana",
        creditor_name="Aguas del Valle",
        locale="es-CL",
        timezone="America/Santiago",
        currency="CLP",
        balance=Money(120000, "CLP"),
        next_due_date=date(2026, 12, 5),
        identity_check=lambda answer: answer.endswith("1234"),
    )
    return DebtorFacts(**(values | overrides))


def fresh(verified: bool = False) -> ConversationState:
    return ConversationState("collections", 1, "start", identity_verified=verified)


def say(engine: DialogEngine, state: ConversationState, text: str, **fact_overrides):
    turn = engine.handle(state, InboundMessage("sms", "+56961234567", text), facts(**fact_overrides), lambda: NOW)
    return turn, [reply.template_key for reply in turn.replies]


def test_unverified_debtor_is_asked_to_verify_and_told_nothing(engine):
    turn, keys = say(engine, fresh(), "hola")
    assert keys == ["verify_identity"]
    assert turn.replies[0].variables == {}
    assert not turn.state.identity_verified


def test_verification_then_greeting_with_balance(engine):
    turn, _ = say(engine, fresh(), "hola")
    turn, keys = say(engine, turn.state, "1234")
    assert turn.state.identity_verified
    assert keys == ["greeting_balance"]
    assert turn.replies[0].variables["balance"] == Money(120000, "CLP")
    assert commands.IdentityVerified() in turn.commands


def test_what_the_debtor_asked_before_verifying_is_done_after(engine):
    turn, keys = say(engine, fresh(), "quiero pagar")
    assert keys == ["verify_identity"]
    turn, keys = say(engine, turn.state, "1234")
    assert keys == ["greeting_balance", "payment_link_sent"]
    assert commands.SendPaymentLink(Money(120000, "CLP")) in turn.commands


def test_three_wrong_answers_lock_and_hand_off(engine):
    turn, _ = say(engine, fresh(), "hola")
    turn, keys = say(engine, turn.state, "9999")
    assert keys == ["identity_failed", "verify_identity"]
    turn, _ = say(engine, turn.state, "9999")
    turn, keys = say(engine, turn.state, "9999")
    assert keys == ["verify_locked"]
    assert turn.state.mode == "human"
    assert commands.Handoff("identity_locked") in turn.commands
    assert sum(isinstance(c, commands.IdentityFailed) for c in turn.commands) == 1


def test_opt_out_wins_anywhere_even_unverified(engine):
    turn, keys = say(engine, fresh(), "STOP")
    assert keys == ["opted_out"]
    assert turn.commands == (commands.OptOut("channel"),)
    assert turn.state.mode == "closed"


def test_dispute_before_verification_opens_a_case_without_disclosing(engine):
    turn, keys = say(engine, fresh(), "no reconozco esta deuda")
    assert keys == ["dispute_received"]
    assert all(reply.variables == {} for reply in turn.replies)
    assert [type(c) for c in turn.commands] == [commands.OpenCase, commands.Handoff]
    assert turn.state.mode == "human"


def test_dispute_interrupts_a_negotiation(engine):
    turn, _ = say(engine, fresh(verified=True), "en cuotas")
    assert turn.state.node == "plan_wait"
    turn, keys = say(engine, turn.state, "no reconozco esta deuda")
    assert keys == ["dispute_received"]
    assert turn.commands[0] == commands.OpenCase("dispute", "no reconozco esta deuda")


def test_promise_with_date_only_defaults_to_full_balance(engine):
    turn, keys = say(engine, fresh(verified=True), "pago el viernes")
    assert keys == ["promise_confirmed"]
    assert turn.commands == (commands.RecordPromise(Money(120000, "CLP"), date(2026, 11, 27)),)


def test_promise_asks_for_missing_date_then_records(engine):
    turn, _ = say(engine, fresh(verified=True), "hola")
    turn, keys = say(engine, turn.state, "pago el viernes 20 mil")
    assert keys == ["promise_confirmed"]
    assert turn.commands == (commands.RecordPromise(Money(20000, "CLP"), date(2026, 11, 27)),)


def test_plan_offer_accept_creates_plan_and_sends_first_link(engine):
    turn, keys = say(engine, fresh(verified=True), "en cuotas")
    assert keys == ["plan_offer"]
    turn, keys = say(engine, turn.state, "acepto")
    assert keys == ["plan_created"]
    plan = next(c for c in turn.commands if isinstance(c, commands.CreatePlan))
    total = plan.offer.down_payment.minor + sum(t.amount.minor for t in plan.offer.installments)
    assert total == 120000
    assert any(isinstance(c, commands.SendPaymentLink) for c in turn.commands)


def test_counter_beyond_policy_gets_the_closest_plan(engine):
    turn, _ = say(engine, fresh(verified=True), "en cuotas")
    turn, keys = say(engine, turn.state, "en 12 cuotas")
    assert keys == ["plan_closest"]
    assert turn.replies[0].variables["reason"] == "too_many_installments"
    assert turn.replies[0].variables["count"] == 6


def test_hardship_uses_the_hardship_policy(engine):
    turn, keys = say(engine, fresh(verified=True), "perdí mi trabajo")
    assert keys == ["hardship_intro", "plan_offer"]
    turn, keys = say(engine, turn.state, "en 12 cuotas")
    assert keys == ["plan_counter_accepted"]


def test_two_misunderstandings_offer_a_person(engine):
    turn, _ = say(engine, fresh(verified=True), "hola")
    turn, keys = say(engine, turn.state, "asdf")
    assert keys == ["not_understood"]
    turn, keys = say(engine, turn.state, "qwerty")
    assert keys == ["offer_human"]


def test_human_mode_keeps_the_bot_quiet_but_honours_opt_out(engine):
    turn, _ = say(engine, fresh(verified=True), "persona")
    assert turn.state.mode == "human"
    quiet, keys = say(engine, turn.state, "hola")
    assert keys == [] and quiet.commands == ()
    stop, keys = say(engine, turn.state, "STOP")
    assert keys == ["opted_out"] and stop.commands == (commands.OptOut("channel"),)


def test_already_paid_asks_for_a_reference_and_opens_a_reconciliation_case(engine):
    turn, keys = say(engine, fresh(verified=True), "ya pagué")
    assert keys == ["ask_payment_reference"]
    turn, keys = say(engine, turn.state, "comprobante 88776655")
    assert keys == ["already_paid_received"]
    assert turn.commands[0].kind == "reconciliation"


def test_the_same_input_gives_the_same_turn(engine):
    first, _ = say(engine, fresh(verified=True), "en cuotas")
    second, _ = say(engine, fresh(verified=True), "en cuotas")
    assert first == second


def test_coming_back_after_the_nodes_timeout_starts_again_at_its_goto(engine):
    turn, _keys = say(engine, fresh(verified=True), "en cuotas")
    assert turn.state.node == "plan_wait"
    later = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)  # 72 h later: the 48 h offer is stale
    stale = engine.handle(turn.state, InboundMessage("sms", "+56961234567", "acepto"), facts(), lambda: later)
    assert [reply.template_key for reply in stale.replies] == ["greeting_balance"]
    assert not any(isinstance(command, commands.CreatePlan) for command in stale.commands)
    soon = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    fresh_turn = engine.handle(turn.state, InboundMessage("sms", "+56961234567", "acepto"), facts(), lambda: soon)
    assert [reply.template_key for reply in fresh_turn.replies] == ["plan_created"]
