"""DialogEngine: one inbound message and the conversation's state in, one Turn out.

Deterministic for a given state, message, facts and clock; no I/O. This first slice greets the debtor
with their balance; the flow runner (flows as data, NLU, negotiation) replaces `_decide` without
changing this contract.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from bot.domain import Clock, ConversationState, InboundMessage, Intent, Money, Reply, Turn


@dataclass(frozen=True, slots=True)
class DebtorFacts:
    """What the engine may know about the debtor; amounts only reach replies after identity checks."""

    debtor_name: str
    creditor_name: str
    locale: str
    timezone: str
    balance: Money | None
    next_due_date: date | None


class DialogEngine:
    def handle(self, state: ConversationState, message: InboundMessage, facts: DebtorFacts, clock: Clock) -> Turn:
        reply = self._decide(state, facts)
        new_state = replace(state, slots={**state.slots, "last_seen": clock().isoformat()})
        return Turn(replies=(reply,), state=new_state, intent=Intent.GREETING, confidence=1.0)

    def _decide(self, state: ConversationState, facts: DebtorFacts) -> Reply:
        names = {"debtor_name": facts.debtor_name, "creditor_name": facts.creditor_name}
        if not state.identity_verified or facts.balance is None or facts.next_due_date is None:
            return Reply("greeting_no_debt", names) if state.identity_verified else Reply("verify_identity")
        return Reply("greeting_balance", {**names, "balance": facts.balance, "due_date": facts.next_due_date})
