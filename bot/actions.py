"""What flow actions do: decide within policy, say the outcome, return the event the flow branches on.

Actions never perform I/O; they append replies and domain commands to the running turn.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from bot import commands
from bot.domain import Money
from bot.negotiation import CounterOffer, OfferKind, PlanOffer, Reason, check, evaluate, propose
from flows.loader import Node

if TYPE_CHECKING:
    from bot.engine import _Run

MAX_IDENTITY_FAILURES = 3
PROMISE_MAX_DAYS = 30  # a promise further out than this is a plan, not a promise
ALL_CHANNELS = re.compile(
    r"ning[uú]n (medio|canal|lado)|por ning[uú]n|todos los (medios|canales)|nada m[aá]s|never contact|"
    r"any (channel|way|means)|all channels|at all",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ActionContext:
    run: _Run
    node: Node


def run_action(node: Node, context: ActionContext) -> str:
    action = ACTIONS.get(node.action or "")
    if action is None:
        raise ValueError(f"unknown action {node.action!r} in node {node.name}")
    return action(context)


def verify_identity(ctx: ActionContext) -> str:
    run = ctx.run
    answer = str(run.slots.pop("identity", ""))
    if run.facts.identity_check(answer):
        run.verify()
        run.slots.pop("_failed_verifications", None)
        run.commands.append(commands.IdentityVerified())
        return "verified"
    failures = int(run.slots.get("_failed_verifications", 0)) + 1
    run.slots["_failed_verifications"] = failures
    run.commands.append(commands.IdentityFailed())
    return "locked" if failures >= MAX_IDENTITY_FAILURES else "failed"


def send_payment_link(ctx: ActionContext) -> str:
    balance = ctx.run.facts.balance
    if balance is None or balance.minor <= 0:
        return "nothing_owed"
    ctx.run.commands.append(commands.SendPaymentLink(balance))
    ctx.run.say("payment_link_sent", amount=balance)
    return "sent"


def propose_plan(ctx: ActionContext) -> str:
    run = ctx.run
    balance = run.facts.balance
    if balance is None or balance.minor <= 0:
        return "nothing_owed"
    offers = propose(run.facts.policy, balance, _today(run), run.now, hardship=_hardship(run))
    plans = [offer for offer in offers if offer.kind is OfferKind.INSTALLMENTS and len(offer.installments) > 1]
    plans = plans or offers
    offer = plans[0]
    run.slots["offer"] = offer.to_json()
    run.say("plan_offer", **offer_variables(offer))
    return "proposed"


def evaluate_counter(ctx: ActionContext) -> str:
    run = ctx.run
    balance = run.facts.balance
    if balance is None:
        return "refused"
    installments, amount = run.u.entities.installments, _first_amount(run)
    if installments is None and amount is None:
        run.say("plan_ask_counter")
        return "refused"
    counter = CounterOffer(installments=installments, installment_amount=amount)
    evaluation = evaluate(run.facts.policy, balance, counter, _today(run), run.now, hardship=_hardship(run))
    if evaluation.reason is Reason.WRONG_CURRENCY or evaluation.reason is Reason.NOTHING_OWED:
        run.say("plan_refused", reason=str(evaluation.reason))
        return "refused"
    if evaluation.accepted is not None:
        run.slots["offer"] = evaluation.accepted.to_json()
        run.say("plan_counter_accepted", **offer_variables(evaluation.accepted))
        return "accepted"
    if evaluation.closest is not None:
        run.slots["offer"] = evaluation.closest.to_json()
        run.say("plan_closest", reason=str(evaluation.reason), **offer_variables(evaluation.closest))
        return "closest"
    run.say("plan_refused", reason=str(evaluation.reason))
    return "refused"


def accept_plan(ctx: ActionContext) -> str:
    run = ctx.run
    stored = run.slots.get("offer")
    balance = run.facts.balance
    if not stored or balance is None:
        return "expired"
    offer = PlanOffer.from_json(stored)
    # Re-check what was offered against the policy as it is now: nothing outside policy becomes a plan.
    if check(run.facts.policy, balance, offer, _today(run), run.now, hardship=_hardship(run)):
        run.slots.pop("offer", None)
        return "expired"
    run.commands.append(commands.CreatePlan(offer))
    first = offer.installments[0] if offer.installments else None
    first_amount = offer.down_payment if offer.down_payment.minor > 0 else (first.amount if first else offer.total)
    run.commands.append(commands.SendPaymentLink(first_amount, installment_seq=0 if offer.down_payment.minor else 1))
    run.slots.pop("offer", None)
    run.say("plan_created", **offer_variables(offer))
    return "created"


def record_promise(ctx: ActionContext) -> str:
    run = ctx.run
    promised = date.fromisoformat(str(run.slots.pop("promise_date")))
    amount = _money_slot(run.slots.pop("promise_amount", None))
    balance = run.facts.balance
    if balance is None or balance.minor <= 0:
        return "nothing_owed"
    today = _today(run)
    latest = today + timedelta(days=PROMISE_MAX_DAYS)
    if amount is None or amount.currency != balance.currency:
        run.say("promise_invalid_amount")
        return "invalid"
    if not today <= promised <= latest:
        run.say("promise_invalid_date", latest=latest)
        return "invalid"
    if not 0 < amount.minor <= balance.minor:
        run.say("promise_invalid_amount")
        return "invalid"
    run.commands.append(commands.RecordPromise(amount, promised))
    run.say("promise_confirmed", amount=amount, promised_date=promised)
    return "recorded"


def open_case(ctx: ActionContext) -> str:
    kind = ctx.node.params.get("case_kind", "dispute")
    ctx.run.commands.append(commands.OpenCase(kind, reason=ctx.run.u.text[:1000]))
    return "opened"


def handoff(ctx: ActionContext) -> str:
    ctx.run.commands.append(commands.Handoff(ctx.node.params.get("reason", "requested")))
    return "handed_off"


def opt_out(ctx: ActionContext) -> str:
    scope = ctx.node.params.get("scope") or ("all" if ALL_CHANNELS.search(ctx.run.u.text) else "channel")
    ctx.run.commands.append(commands.OptOut(scope))
    ctx.run.say("opted_out_all" if scope == "all" else "opted_out")
    return "opted_out"


def answer_faq(ctx: ActionContext) -> str:
    answer = ctx.run.facts.faq(ctx.run.question, ctx.run.facts.locale) if ctx.run.facts.faq else None
    if not answer:
        return "no_answer"
    ctx.run.say("faq_answer", answer=answer.text, knowledge_source=answer.source)
    return "answered"


def mark_wrong_person(ctx: ActionContext) -> str:
    ctx.run.commands.append(commands.MarkWrongPerson())
    return "marked"


ACTIONS: dict[str, Callable[[ActionContext], str]] = {
    "verify_identity": verify_identity,
    "send_payment_link": send_payment_link,
    "propose_plan": propose_plan,
    "evaluate_counter": evaluate_counter,
    "accept_plan": accept_plan,
    "record_promise": record_promise,
    "open_case": open_case,
    "handoff": handoff,
    "opt_out": opt_out,
    "answer_faq": answer_faq,
    "mark_wrong_person": mark_wrong_person,
}


def _today(run: _Run) -> date:
    return run.now.astimezone(ZoneInfo(run.facts.timezone)).date()


def _hardship(run: _Run) -> bool:
    return bool(run.slots.get("hardship"))


def _first_amount(run: _Run) -> Money | None:
    return run.u.entities.amounts[0] if run.u.entities.amounts else None


def _money_slot(value: Any) -> Money | None:
    if isinstance(value, dict) and "minor" in value:
        return Money(int(value["minor"]), str(value["currency"]))
    return None


def offer_variables(offer: PlanOffer) -> dict[str, Any]:
    """What plan templates may show: all of it comes from the policy's offer, none from free text."""
    terms = offer.installments
    return {
        "total": offer.total,
        "down_payment": offer.down_payment,
        "discount": offer.discount,
        "count": len(terms),
        "installment_amount": terms[0].amount if terms else offer.total,
        "last_amount": terms[-1].amount if terms else offer.total,
        "first_date": offer.first_date,
        "installments_start": terms[0].due_date if terms else offer.first_date,
        "last_date": terms[-1].due_date if terms else None,
        "schedule": [{"seq": t.seq, "date": t.due_date, "amount": t.amount} for t in terms],
        "expires_at": offer.expires_at,
    }
