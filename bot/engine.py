"""DialogEngine: one inbound message and the conversation's state in, one Turn out.

Deterministic for a given flow, state, message, facts and clock; no I/O beyond the NLU. The engine walks the
flow (flows/loader.py): global intents first, then the waiting node's slots and transitions; actions
(bot/actions.py) turn into domain commands (bot/commands.py) that the caller applies.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from bot.actions import ActionContext, run_action
from bot.domain import Clock, ConversationState, FaqAnswer, InboundMessage, Intent, Money, Reply, Turn
from bot.i18n import language_of
from bot.negotiation import NegotiationPolicy
from bot.nlu import Understander, Understanding
from flows.loader import Flow, Node, Slot, default_flow

MAX_STEPS = 12  # transitions per turn; a flow that loops longer is a bug, not a conversation
MISUNDERSTOOD_BEFORE_HUMAN = 2
UNVERIFIED_SAFE_INTENTS = frozenset({Intent.OPT_OUT, Intent.HUMAN, Intent.WRONG_PERSON})

FlowSource = Callable[[str, int], Flow]


def shipped_flows(name: str, _version: int) -> Flow:
    return default_flow(name)


@dataclass(frozen=True, slots=True)
class DebtorFacts:
    """What the engine may know about the debtor; amounts only reach replies after identity is verified."""

    debtor_name: str
    creditor_name: str
    locale: str
    timezone: str
    currency: str
    balance: Money | None
    next_due_date: date | None
    policy: NegotiationPolicy = field(default_factory=NegotiationPolicy)
    identity_check: Callable[[str], bool] = lambda _answer: False
    faq: Callable[[str, str], FaqAnswer | None] | None = None


class DialogEngine:
    def __init__(self, nlu: Understander, flows: FlowSource = shipped_flows) -> None:
        self.nlu = nlu
        self.flows = flows

    def handle(self, state: ConversationState, message: InboundMessage, facts: DebtorFacts, clock: Clock) -> Turn:
        now = clock()
        understanding = self.nlu.understand(
            message.text,
            locale=language_of(facts.locale),
            timezone=facts.timezone,
            currency=facts.currency,
            now=now,
        )
        run = _Run(self.flows(state.flow_name, state.flow_version), state, facts, understanding, now)
        run.respond()
        return run.turn()


class _Run:
    """The working state of one turn: the node we are at, what to say and which commands to apply."""

    def __init__(
        self, flow: Flow, state: ConversationState, facts: DebtorFacts, understanding: Understanding, now: datetime
    ) -> None:
        self.flow = flow
        self.facts = facts
        self.u = understanding
        self.now = now
        self.node_name = state.node
        self.slots: dict[str, Any] = dict(state.slots)
        self.mode = state.mode
        self.verified = state.identity_verified
        self.flow_version = state.flow_version
        self.replies: list[Reply] = []
        self.commands: list[Any] = []
        self.steps = 0
        self.consumed = False  # once an action used this message, re-entered nodes must not reuse it
        self.question = understanding.text  # what FAQ answers answer: the pending question after verifying

    def turn(self) -> Turn:
        self.slots["_at"] = self.now.isoformat()
        state = ConversationState(
            flow_name=self.flow.name,
            flow_version=self.flow.version,
            node=self.node_name,
            slots=self.slots,
            mode=self.mode,
            identity_verified=self.verified,
        )
        return Turn(tuple(self.replies), state, tuple(self.commands), self.u.intent, self.u.confidence)

    def respond(self) -> None:
        if self.mode != "bot":
            # A person has the conversation; the bot stays quiet except to honour an opt-out at once.
            if self.u.intent is Intent.OPT_OUT and Intent.OPT_OUT.value in self.flow.globals:
                self.enter(self.flow.globals[Intent.OPT_OUT.value])
            return
        if self.u.intent is Intent.HARDSHIP:
            self.slots["hardship"] = True
        global_target = self.flow.globals.get(self.u.intent.value)
        if global_target and (self.verified or self.u.intent in UNVERIFIED_SAFE_INTENTS or self._public(global_target)):
            self.slots.pop("_misunderstood", None)
            self.enter(global_target)
            return
        if self.node_name not in self.flow.nodes or not self.slots.get("_started"):
            self.start_conversation()
            return
        node = self.flow.node(self.node_name)
        if self._timed_out(node):
            self.enter(node.timeout_goto or self.flow.start)
            return
        self.at_waiting_node(node)

    def _timed_out(self, node: Node) -> bool:
        """Whether the debtor comes back after the node's timeout: old half-finished talk is not resumed."""
        last = self.slots.get("_at")
        if node.timeout_hours is None or not last:
            return False
        return (self.now - datetime.fromisoformat(str(last))).total_seconds() > node.timeout_hours * 3600

    def start_conversation(self) -> None:
        self.slots["_started"] = True
        if not self.verified:
            if self.u.intent not in (Intent.GREETING, Intent.UNKNOWN):
                self.slots["_after_verify"] = self.u.intent.value
                self.slots["_after_verify_text"] = self.u.text[:500]
            self.enter(self.flow.start)
            return
        first = self.flow.verified_start or self.flow.start
        listener = self._listener_after(first)
        target = listener.on.get(self.u.intent.value) if listener else None
        if listener and target and self.u.intent is not Intent.GREETING:
            # The first message already says what the debtor wants: answer it instead of greeting first.
            self.node_name = listener.name
            self.enter(target)
        else:
            self.enter(first)

    def _main_menu_target(self) -> str | None:
        """Where the main menu would send this intent: debtors change topic mid-way, and that is fine."""
        if not self.verified or self.u.intent is Intent.UNKNOWN:
            return None
        listener = self._listener_after(self.flow.verified_start or self.flow.start)
        return listener.on.get(self.u.intent.value) if listener else None

    def _listener_after(self, name: str) -> Node | None:
        """The first waiting node reached from `name` through `next` links, without running anything."""
        seen: set[str] = set()
        node = self.flow.nodes.get(name)
        while node is not None and node.name not in seen and not node.action and not node.slots:
            if node.waits:
                return node
            seen.add(node.name)
            node = self.flow.nodes.get(node.next or "")
        return None

    def at_waiting_node(self, node: Node) -> None:
        filled = self.fill_slots(node)
        if node.slots and filled:
            self.continue_node(node)
            return
        target = node.on.get(self.u.intent.value) or self._main_menu_target()
        if target:
            self.slots.pop("_misunderstood", None)
            self.enter(target)
        elif node.slots and self.u.intent is Intent.UNKNOWN and self._missing(node):
            self.misunderstood(node)
        elif node.fallback:
            self.enter(node.fallback)
        else:
            self.misunderstood(node)

    def misunderstood(self, node: Node) -> None:
        answer = self.facts.faq(self.question, self.facts.locale) if self.facts.faq and self.verified else None
        if answer:
            # Not a flow intent, but the knowledge base knows the answer: that is understanding enough.
            self.slots.pop("_misunderstood", None)
            self.say("faq_answer", answer=answer.text, knowledge_source=answer.source)
            return
        count = int(self.slots.get("_misunderstood", 0)) + 1
        if count >= MISUNDERSTOOD_BEFORE_HUMAN:
            self.slots["_misunderstood"] = 0
            self.say("offer_human")
            return
        self.slots["_misunderstood"] = count
        self.say("not_understood")
        missing = self._missing(node)
        if missing:
            self.say(missing[0].ask)

    def enter(self, name: str) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise RuntimeError(f"flow {self.flow.name} loops at node {name}")
        if not self.verified and not self._public(name):
            name = self.flow.start
        node = self.flow.node(name)
        self.node_name = name
        for slot in node.slots:
            self.slots.pop(slot.name, None)
        for key in node.say:
            self.say(key)
        if node.end:
            if node.action:
                run_action(node, self._action_context())
            self.mode = "human" if node.end == "human" else "closed"
            return
        if node.slots and not self.consumed:
            self.fill_slots(node)
        self.continue_node(node)

    def continue_node(self, node: Node) -> None:
        missing = self._missing(node)
        if missing:
            self.say(missing[0].ask)
            return
        event = None
        if node.action:
            event = run_action(node, self._action_context())
            self.consumed = True
        if event == "verified":
            self.after_verification(node.on.get(event))
        elif event and event in node.on:
            self.enter(node.on[event])
        elif node.next:
            self.enter(node.next)

    def after_verification(self, target: str | None) -> None:
        self.enter(target or self.flow.verified_start or self.flow.start)
        pending = self.slots.pop("_after_verify", None)
        self.question = self.slots.pop("_after_verify_text", self.question)
        target = self.flow.node(self.node_name).on.get(pending or "")
        if target:
            self.enter(target)

    def fill_slots(self, node: Node) -> bool:
        filled = False
        for slot in self._missing(node):
            value = self._slot_value(slot)
            if value is not None:
                self.slots[slot.name] = value
                filled = True
        return filled

    def _slot_value(self, slot: Slot) -> Any:
        entities = self.u.entities
        # The last date or amount mentioned wins: "el viernes, no, mejor el lunes" means Monday.
        if slot.entity == "date" and entities.dates:
            return entities.dates[-1].isoformat()
        if slot.entity == "amount" and entities.amounts:
            amount = entities.amounts[-1]
            return {"minor": amount.minor, "currency": amount.currency}
        if slot.entity == "installments" and entities.installments:
            return entities.installments
        if slot.entity == "reference":
            return entities.reference or _reference_from_text(self.u.text)
        if slot.entity == "identity":
            return _identity_answer(self.u.text)
        if slot.entity == "text" and self.u.text.strip():
            return self.u.text.strip()
        return None

    def _missing(self, node: Node) -> list[Slot]:
        missing = []
        for slot in node.slots:
            if slot.name in self.slots:
                continue
            if slot.default and self._apply_default(slot):
                continue
            missing.append(slot)
        return missing

    def _apply_default(self, slot: Slot) -> bool:
        # Defaults fill a slot only once the debtor has answered the slots before it (they are asked in order).
        if slot.default == "balance" and self.facts.balance is not None and self._earlier_filled(slot):
            self.slots[slot.name] = {"minor": self.facts.balance.minor, "currency": self.facts.balance.currency}
            return True
        if slot.default == "today" and self._earlier_filled(slot):
            self.slots[slot.name] = self.now.date().isoformat()
            return True
        return False

    def _earlier_filled(self, slot: Slot) -> bool:
        node = self.flow.node(self.node_name)
        earlier = node.slots[: node.slots.index(slot)]
        return all(other.name in self.slots for other in earlier)

    def _public(self, name: str) -> bool:
        node = self.flow.nodes.get(name)
        return bool(node and node.public)

    def _action_context(self) -> ActionContext:
        return ActionContext(run=self, node=self.flow.node(self.node_name))

    def say(self, key: str, **variables: Any) -> None:
        base: dict[str, Any] = {}
        if self.verified:
            base = {"debtor_name": self.facts.debtor_name, "creditor_name": self.facts.creditor_name}
            if self.facts.balance is not None:
                base["balance"] = self.facts.balance
            if self.facts.next_due_date is not None:
                base["due_date"] = self.facts.next_due_date
        self.replies.append(Reply(key, base | variables))

    def verify(self) -> None:
        self.verified = True


def _identity_answer(text: str) -> str | None:
    stripped = text.strip()
    return stripped if re.search(r"\d", stripped) else None


def _reference_from_text(text: str) -> str | None:
    # A payment reference has digits: "88776655", "TRX-2026-001"; plain words are never one.
    match = re.search(r"\b(?=[A-Z-]*\d)[A-Z0-9][A-Z0-9-]{4,}\b", text.upper())
    return match.group(0) if match else None
