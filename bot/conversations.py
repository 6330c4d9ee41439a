"""The inbound path: dedupe, lock the conversation, run the engine, persist everything in one transaction."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import dateparser
from pydantic import ValidationError
from sqlalchemy import Select, and_, bindparam, func, insert, select, text
from sqlalchemy.orm import Session, aliased, joinedload

from bot.debtors import OLDEST_DUE_FIRST, OWED, balances, national_id_tail, secret_hash
from bot.domain import Clock, ConversationState, FaqAnswer, InboundMessage, OutboundMessage, Reply, Turn
from bot.effects import Effects
from bot.engine import DebtorFacts, DialogEngine
from bot.i18n import language_of
from bot.models import Conversation, Creditor, Debtor, Invoice, Message, Outbox
from bot.negotiation import DEFAULT_POLICY, NegotiationPolicy
from bot.portal import PortalTokens
from bot.store import ConversationLocks, Database, UnitOfWork
from bot.templates import TemplateRenderer
from knowledge.loader import DocumentError
from knowledge.retriever import KnowledgeBase, faq_answerer

logger = logging.getLogger(__name__)

# Channels whose replies travel back in the HTTP response instead of through the outbox.
SYNCHRONOUS_CHANNELS = frozenset({"webchat"})


# Replies an LLM may reword (COBRABOT_LLM_REPHRASE): conversational texts only. Legal and identity texts
# (validation notice, opt-out and dispute confirmations, verification), knowledge answers, receipts and portal
# labels are always sent exactly as written.
REPHRASABLE = frozenset(
    {
        "greeting_balance", "balance_detail", "thanks", "not_understood", "offer_human", "payment_link_sent",
        "promise_confirmed", "ask_promise_date", "ask_promise_amount", "promise_invalid_date",
        "promise_invalid_amount", "hardship_intro", "plan_offer", "plan_counter_accepted", "plan_closest",
        "plan_refused", "plan_created", "plan_ask_counter", "plan_expired", "plan_rejected", "plan_wait_prompt",
        "ask_payment_reference", "already_paid_received", "faq_no_answer", "handoff_human",
    }
)  # fmt: skip


class Rephraser(Protocol):
    """bot/nlu/rephrase.py: rewords a reply, or returns it unchanged when the rewording adds any fact."""

    def rephrase(self, text: str, language: str, *, message_id: int | None = None) -> str: ...


# Built once: the loader option is the same for every message.
_WITH_CREDITOR = (joinedload(Debtor.creditor),)


@dataclass(frozen=True, slots=True)
class Received:
    """What handling one inbound message produced; `duplicate` means it was seen before and ignored."""

    replies: tuple[OutboundMessage, ...]
    duplicate: bool = False
    conversation_id: int | None = None


class ConversationService:
    def __init__(
        self,
        database: Database,
        locks: ConversationLocks,
        engine: DialogEngine,
        clock: Clock,
        portal: PortalTokens,
        secret_key: str,
        knowledge: KnowledgeBase | None = None,
        *,
        rephraser: Rephraser | None = None,
    ) -> None:
        self.database = database
        self.locks = locks
        self.engine = engine
        self.clock = clock
        self.portal = portal
        self.secret_key = secret_key
        self.knowledge = knowledge
        self.rephraser = rephraser

    def receive(self, message: InboundMessage, debtor_id: int, *, verified: bool = False) -> Received:
        """Handle one message from a known debtor; `verified` marks a channel that proves identity itself."""
        with self.locks.hold(lock_key(debtor_id, message.channel)), self.database.unit_of_work() as uow:
            return self.receive_in(uow, message, debtor_id, verified=verified)

    def receive_in(
        self, uow: UnitOfWork, message: InboundMessage, debtor_id: int, *, verified: bool = False
    ) -> Received:
        """`receive` inside a unit of work the caller opened and whose conversation lock it holds."""
        session = uow.session
        debtor = session.get(Debtor, debtor_id, options=_WITH_CREDITOR)
        if debtor is None:
            raise LookupError(f"debtor {debtor_id} not found")
        conversation, invoices = self._conversation(session, debtor, message, verified)
        if not message.text.strip():
            return self._media_only(uow, conversation, debtor, message)
        # The turn is computed before the dedupe insert so the intent goes into that one INSERT; a duplicate's
        # turn is thrown away with the rolled-back transaction (the engine itself writes nothing).
        turn = self.turn(session, conversation, debtor, invoices, message)
        if _insert_inbound(session, conversation, message, turn) is None:
            logger.info("duplicate inbound channel=%s conversation=%s", message.channel, conversation.id)
            return Received((), duplicate=True, conversation_id=conversation.id)
        outputs = self.apply_turn(session, conversation, debtor, message, turn, self.clock())
        replies = self._store_replies(session, conversation, debtor, turn, outputs)
        uow.commit()
        return Received(replies, conversation_id=conversation.id)

    def turn(
        self,
        session: Session,
        conversation: Conversation,
        debtor: Debtor,
        invoices: list[Invoice],
        message: InboundMessage,
    ) -> Turn:
        """What the engine makes of `message` in the conversation's current state; writes nothing."""
        if refresh := getattr(self.engine.flows, "refresh", None):  # bot/flow_store.py: published flows
            refresh(session, conversation.flow_name)
        facts = _facts(debtor, invoices, self.secret_key, self._faq(debtor.creditor.slug))
        return self.engine.handle(_state_of(conversation), message, facts, self.clock)

    def apply_turn(
        self,
        session: Session,
        conversation: Conversation,
        debtor: Debtor,
        message: InboundMessage,
        turn: Turn,
        now: datetime,
    ) -> dict[str, Any]:
        """The turn's new conversation state and its domain changes, in `session`; the values its replies quote."""
        _apply_state(conversation, turn, message)
        return Effects(session, conversation, debtor, now, self.portal).apply_all(turn.commands)

    def _media_only(
        self, uow: UnitOfWork, conversation: Conversation, debtor: Debtor, message: InboundMessage
    ) -> Received:
        """A photo or document with no text: kept (as links) for an agent; the engine has nothing to read."""
        if _insert_inbound(uow.session, conversation, message) is None:
            return Received((), duplicate=True, conversation_id=conversation.id)
        conversation.last_inbound_at = message.received_at
        replies: tuple[OutboundMessage, ...] = ()
        if conversation.mode == "bot":
            turn = Turn(replies=(Reply("media_received"),), state=_state_of(conversation))
            replies = self._store_replies(uow.session, conversation, debtor, turn, {})
        uow.commit()
        return Received(replies, conversation_id=conversation.id)

    def _faq(self, creditor_slug: str) -> Callable[[str, str], FaqAnswer | None] | None:
        if self.knowledge is None:
            return None
        answer = faq_answerer(self.knowledge, creditor_slug)

        def guarded(text: str, locale: str) -> FaqAnswer | None:
            try:
                return answer(text, locale)
            except DocumentError:
                # A broken knowledge document must not break conversations: no answer means "offer a person".
                logger.exception("knowledge base for creditor %s cannot be loaded", creditor_slug)
                return None

        return guarded

    def _conversation(
        self, session: Session, debtor: Debtor, message: InboundMessage, verified: bool
    ) -> tuple[Conversation, list[Invoice]]:
        """The open conversation on the message's channel (opened if there is none) and the open invoices."""
        conversation, invoices = _open_conversation_and_invoices(session, debtor.id, message.channel)
        if conversation is None:
            conversation = Conversation(debtor_id=debtor.id, channel=message.channel, address=message.sender)
            session.add(conversation)
            session.flush()
        if verified and conversation.identity_verified_at is None:
            conversation.identity_verified_at = self.clock()
        return conversation, invoices

    def _store_replies(
        self, session: Session, conversation: Conversation, debtor: Debtor, turn: Turn, outputs: dict[str, Any]
    ) -> tuple[OutboundMessage, ...]:
        now = self.clock()
        rows = self.reply_rows(TemplateRenderer.from_session(session), conversation, debtor, turn, outputs, now)
        message_ids = insert_replies(session, rows, queue=conversation.channel not in SYNCHRONOUS_CHANNELS, now=now)
        return outbound_messages(conversation, turn, rows, message_ids)

    def reply_rows(
        self,
        renderer: TemplateRenderer,
        conversation: Conversation,
        debtor: Debtor,
        turn: Turn,
        outputs: dict[str, Any],
        now: datetime,
    ) -> list[dict[str, Any]]:
        """The turn's replies, written, as `messages` rows for insert_replies."""
        synchronous = conversation.channel in SYNCHRONOUS_CHANNELS
        rows = []
        for reply in turn.replies:
            text = renderer.render(reply.template_key, debtor.locale, conversation.channel, outputs | reply.variables)
            if self.rephraser and conversation.identity_verified_at and reply.template_key in REPHRASABLE:
                text = self.rephraser.rephrase(text, language_of(debtor.locale))
            rows.append(
                {
                    "conversation_id": conversation.id,
                    "debtor_id": debtor.id,
                    "direction": "out",
                    "channel": conversation.channel,
                    "body": text,
                    "media": [],
                    "template_key": reply.template_key,
                    "knowledge_source": reply.variables.get("knowledge_source"),
                    "delivery_status": "delivered" if synchronous else "queued",
                    "created_at": now,
                }
            )
        conversation.last_outbound_at = now  # the ORM's one UPDATE of the conversation, at commit
        return rows


def outbound_messages(
    conversation: Conversation, turn: Turn, rows: list[dict[str, Any]], message_ids: list[int]
) -> tuple[OutboundMessage, ...]:
    """The stored replies as the channel will send them."""
    return tuple(
        OutboundMessage(
            channel=conversation.channel,
            recipient=conversation.address,
            text=row["body"],
            template_key=reply.template_key,
            buttons=reply.buttons,
            message_id=message_id,
        )
        for reply, row, message_id in zip(turn.replies, rows, message_ids, strict=True)
    )


# Core, not the ORM's unit of work: the replies are written once and never touched again in the turn, and the
# unit of work's bookkeeping for them cost more CPU than the two INSERTs themselves.
_INSERT_REPLIES = insert(Message.__table__).returning(Message.__table__.c.id, sort_by_parameter_order=True)
_INSERT_OUTBOX = insert(Outbox.__table__)


def insert_replies(session: Session, rows: list[dict[str, Any]], *, queue: bool, now: datetime) -> list[int]:
    """The replies in one INSERT (ids in the rows' order) and, unless answered in the response itself, their
    outbox rows in another."""
    if not rows:
        return []
    message_ids = list(session.scalars(_INSERT_REPLIES, rows))
    if queue:
        outbox = [
            {
                "message_id": message_id,
                "channel": row["channel"],
                "initiated_by": "reply",
                "created_at": now,
                "next_attempt_at": now,
            }
            for message_id, row in zip(message_ids, rows, strict=True)
        ]
        session.execute(_INSERT_OUTBOX, outbox)
    return message_ids


def lock_key(debtor_id: int, channel: str) -> str:
    """The conversation lock every writer of one debtor's conversation on one channel takes."""
    return f"conversation:{debtor_id}:{channel}"


# Insert-or-ignore on (channel, provider_message_id), as text: SQLAlchemy cannot cache the dialects'
# INSERT ... ON CONFLICT constructs, and compiling one anew on every webhook cost more CPU than running it.
# PostgreSQL and SQLite (3.35+) share this syntax.
_INBOUND_COLUMNS = (
    "conversation_id", "debtor_id", "direction", "channel", "body", "media", "provider_message_id",
    "delivery_status", "created_at", "intent", "confidence",
)  # fmt: skip
_INSERT_INBOUND = (
    text(
        f"INSERT INTO messages ({', '.join(_INBOUND_COLUMNS)}) "
        f"VALUES ({', '.join(':' + name for name in _INBOUND_COLUMNS)}) "
        "ON CONFLICT (channel, provider_message_id) DO NOTHING RETURNING id"
    )
    .bindparams(*(bindparam(name, type_=Message.__table__.c[name].type) for name in _INBOUND_COLUMNS))
    .columns(id=Message.__table__.c.id.type)
)


def _insert_inbound(
    session: Session, conversation: Conversation, message: InboundMessage, turn: Turn | None = None
) -> int | None:
    """Insert-or-ignore on (channel, provider_message_id): atomic dedupe, no check-then-insert race."""
    return session.execute(_INSERT_INBOUND, inbound_row(conversation, message, turn)).scalar_one_or_none()


def inbound_row(conversation: Conversation, message: InboundMessage, turn: Turn | None = None) -> dict[str, Any]:
    """The inbound message as a `messages` row, with the intent the turn read in it."""
    return {
        "conversation_id": conversation.id,
        "debtor_id": conversation.debtor_id,
        "direction": "in",
        "channel": message.channel,
        "body": message.text,
        "media": list(message.media_urls),
        "provider_message_id": message.provider_message_id,
        "delivery_status": "received",
        "created_at": message.received_at,
        "intent": turn.intent.value if turn else None,
        "confidence": turn.confidence if turn else None,
    }


def _open_conversations_and_invoices_statement() -> Select[tuple[int, Conversation, Invoice]]:
    """Built once: constructing the alias and the joins cost more CPU per webhook than running the query."""
    other = aliased(Conversation)
    latest_open = (
        select(func.max(other.id))
        .where(other.debtor_id == Debtor.id, other.channel == bindparam("channel"))
        .where(other.mode != "closed")
        .correlate(Debtor)
        .scalar_subquery()
    )
    return (
        select(Debtor.id, Conversation, Invoice)
        .select_from(Debtor)
        .outerjoin(Conversation, Conversation.id == latest_open)
        .outerjoin(Invoice, and_(Invoice.debtor_id == Debtor.id, *OWED))
        .where(Debtor.id.in_(bindparam("debtor_ids", expanding=True)))
        .order_by(Debtor.id, *OLDEST_DUE_FIRST)
    )


_OPEN_CONVERSATIONS_AND_INVOICES = _open_conversations_and_invoices_statement()


def open_conversations_and_invoices(
    session: Session, debtor_ids: Collection[int], channel: str
) -> dict[int, tuple[Conversation | None, list[Invoice]]]:
    """Each debtor's latest open conversation on `channel` and open invoices (as bot.debtors.open_invoices:
    oldest due first) in one statement: one row per invoice, or one row of NULLs-for-invoice when none.
    Read after the conversation locks are taken, so each state is the one the previous turn committed."""
    parameters = {"debtor_ids": list(debtor_ids), "channel": channel}
    found: dict[int, tuple[Conversation | None, list[Invoice]]] = {}
    for debtor_id, conversation, invoice in session.execute(_OPEN_CONVERSATIONS_AND_INVOICES, parameters):
        _, invoices = found.setdefault(debtor_id, (conversation, []))
        if invoice is not None:
            invoices.append(invoice)
    return found


def _open_conversation_and_invoices(
    session: Session, debtor_id: int, channel: str
) -> tuple[Conversation | None, list[Invoice]]:
    """`open_conversations_and_invoices` for one debtor."""
    return open_conversations_and_invoices(session, [debtor_id], channel).get(debtor_id, (None, []))


def _state_of(conversation: Conversation) -> ConversationState:
    return ConversationState(
        flow_name=conversation.flow_name,
        flow_version=conversation.flow_version,
        node=conversation.node,
        slots=dict(conversation.slots or {}),
        mode=conversation.mode,
        identity_verified=conversation.identity_verified_at is not None,
    )


def _apply_state(conversation: Conversation, turn: Turn, message: InboundMessage) -> None:
    conversation.flow_name = turn.state.flow_name
    conversation.flow_version = turn.state.flow_version
    conversation.node = turn.state.node
    conversation.slots = dict(turn.state.slots)
    conversation.mode = turn.state.mode
    conversation.last_inbound_at = message.received_at


def _facts(
    debtor: Debtor, invoices: list[Invoice], secret_key: str, faq: Callable[[str, str], FaqAnswer | None] | None
) -> DebtorFacts:
    # A debtor rarely owes in two currencies; then the bot speaks of the one falling due first.
    currency = invoices[0].currency if invoices else None
    balance = next((money for money in balances(invoices) if money.currency == currency), None)
    creditor = debtor.creditor
    return DebtorFacts(
        debtor_name=debtor.name.split()[0] if debtor.name else "",
        creditor_name=creditor.name,
        locale=debtor.locale,
        timezone=debtor.timezone,
        currency=currency or creditor.currency,
        balance=balance,
        next_due_date=invoices[0].due_date if invoices else None,
        policy=_policy(creditor),
        identity_check=identity_checker(debtor, creditor.verification_method, secret_key),
        faq=faq,
    )


def _policy(creditor: Creditor) -> NegotiationPolicy:
    try:
        return (
            NegotiationPolicy.model_validate(creditor.negotiation_policy)
            if creditor.negotiation_policy
            else (DEFAULT_POLICY)
        )
    except ValidationError:
        # The console refuses invalid policies; one that slipped in (old data) must not stop conversations.
        logger.error("creditor %s has an invalid negotiation policy; using the default", creditor.id)
        return DEFAULT_POLICY


def identity_checker(debtor: Debtor, method: str, secret_key: str) -> Callable[[str], bool]:
    """A pure check of the debtor's answer against the stored keyed hash for the creditor's method."""
    if method == "birth_date":
        expected = debtor.birth_date_hash

        def answer_hash(answer: str) -> str | None:
            parsed = dateparser.parse(answer, settings={"DATE_ORDER": "DMY", "STRICT_PARSING": True})
            return secret_hash(secret_key, "birth_date", parsed.date().isoformat()) if parsed else None
    else:
        expected = debtor.national_id_hash

        def answer_hash(answer: str) -> str | None:
            tail = national_id_tail(answer)
            return secret_hash(secret_key, "national_id", tail) if len(tail) == 4 else None

    def check(answer: str) -> bool:
        candidate = answer_hash(answer)
        return bool(expected and candidate and hmac.compare_digest(candidate, expected))

    return check
