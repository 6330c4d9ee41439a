"""The outbox dispatcher: lease due rows, send through the channel adapter, retry with backoff, fall back.

Nothing is held open during network I/O: a short transaction leases rows, the send happens outside any
transaction, and a second short transaction records the outcome. A worker killed mid-send leaves its lease to
expire, and the row is sent again by whoever leases it next (see docs/delivery.md for that window).
"""

from __future__ import annotations

import logging
import random
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.audit import record
from bot.campaigns import reminder_text
from bot.compliance import ContactPolicy, Decision, load_context
from bot.domain import Clock, DeliveryStatus, OutboundMessage, PermanentError, SendResult, TransientError
from bot.models import ConsentOptOut, Conversation, Debtor, Message, Outbox
from bot.outreach import ADDRESS_OF, opted_out_channels
from bot.ports import ChannelRegistry, UnknownChannel
from bot.ratelimit import DEFAULT_RATES, LocalRateLimiter, Rate, RateLimiter, bucket_keys
from bot.store import Database, UnitOfWork
from bot.templates import TemplateRenderer
from bot.unsubscribe import UnsubscribeLinks

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
# The debtor said no on the provider's side: STOP to Twilio (21610), blocking the bot on Telegram.
PROVIDER_OPT_OUT_CODES = frozenset({"opted_out", "blocked"})
BASE_DELAY_SECONDS = 5.0
MAX_DELAY_SECONDS = 3600.0
WHATSAPP_WINDOW = timedelta(hours=24)
FORCE_TEMPLATE = "force_template"
NOTHING_OWED = "nothing_owed"  # a reminder whose debts were all paid (or disputed, ...) before it went out


def backoff(attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter (5 s, 10 s, 20 s, ... capped at an hour); the provider's
    Retry-After, when given, is a floor."""
    ceiling = min(MAX_DELAY_SECONDS, BASE_DELAY_SECONDS * 2 ** max(attempts - 1, 0))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


@dataclass
class DispatchReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    fell_back: int = 0
    blocked: int = 0
    rate_limited: int = 0
    deferred: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class Dispatcher:
    database: Database
    registry: ChannelRegistry
    clock: Clock
    whatsapp_templates: dict[str, dict[str, str]] = field(default_factory=dict)
    limiter: RateLimiter = field(default_factory=LocalRateLimiter)
    rates: dict[str, Rate] = field(default_factory=lambda: dict(DEFAULT_RATES))
    unsubscribe: UnsubscribeLinks | None = None
    policy: ContactPolicy = field(default_factory=ContactPolicy)
    lease_seconds: float = 120.0
    batch_size: int = 50
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}")

    def run_once(self) -> DispatchReport:
        report = DispatchReport()
        for outbox_id in self._lease():
            self._deliver(outbox_id, report)
        return report

    def _lease(self) -> list[int]:
        now = self.clock()
        with self.database.unit_of_work() as uow:
            query = (
                select(Outbox)
                .where(
                    or_(
                        (Outbox.status == "pending") & (Outbox.next_attempt_at <= now),
                        (Outbox.status == "leased") & (Outbox.lease_until < now),  # its worker died
                    )
                )
                .order_by(Outbox.next_attempt_at, Outbox.id)
                .limit(self.batch_size)
            )
            if self.database.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(uow.session.scalars(query))
            for row in rows:
                row.status = "leased"
                row.lease_owner = self.worker_id
                row.lease_until = now + timedelta(seconds=self.lease_seconds)
            uow.commit()
            return [row.id for row in rows]

    def _deliver(self, outbox_id: int, report: DispatchReport) -> None:
        prepared = self._prepare(outbox_id)
        if prepared == "rate_limited":
            report.rate_limited += 1
            return
        if prepared == "deferred":
            report.deferred += 1
            return
        if not isinstance(prepared, tuple):
            report.blocked += 1
            return
        outbound, channel_name = prepared
        try:
            result = self.registry.get(channel_name).send(outbound)
        except TransientError as exc:
            self._retry(outbox_id, str(exc), exc.retry_after, report)
        except (PermanentError, UnknownChannel) as exc:
            code = exc.code if isinstance(exc, PermanentError) else "channel_disabled"
            self._fail(outbox_id, code, str(exc), report)
        else:
            self._sent(outbox_id, result, report)

    def _prepare(self, outbox_id: int) -> tuple[OutboundMessage, str] | str:
        """The message to send, or why not now: "cancelled" (the compliance gate blocks it: an opt-out, an open
        dispute, ...), "deferred" (quiet hours, caps: back in the queue until allowed), "rate_limited" (the
        sender's bucket is empty), "lost" (our lease was taken). Only a send counts as an attempt."""
        now = self.clock()
        with self.database.unit_of_work() as uow:
            session = uow.session
            row = session.get(Outbox, outbox_id)
            if row is None or row.lease_owner != self.worker_id:
                return "lost"
            message = row.message
            # One debtor's rows are gated one at a time (row lock on PostgreSQL, the write lock on SQLite):
            # caps are counted on what was already cleared, so two workers cannot both pass the same cap.
            debtor = session.get_one(Debtor, message.debtor_id, with_for_update=self.database.dialect == "postgresql")
            forced = (row.decision_reason or "").endswith(FORCE_TEMPLATE)
            decision = self._decide(session, row, debtor, now)
            row.decision_reason = decision.as_stored() + (f";{FORCE_TEMPLATE}" if forced else "")
            if decision.verdict != "allow":
                return self._hold(uow, row, decision)
            if not message.body and message.template_key and row.initiated_by == "bot":
                # A planned reminder: its words are written now, with the balances as of sending.
                body = reminder_text(session, row.id, message.template_key, row.channel, debtor, now)
                if body is None:
                    row.decision_reason = NOTHING_OWED
                    return self._cancel(uow, row, NOTHING_OWED)
                message.body = body
            conversation = session.get(Conversation, message.conversation_id) if message.conversation_id else None
            recipient = conversation.address if conversation else ADDRESS_OF[row.channel](debtor)
            wait = self._rate_wait(row.channel, recipient)
            if wait > 0:
                row.status, row.lease_owner, row.lease_until = "pending", None, None
                row.next_attempt_at = now + timedelta(seconds=wait)
                uow.commit()
                return "rate_limited"
            metadata = {"initiated_by": row.initiated_by, "locale": debtor.locale}
            if row.channel == "email":
                metadata |= self._email_metadata(session, debtor, conversation)
            metadata |= self._whatsapp_template(row.channel, message, conversation, debtor.locale, now, forced)
            outbound = OutboundMessage(
                channel=row.channel,
                recipient=recipient,
                text=_with_disclosure(session, decision, debtor, row.channel, message.body),
                template_key=message.template_key,
                message_id=message.id,
                metadata=metadata,
            )
            row.attempts += 1
            uow.commit()
            return outbound, row.channel

    def _decide(self, session: Session, row: Outbox, debtor: Debtor, now: datetime) -> Decision:
        """The one compliance gate: consent for every message, hours and caps for what the bot starts."""
        template = self._template_sid(row.message.template_key, debtor.locale) is not None
        context = load_context(session, row, now, whatsapp_template_available=template)
        return self.policy.decide(context, now)

    def _hold(self, uow: UnitOfWork, row: Outbox, decision: Decision) -> str:
        if decision.verdict == "defer" and decision.until is not None:
            row.lease_owner, row.lease_until = None, None
            row.status, row.next_attempt_at = "pending", decision.until
            uow.commit()
            return "deferred"
        return self._cancel(uow, row, str(decision.reason))

    def _cancel(self, uow: UnitOfWork, row: Outbox, reason: str) -> str:
        """Never send this row; the caller has stored why in `decision_reason`."""
        row.lease_owner, row.lease_until = None, None
        row.status, row.message.delivery_status = "cancelled", "cancelled"
        record(uow.session, "system", "message.blocked", row.message, reason=reason)
        uow.commit()
        return "cancelled"

    def _email_metadata(self, session: Session, debtor: Debtor, conversation: Conversation | None) -> dict[str, str]:
        """Threading (the debtor's last email) and a one-click unsubscribe link for this channel."""
        # Until the address is verified, even the subject must not name the creditor.
        verified = conversation is None or conversation.identity_verified_at is not None
        key, facts = (
            ("email_subject", {"creditor_name": debtor.creditor.name}) if verified else ("email_subject_public", {})
        )
        subject = TemplateRenderer.from_session(session).render(key, debtor.locale, "email", facts)
        metadata: dict[str, str] = {"subject": subject}
        if self.unsubscribe is not None:
            metadata["unsubscribe_url"] = self.unsubscribe.url(debtor.id, "email")
        if conversation is not None:
            last_inbound = session.scalar(
                select(Message.provider_message_id)
                .where(Message.conversation_id == conversation.id, Message.direction == "in")
                .order_by(Message.id.desc())
                .limit(1)
            )
            if last_inbound:
                metadata["in_reply_to"] = last_inbound
        return metadata

    def _rate_wait(self, channel: str, recipient: str) -> float:
        for key, rate in bucket_keys(channel, recipient, self.rates):
            wait = self.limiter.acquire(key, rate)
            if wait > 0:
                return wait
        return 0.0

    def _whatsapp_template(
        self,
        channel: str,
        message: Message,
        conversation: Conversation | None,
        locale: str,
        now: datetime,
        forced: bool = False,
    ) -> dict[str, object]:
        """Outside WhatsApp's 24-hour window only an approved template (ContentSid) may be sent."""
        if channel != "whatsapp":
            return {}
        last_inbound = conversation.last_inbound_at if conversation else None
        if not forced and last_inbound is not None and now - last_inbound < WHATSAPP_WINDOW:
            return {}
        sid = self._template_sid(message.template_key, locale)
        return {"content_sid": sid, "content_variables": {"1": message.body}} if sid else {}

    def _template_sid(self, template_key: str | None, locale: str) -> str | None:
        sids = self.whatsapp_templates.get(template_key or "", {})
        return sids.get(locale) or sids.get(locale.split("-")[0])

    def _sent(self, outbox_id: int, result: SendResult, report: DispatchReport) -> None:
        try:
            self._record_sent(outbox_id, result.provider_message_id, result.status, None)
        except IntegrityError:
            # The provider answered with an id another message already holds. The message did go out: record it
            # as sent without the id (a retry would send it again) and say why, for whoever reads the trail.
            logger.error("outbox %s: provider id already recorded on another message; stored without it", outbox_id)
            clash = f"provider id {result.provider_message_id} already recorded on another message"
            self._record_sent(outbox_id, None, result.status, clash)
        report.sent += 1

    def _record_sent(self, outbox_id: int, provider_id: str | None, status: str, note: str | None) -> None:
        now = self.clock()
        with self.database.unit_of_work() as uow:
            row = uow.session.get(Outbox, outbox_id)
            if row is None:
                return
            row.status, row.lease_owner, row.lease_until = "sent", None, None
            row.last_error = note or row.last_error
            row.message.provider_message_id = provider_id
            row.message.delivery_status = status
            row.message.status_updated_at = now
            if row.message.conversation_id:
                conversation = uow.session.get(Conversation, row.message.conversation_id)
                if conversation is not None:
                    conversation.last_outbound_at = now
            uow.commit()

    def _retry(self, outbox_id: int, error: str, retry_after: float | None, report: DispatchReport) -> None:
        with self.database.unit_of_work() as uow:
            row = uow.session.get(Outbox, outbox_id)
            if row is None:
                return
            if row.attempts >= MAX_ATTEMPTS:
                uow.rollback()
                self._fail(outbox_id, "retries_exhausted", error, report)
                return
            row.status, row.lease_owner, row.lease_until = "pending", None, None
            row.last_error = error[:2000]
            row.next_attempt_at = self.clock() + timedelta(seconds=backoff(row.attempts, retry_after))
            uow.commit()
        report.retried += 1
        logger.warning("outbox %s: transient failure, attempt %s", outbox_id, row.attempts)

    def _fail(self, outbox_id: int, code: str | None, error: str, report: DispatchReport) -> None:
        now = self.clock()
        with self.database.unit_of_work() as uow:
            session = uow.session
            row = session.get(Outbox, outbox_id)
            if row is None:
                return
            if (
                code == "outside_window"
                and row.decision_reason != FORCE_TEMPLATE
                and self._template_sid(row.message.template_key, _locale_of(session, row))
            ):
                # Twilio 63016: the 24-hour window closed between our check and the send; use the template.
                row.status, row.lease_owner, row.lease_until = "pending", None, None
                row.decision_reason, row.next_attempt_at = FORCE_TEMPLATE, now
                uow.commit()
                report.retried += 1
                return
            row.status, row.lease_owner, row.lease_until = "failed", None, None
            row.last_error = error[:2000]
            row.message.delivery_status, row.message.error_code = "failed", code
            if code in PROVIDER_OPT_OUT_CODES:
                _record_provider_opt_out(session, row, now)
            elif _fall_back(session, row, now):
                report.fell_back += 1
            uow.commit()
        report.failed += 1
        logger.warning("outbox %s failed permanently (%s)", outbox_id, code)


def _with_disclosure(session: Session, decision: Decision, debtor: Debtor, channel: str, body: str) -> str:
    """A first bot contact where the rules demand it starts with the disclosure (e.g. a validation notice)."""
    if not decision.requires_disclosure or not decision.disclosure_template:
        return body
    facts = {"creditor_name": debtor.creditor.name}
    notice = TemplateRenderer.from_session(session).render(decision.disclosure_template, debtor.locale, channel, facts)
    return f"{notice}\n\n{body}"


def _locale_of(session: Session, row: Outbox) -> str:
    debtor = session.get(Debtor, row.message.debtor_id)
    return debtor.locale if debtor else "es"


def _record_provider_opt_out(session: Session, row: Outbox, now: datetime) -> None:
    opt_out = ConsentOptOut(debtor_id=row.message.debtor_id, channel=row.channel, source="provider", created_at=now)
    session.add(opt_out)
    record(session, "system", "consent.opted_out", opt_out, channel=row.channel, via="provider")


def _fall_back(session: Session, row: Outbox, now: datetime) -> bool:
    """Queue the same text on the debtor's next preferred channel that has an address and no opt-out."""
    debtor = session.get(Debtor, row.message.debtor_id)
    if debtor is None:
        return False
    tried = set(
        session.scalars(
            select(Message.channel).where(
                Message.debtor_id == debtor.id, Message.body == row.message.body, Message.direction == "out"
            )
        )
    )
    blocked = opted_out_channels(session, debtor.id)
    for channel in debtor.channel_preference or []:
        if channel in tried or channel in blocked or "all" in blocked or channel not in ADDRESS_OF:
            continue
        if not ADDRESS_OF[channel](debtor):
            continue
        copy = Message(
            debtor_id=debtor.id,
            direction="out",
            channel=channel,
            body=row.message.body,
            template_key=row.message.template_key,
            delivery_status="queued",
            created_at=now,
        )
        session.add(copy)
        session.flush()
        session.add(Outbox(message_id=copy.id, channel=channel, initiated_by=row.initiated_by, next_attempt_at=now))
        record(session, "system", "message.fell_back", copy, from_channel=row.channel, to_channel=channel)
        return True
    return False


STATUS_RANK = {"queued": 0, "accepted": 0, "sending": 0, "sent": 1, "delivered": 2, "read": 3}
TERMINAL = {"failed", "undelivered"}
OPTED_OUT_CODES = {"21610"}


def record_status(session: Session, status: DeliveryStatus, now: datetime) -> bool:
    """Apply a provider's delivery callback; statuses only move forward, a failure is final.

    Returns False when no message has that provider id (a callback for something we did not record:
    the window described in docs/delivery.md, logged for an operator).
    """
    message = session.scalars(
        select(Message).where(
            Message.channel == status.channel, Message.provider_message_id == status.provider_message_id
        )
    ).one_or_none()
    if message is None:
        logger.warning("status %s for unknown %s message %s", status.status, status.channel, status.provider_message_id)
        return False
    current = message.delivery_status
    if current in TERMINAL:
        return True
    if status.status in TERMINAL or STATUS_RANK.get(status.status, -1) > STATUS_RANK.get(current, -1):
        message.delivery_status = status.status
        message.error_code = status.error_code or message.error_code
        message.status_updated_at = now
    if status.status in TERMINAL and status.error_code in OPTED_OUT_CODES:
        opt_out = ConsentOptOut(debtor_id=message.debtor_id, channel=message.channel, source="provider", created_at=now)
        session.add(opt_out)
        record(session, "system", "consent.opted_out", opt_out, channel=message.channel, via="status_callback")
    return True
