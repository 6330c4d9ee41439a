"""Console actions over the core, free of Flask: sign-in with lockout, the handoff inbox, and what an agent does
to a conversation (claim, assign, reply, note, resolve, give back to the bot). Every action is audited."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.agents import hash_password, verify_password
from bot.audit import record
from bot.conversations import lock_key
from bot.debtors import balances, open_invoices
from bot.domain import Clock
from bot.effects import HANDOFF_SLA
from bot.models import Agent, AuditEvent, Conversation, Debtor, Message, Outbox
from bot.outreach import opted_out_channels
from bot.store import ConversationLocks, Database, UnitOfWork
from bot.templates import TemplateError, TemplateRenderer
from flows.loader import FlowError, default_flow

logger = logging.getLogger(__name__)

MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
WHATSAPP_WINDOW = timedelta(hours=24)
MAX_TEXT = 4000
ROLE_RANK = {"agent": 0, "manager": 1, "admin": 2}

# Starting points an agent edits before sending; they are the agent's words, not the bot's templates.
CANNED_REPLIES: dict[str, dict[str, str]] = {
    "greeting": {
        "es": "Hola, le saluda un ejecutivo. Revisé su caso y estoy aquí para ayudarle.",
        "en": "Hello, this is an agent. I have reviewed your case and I am here to help.",
    },
    "checking": {
        "es": "Gracias por su paciencia; estoy revisando la información y le respondo en unos minutos.",
        "en": "Thank you for your patience; I am checking the details and will reply in a few minutes.",
    },
    "payment_received": {
        "es": "Confirmamos la recepción de su pago. Gracias.",
        "en": "We confirm we have received your payment. Thank you.",
    },
    "closing": {
        "es": "¿Hay algo más en que pueda ayudarle? Si no, doy por cerrada esta conversación.",
        "en": "Is there anything else I can help you with? If not, I will close this conversation.",
    },
}


class ConsoleError(Exception):
    """An action the console refuses; the message is shown to the agent."""


class NotAllowed(ConsoleError):
    """The agent's role or the conversation's assignment does not permit this."""


class NotFound(ConsoleError):
    pass


@dataclass(frozen=True, slots=True)
class Actor:
    id: int
    role: str

    @property
    def name(self) -> str:
        return f"agent:{self.id}"

    def at_least(self, role: str) -> bool:
        return ROLE_RANK.get(self.role, -1) >= ROLE_RANK[role]


# --- sign-in ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginResult:
    agent: Agent | None
    reason: str  # "ok", "invalid", "locked", "inactive"


def authenticate(session: Session, email: str, password: str, now: datetime, ip: str | None = None) -> LoginResult:
    """Check a password; the 5th wrong one in a row locks the account for 15 minutes. Caller commits."""
    agent = session.scalars(select(Agent).where(Agent.email == email.strip().lower())).one_or_none()
    if agent is None:
        verify_password(_dummy_hash(), password)  # same work as a real check: timing does not reveal emails
        return LoginResult(None, "invalid")
    if agent.locked_until is not None and agent.locked_until > now:
        record(session, "anonymous", "agent.login_refused", agent, reason="locked", ip=ip)
        return LoginResult(None, "locked")
    if not verify_password(agent.password_hash, password):
        agent.failed_logins += 1
        record(session, "anonymous", "agent.login_failed", agent, failures=agent.failed_logins, ip=ip)
        if agent.failed_logins >= MAX_FAILED_LOGINS:
            agent.locked_until, agent.failed_logins = now + LOCKOUT, 0
            record(session, "system", "agent.locked_out", agent, until=agent.locked_until.isoformat())
            return LoginResult(None, "locked")
        return LoginResult(None, "invalid")
    if not agent.active:
        record(session, "anonymous", "agent.login_refused", agent, reason="inactive", ip=ip)
        return LoginResult(None, "inactive")
    agent.failed_logins, agent.locked_until, agent.last_login_at = 0, None, now
    record(session, f"agent:{agent.id}", "agent.logged_in", agent, ip=ip)
    return LoginResult(agent, "ok")


@cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


# --- reading ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InboxRow:
    conversation_id: int
    debtor_name: str
    channel: str
    reason: str | None
    handoff_at: datetime | None
    waiting: timedelta
    sla_due_at: datetime | None
    overdue: bool
    assigned_agent_id: int | None
    assigned_agent_name: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.conversation_id,
            "debtor_name": self.debtor_name,
            "channel": self.channel,
            "reason": self.reason,
            "handoff_at": self.handoff_at.isoformat() if self.handoff_at else None,
            "waiting_seconds": int(self.waiting.total_seconds()),
            "waiting": format_waiting(self.waiting),
            "sla_due_at": self.sla_due_at.isoformat() if self.sla_due_at else None,
            "overdue": self.overdue,
            "assigned_agent_id": self.assigned_agent_id,
            "assigned_agent_name": self.assigned_agent_name,
        }


def format_waiting(waiting: timedelta) -> str:
    minutes = max(int(waiting.total_seconds() // 60), 0)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def waiting_conversations(session: Session, now: datetime) -> list[InboxRow]:
    """Conversations waiting for a person, longest-waiting first."""
    rows = session.execute(
        select(Conversation, Debtor.name, Agent.id, Agent.name, Agent.email)
        .join(Debtor, Debtor.id == Conversation.debtor_id)
        .outerjoin(Agent, Agent.id == Conversation.assigned_agent_id)
        .where(Conversation.mode == "human")
        .order_by(Conversation.handoff_at.asc(), Conversation.id.asc())
    ).all()
    result = []
    for conversation, debtor_name, agent_id, agent_name, agent_email in rows:
        since = conversation.handoff_at or conversation.updated_at
        due = since + HANDOFF_SLA if since else None
        result.append(
            InboxRow(
                conversation_id=conversation.id,
                debtor_name=debtor_name,
                channel=conversation.channel,
                reason=conversation.handoff_reason,
                handoff_at=conversation.handoff_at,
                waiting=now - since if since else timedelta(0),
                sla_due_at=due,
                overdue=due is not None and now > due,
                assigned_agent_id=agent_id,
                assigned_agent_name=(agent_name or agent_email) if agent_id else None,
            )
        )
    return result


def message_json(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "direction": message.direction,
        "body": message.body,
        "media": [url for url in message.media or [] if isinstance(url, str) and is_web_link(url)],
        "template_key": message.template_key,
        "delivery_status": message.delivery_status,
        "sent_by_agent_id": message.sent_by_agent_id,
        "source": message.knowledge_source,
        "created_at": message.created_at.isoformat(),
    }


def is_web_link(url: str) -> bool:
    """Only http(s) links are shown as links: a javascript: URL from a provider payload must stay text."""
    return url.startswith(("https://", "http://"))


def thread(session: Session, conversation_id: int, after: int = 0, limit: int = 500) -> list[Message]:
    """The conversation's messages in both directions, oldest first (newest last)."""
    return list(
        session.scalars(
            select(Message)
            .where(Message.conversation_id == conversation_id, Message.id > after)
            .order_by(Message.id)
            .limit(limit)
        )
    )


def notes(session: Session, conversation_id: int) -> list[AuditEvent]:
    return list(
        session.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.subject_type == "conversation",
                AuditEvent.subject_id == str(conversation_id),
                AuditEvent.action == "note.added",
            )
            .order_by(AuditEvent.id)
        )
    )


def window_open(conversation: Conversation, now: datetime) -> bool:
    """WhatsApp accepts free text only within 24 h of the debtor's last message; other channels always do."""
    if conversation.channel != "whatsapp":
        return True
    last = conversation.last_inbound_at
    return last is not None and now - last < WHATSAPP_WINDOW


def opted_out(session: Session, conversation: Conversation) -> bool:
    blocked = opted_out_channels(session, conversation.debtor_id)
    return "all" in blocked or conversation.channel in blocked


def agents(session: Session) -> list[Agent]:
    return list(session.scalars(select(Agent).where(Agent.active.is_(True)).order_by(Agent.name, Agent.email)))


# --- acting -----------------------------------------------------------------------------------------------


@dataclass
class Console:
    """The agent actions; each runs under the conversation's lock in one transaction, audited."""

    database: Database
    locks: ConversationLocks
    clock: Clock
    whatsapp_templates: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @contextmanager
    def _locked(self, conversation_id: int) -> Iterator[tuple[UnitOfWork, Conversation]]:
        # The same lock key as the inbound path, so an agent action and a debtor message never interleave.
        with self.database.session() as session:
            key = session.execute(
                select(Conversation.debtor_id, Conversation.channel).where(Conversation.id == conversation_id)
            ).one_or_none()
        if key is None:
            raise NotFound(f"conversation {conversation_id} not found")
        with self.locks.hold(lock_key(key[0], key[1])), self.database.unit_of_work() as uow:
            yield uow, uow.lock_conversation(conversation_id)

    def claim(self, conversation_id: int, actor: Actor) -> None:
        with self._locked(conversation_id) as (uow, conversation):
            _require_human(conversation)
            if conversation.assigned_agent_id not in (None, actor.id) and not actor.at_least("manager"):
                raise NotAllowed("this conversation is already assigned to another agent")
            previous = conversation.assigned_agent_id
            conversation.assigned_agent_id = actor.id
            record(uow.session, actor.name, "conversation.claimed", conversation, previous_agent_id=previous)
            uow.commit()

    def assign(self, conversation_id: int, actor: Actor, agent_id: int | None) -> None:
        if not actor.at_least("manager"):
            raise NotAllowed("only managers can assign conversations")
        with self._locked(conversation_id) as (uow, conversation):
            _require_human(conversation)
            if agent_id is not None:
                target = uow.session.get(Agent, agent_id)
                if target is None or not target.active:
                    raise ConsoleError("no active agent with that id")
            previous = conversation.assigned_agent_id
            conversation.assigned_agent_id = agent_id
            record(uow.session, actor.name, "conversation.assigned", conversation, agent_id=agent_id, previous=previous)
            uow.commit()

    def reply(self, conversation_id: int, actor: Actor, text: str = "", template_key: str | None = None) -> int:
        """Queue the agent's message in the outbox (the dispatcher sends it); returns the message id."""
        text = text.strip()
        with self._locked(conversation_id) as (uow, conversation):
            session = uow.session
            _require_actor_may_act(conversation, actor)
            if opted_out(session, conversation):
                raise ConsoleError(f"the debtor opted out of {conversation.channel}; nothing was queued")
            now = self.clock()
            if template_key:
                text = self._render_template(session, conversation, template_key)
            elif not window_open(conversation, now):
                raise ConsoleError("the WhatsApp 24-hour window is closed: choose an approved template")
            if not text:
                raise ConsoleError("the reply is empty")
            if len(text) > MAX_TEXT:
                raise ConsoleError(f"the reply is longer than {MAX_TEXT} characters")
            if conversation.assigned_agent_id is None:
                conversation.assigned_agent_id = actor.id
            message = Message(
                conversation_id=conversation.id,
                debtor_id=conversation.debtor_id,
                direction="out",
                channel=conversation.channel,
                body=text,
                template_key=template_key or None,
                delivery_status="queued",
                sent_by_agent_id=actor.id,
                created_at=now,
            )
            session.add(message)
            session.flush()
            session.add(
                Outbox(message_id=message.id, channel=conversation.channel, initiated_by="agent", next_attempt_at=now)
            )
            record(session, actor.name, "message.queued_by_agent", message, conversation_id=conversation.id)
            uow.commit()
            logger.info("agent %s queued message %s in conversation %s", actor.id, message.id, conversation.id)
            return message.id

    def _render_template(self, session: Session, conversation: Conversation, template_key: str) -> str:
        if template_key not in self.whatsapp_templates:
            raise ConsoleError("that template is not an approved WhatsApp template")
        debtor = session.get_one(Debtor, conversation.debtor_id)
        facts: dict[str, Any] = {"creditor_name": debtor.creditor.name, "debtor_name": debtor.name}
        invoices = open_invoices(session, debtor.id)
        totals = balances(invoices)
        if len(totals) == 1:
            facts["balance"], facts["due_date"] = totals[0], min(invoice.due_date for invoice in invoices)
        try:
            return TemplateRenderer.from_session(session).render(template_key, debtor.locale, "whatsapp", facts)
        except TemplateError as exc:
            raise ConsoleError(f"template {template_key} cannot be filled in from the console: {exc}") from exc

    def add_note(self, conversation_id: int, actor: Actor, text: str) -> None:
        text = text.strip()
        if not text or len(text) > MAX_TEXT:
            raise ConsoleError(f"a note needs between 1 and {MAX_TEXT} characters")
        with self._locked(conversation_id) as (uow, conversation):
            record(uow.session, actor.name, "note.added", conversation, text=text)
            uow.commit()

    def resolve(self, conversation_id: int, actor: Actor) -> None:
        with self._locked(conversation_id) as (uow, conversation):
            _require_actor_may_act(conversation, actor)
            conversation.mode = "closed"
            record(uow.session, actor.name, "conversation.resolved", conversation)
            uow.commit()

    def return_to_bot(self, conversation_id: int, actor: Actor) -> None:
        """The bot takes over again from the flow's start; a verified identity stays verified."""
        with self._locked(conversation_id) as (uow, conversation):
            _require_actor_may_act(conversation, actor)
            conversation.mode = "bot"
            conversation.node = _restart_node(conversation)
            # Half-finished talk is not resumed; a hardship flag still matters to the bot's offers.
            conversation.slots = {"hardship": True} if conversation.slots.get("hardship") else {}
            conversation.assigned_agent_id = None
            record(uow.session, actor.name, "conversation.returned_to_bot", conversation, node=conversation.node)
            uow.commit()


def _restart_node(conversation: Conversation) -> str:
    try:
        flow = default_flow(conversation.flow_name)
    except (FlowError, OSError):
        return "start"
    if conversation.identity_verified_at is not None and flow.verified_start:
        return flow.verified_start
    return flow.start


def _require_human(conversation: Conversation) -> None:
    if conversation.mode != "human":
        raise ConsoleError("this conversation is not waiting for a person")


def _require_actor_may_act(conversation: Conversation, actor: Actor) -> None:
    _require_human(conversation)
    if conversation.assigned_agent_id not in (None, actor.id) and not actor.at_least("manager"):
        raise NotAllowed("this conversation is assigned to another agent")
