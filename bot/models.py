"""SQLAlchemy 2.x typed ORM models for the whole domain.

Money is integer minor units plus an ISO 4217 code; timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, ORMExecuteState, Session, mapped_column, relationship

from bot.domain import utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always returns them aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; Cobrabot stores only aware UTC timestamps")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


MinorUnits = BigInteger().with_variant(Integer(), "sqlite")
MAX_PROVIDER_ID_LENGTH = 998


def _money(nullable: bool = False) -> Mapped[Any]:
    return mapped_column(MinorUnits, nullable=nullable)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Creditor(Timestamped, Base):
    """A company whose portfolio of invoices Cobrabot collects."""

    __tablename__ = "creditors"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2), default="CL")
    currency: Mapped[str] = mapped_column(String(3), default="CLP")
    default_locale: Mapped[str] = mapped_column(String(16), default="es")
    timezone: Mapped[str] = mapped_column(String(64), default="America/Santiago")
    verification_method: Mapped[str] = mapped_column(String(32), default="national_id_last4")
    negotiation_policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    compliance_rules: Mapped[dict[str, Any]] = mapped_column(default=dict)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)

    debtors: Mapped[list[Debtor]] = relationship(back_populates="creditor")


class Debtor(Timestamped, Base):
    __tablename__ = "debtors"
    __table_args__ = (UniqueConstraint("creditor_id", "external_ref"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    creditor_id: Mapped[int] = mapped_column(ForeignKey("creditors.id", ondelete="CASCADE"), index=True)
    external_ref: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(20), index=True)
    email: Mapped[str | None] = mapped_column(String(254), index=True)
    telegram_chat_id: Mapped[str | None] = mapped_column(String(32), index=True)
    locale: Mapped[str] = mapped_column(String(16), default="es")
    timezone: Mapped[str] = mapped_column(String(64), default="America/Santiago")
    country: Mapped[str | None] = mapped_column(String(2))
    channel_preference: Mapped[list[Any]] = mapped_column(default=list)
    national_id_hash: Mapped[str | None] = mapped_column(String(128))
    birth_date_hash: Mapped[str | None] = mapped_column(String(128))
    risk_score: Mapped[float | None]
    risk_factors: Mapped[dict[str, Any]] = mapped_column(default=dict)
    segment: Mapped[str | None] = mapped_column(String(32))
    collection_paused_until: Mapped[datetime | None]

    creditor: Mapped[Creditor] = relationship(back_populates="debtors")
    invoices: Mapped[list[Invoice]] = relationship(back_populates="debtor", order_by="Invoice.due_date")


class Invoice(Timestamped, Base):
    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("creditor_id", "number"),
        CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
        CheckConstraint("balance_minor >= 0", name="balance_not_negative"),
        Index("ix_invoices_debtor_status_due", "debtor_id", "status", "due_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    creditor_id: Mapped[int] = mapped_column(ForeignKey("creditors.id", ondelete="CASCADE"))
    debtor_id: Mapped[int] = mapped_column(ForeignKey("debtors.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500))
    amount_minor: Mapped[int] = _money()
    balance_minor: Mapped[int] = _money()
    currency: Mapped[str] = mapped_column(String(3))
    issued_on: Mapped[date | None]
    due_date: Mapped[date]
    status: Mapped[str] = mapped_column(String(16), default="open")

    debtor: Mapped[Debtor] = relationship(back_populates="invoices")


INVOICE_STATUSES = ("open", "paid", "disputed", "written_off", "cancelled")


class Agent(Timestamped, Base):
    """A person who logs into the console: agent, manager or admin."""

    __tablename__ = "agents"
    __table_args__ = (CheckConstraint("role IN ('agent', 'manager', 'admin')", name="role_known"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="agent")
    active: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]


class Conversation(Timestamped, Base):
    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_debtor_channel", "debtor_id", "channel"),
        Index("ix_conversations_mode", "mode"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    debtor_id: Mapped[int] = mapped_column(ForeignKey("debtors.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(254))
    flow_name: Mapped[str] = mapped_column(String(64), default="collections")
    flow_version: Mapped[int] = mapped_column(default=1)
    node: Mapped[str] = mapped_column(String(64), default="start")
    slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    mode: Mapped[str] = mapped_column(String(8), default="bot")
    handoff_reason: Mapped[str | None] = mapped_column(String(64))
    handoff_at: Mapped[datetime | None]
    assigned_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    identity_verified_at: Mapped[datetime | None]
    failed_verifications: Mapped[int] = mapped_column(default=0)
    last_inbound_at: Mapped[datetime | None]
    last_outbound_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(default=1)

    # Optimistic locking: a stale writer gets StaleDataError instead of overwriting a newer state.
    __mapper_args__ = {"version_id_col": version}

    debtor: Mapped[Debtor] = relationship()
    messages: Mapped[list[Message]] = relationship(back_populates="conversation", order_by="Message.id")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("channel", "provider_message_id"),
        CheckConstraint("direction IN ('in', 'out')", name="direction_known"),
        Index("ix_messages_conversation", "conversation_id", "id"),
        Index("ix_messages_debtor_created", "debtor_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    debtor_id: Mapped[int] = mapped_column(ForeignKey("debtors.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(3))
    channel: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text, default="")
    media: Mapped[list[Any]] = mapped_column(default=list)
    template_key: Mapped[str | None] = mapped_column(String(100))
    # Up to a whole header line (RFC 5322: 998 characters): email Message-IDs can be long; webhooks refuse longer.
    provider_message_id: Mapped[str | None] = mapped_column(String(MAX_PROVIDER_ID_LENGTH))
    delivery_status: Mapped[str] = mapped_column(String(16), default="received")
    error_code: Mapped[str | None] = mapped_column(String(32))
    intent: Mapped[str | None] = mapped_column(String(32))
    confidence: Mapped[float | None]
    sent_by_agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    # The knowledge-base document a reply quoted ("faq" answers), shown to agents beside the message.
    knowledge_source: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_updated_at: Mapped[datetime | None]

    conversation: Mapped[Conversation | None] = relationship(back_populates="messages")


class Outbox(Base):
    """Transactional outbox: one row per message to send, leased by a dispatcher."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), unique=True)
    channel: Mapped[str] = mapped_column(String(16))
    initiated_by: Mapped[str] = mapped_column(String(8), default="reply")  # reply | bot | agent
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    decision_reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    message: Mapped[Message] = relationship()


payment_plan_invoices = Table(
    "payment_plan_invoices",
    Base.metadata,
    Column("plan_id", ForeignKey("payment_plans.id", ondelete="CASCADE"), primary_key=True),
    Column("invoice_id", ForeignKey("invoices.id", ondelete="CASCADE"), primary_key=True),
)


class PaymentPlan(Timestamped, Base):
    __tablename__ = "payment_plans"
    __table_args__ = (CheckConstraint("total_minor >= 0", name="total_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    debtor_id: Mapped[int] = mapped_column(ForeignKey("debtors.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default="proposed")
    currency: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int] = _money()
    down_payment_minor: Mapped[int] = mapped_column(MinorUnits, default=0)
    discount_minor: Mapped[int] = mapped_column(MinorUnits, default=0)
    installment_count: Mapped[int]
    terms: Mapped[dict[str, Any]] = mapped_column(default=dict)
    accepted_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]

    invoices: Mapped[list[Invoice]] = relationship(secondary=payment_plan_invoices)
    installments: Mapped[list[Installment]] = relationship(
        back_populates="plan", order_by="Installment.seq", cascade="all, delete-orphan"
    )


class Installment(Base):
    __tablename__ = "installments"
    __table_args__ = (
        UniqueConstraint("plan_id", "seq"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("payment_plans.id", ondelete="CASCADE"))
    seq: Mapped[int]
    due_date: Mapped[date]
    amount_minor: Mapped[int] = _money()
    paid_minor: Mapped[int] = mapped_column(MinorUnits, default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending")

    plan: Mapped[PaymentPlan] = relationship(back_populates="installments")


class PromiseToPay(Timestamped, Base):
    __tablename__ = "promises_to_pay"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    debtor_id: Mapped[int] = mapped_column(ForeignKey("debtors.id", ondelete="CASCADE"), index=True)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id", ondelete="SET NULL"))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    amount_minor: Mapped[int] = _money()
    currency: Mapped[str] = mapped_column(String(3))
    promised_date: Mapped[date]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    resolved_at: Mapped[datetime | None]


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("provider", "provider_payment_id"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    creditor_id: Mapped[int] = mapped_column(ForeignKey("creditors.id", ondelete="CASCADE"))
    debtor_id: Mapped[int | None] = mapped_column(ForeignKey("debtors.id", ondelete="SET NULL"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_payment_id: Mapped[str] = mapped_column(String(128))
    amount_minor: Mapped[int] = _money()
    currency: Mapped[str] = mapped_column(String(3))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    reference: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="confirmed")
    match_status: Mapped[str] = mapped_column(String(16), default="matched")
    refunded_minor: Mapped[int] = mapped_column(MinorUnits, default=0)
    raw: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    allocations: Mapped[list[PaymentAllocation]] = relationship(back_populates="payment", cascade="all, delete-orphan")


class PaymentAllocation(Base):
    """How much of a payment went to an invoice or installment; neither set means credit on account."""

    __tablename__ = "payment_allocations"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    payment_id: Mapped[int] = mapped_column(ForeignKey("payments.id", ondelete="CASCADE"), index=True)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id", ondelete="SET NULL"))
    installment_id: Mapped[int | None] = mapped_column(ForeignKey("installments.id", ondelete="SET NULL"))
    amount_minor: Mapped[int] = _money()

    payment: Mapped[Payment] = relationship(back_populates="allocations")


class PaymentLink(Base):
    __tablename__ = "payment_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    debtor_id: Mapped[int] = mapped_column(ForeignKey("debtors.id", ondelete="CASCADE"), index=True)
    token: Mapped[str] = mapped_column(String(255), unique=True)
    short_code: Mapped[str] = mapped_column(String(16), unique=True)
    provider: Mapped[str] = mapped_column(String(32), default="portal")
    purpose: Mapped[str] = mapped_column(String(16), default="invoice")
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id", ondelete="SET NULL"))
    installment_id: Mapped[int | None] = mapped_column(ForeignKey("installments.id", ondelete="SET NULL"))
    amount_minor: Mapped[int] = _money()
    currency: Mapped[str] = mapped_column(String(3))
    url: Mapped[str | None] = mapped_column(String(1000))
    provider_ref: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active")
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Case(Timestamped, Base):
    """Work for a person: a dispute, a reconciliation question, a handoff, hardship."""

    __tablename__ = "cases"
    __table_args__ = (Index("ix_cases_status_sla", "status", "sla_due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    debtor_id: Mapped[int] = mapped_column(ForeignKey("debtors.id", ondelete="CASCADE"), index=True)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id", ondelete="SET NULL"))
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(16), default="open")
    reason: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(32))
    sla_due_at: Mapped[datetime | None]
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    resolved_at: Mapped[datetime | None]

    debtor: Mapped[Debtor] = relationship()


class FlowVersion(Base):
    __tablename__ = "flow_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="draft")  # draft | published | archived
    source: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[datetime | None]


class Template(Base):
    """A manager's override of a debtor-facing text; defaults ship in flows/templates/<locale>.yaml."""

    __tablename__ = "templates"
    __table_args__ = (UniqueConstraint("key", "locale", "channel"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(100))
    locale: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16), default="*")
    body: Mapped[str] = mapped_column(Text)
    whatsapp_content_sid: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(default=1)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ConsentOptOut(Base):
    """A debtor's opt-out from one channel, or from everything (channel = 'all')."""

    __tablename__ = "consent_opt_outs"
    __table_args__ = (Index("ix_opt_outs_debtor_channel", "debtor_id", "channel"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    debtor_id: Mapped[int] = mapped_column(ForeignKey("debtors.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))  # keyword | nlu | agent | provider | portal | api
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Cadence(Timestamped, Base):
    """A reminder sequence per creditor and segment: steps at day offsets from the due date."""

    __tablename__ = "cadences"
    __table_args__ = (UniqueConstraint("creditor_id", "segment"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    creditor_id: Mapped[int] = mapped_column(ForeignKey("creditors.id", ondelete="CASCADE"))
    segment: Mapped[str] = mapped_column(String(32), default="default")
    steps: Mapped[list[Any]] = mapped_column(default=list)
    active: Mapped[bool] = mapped_column(default=True)


class ScheduledReminder(Base):
    """One planned cadence step for one debt; the unique key makes planning it twice impossible."""

    __tablename__ = "scheduled_reminders"
    # No (status, due_at) index: nothing reads reminders that way, and planning writes millions of rows.
    __table_args__ = (UniqueConstraint("invoice_id", "step_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="CASCADE"))
    debtor_id: Mapped[int] = mapped_column(ForeignKey("debtors.id", ondelete="CASCADE"))
    step_key: Mapped[str] = mapped_column(String(64))
    due_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="planned")
    # Indexed: the dispatcher (its compliance gate, and the words it writes) reads the rows of an outbox row.
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"), index=True)
    reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProcessedEvent(Base):
    """Idempotency keys for provider events (Telegram update ids, payment events, ...)."""

    __tablename__ = "processed_events"
    __table_args__ = (UniqueConstraint("source", "event_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboxItem(Base):
    """A provider message accepted by a webhook and not yet run through its conversation (inbound queue mode,
    COBRABOT_INBOUND_QUEUE). Deleted once processed: the stored conversation message is the record."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("channel", "provider_message_id"),
        # The claim reads the oldest pending message of each sender.
        Index("ix_inbox_sender", "channel", "sender", "id"),
        CheckConstraint("status IN ('pending', 'failed')", name="inbox_status_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    sender: Mapped[str] = mapped_column(Text)
    provider_message_id: Mapped[str] = mapped_column(String(MAX_PROVIDER_ID_LENGTH))
    body: Mapped[str] = mapped_column(Text, default="")
    media: Mapped[list[Any]] = mapped_column(default=list)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the adapter's metadata
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(8), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)


class ImportBatch(Base):
    """One imported file; its hash makes re-importing the same file a no-op."""

    __tablename__ = "import_batches"
    __table_args__ = (UniqueConstraint("kind", "sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(500))
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StatementLine(Base):
    """One line of an imported bank statement and how it was reconciled.

    status: matched (a Payment was recorded) | suggested (an agent must confirm the candidate debtor) |
    unmatched (in the reconciliation queue) | confirmed (an agent accepted a suggestion) | ignored.
    The fingerprint (bank, date, amount, description, occurrence) makes overlapping statements import once.
    """

    __tablename__ = "statement_lines"
    __table_args__ = (
        UniqueConstraint("fingerprint"),
        Index("ix_statement_lines_status", "creditor_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("import_batches.id", ondelete="CASCADE"), index=True)
    creditor_id: Mapped[int] = mapped_column(ForeignKey("creditors.id", ondelete="CASCADE"))
    line_no: Mapped[int]
    fingerprint: Mapped[str] = mapped_column(String(64))
    booked_on: Mapped[date]
    amount_minor: Mapped[int] = _money()
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str] = mapped_column(String(500), default="")
    payer_name: Mapped[str | None] = mapped_column(String(200))
    bank_reference: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="unmatched")
    match_rule: Mapped[str | None] = mapped_column(String(32))  # reference | amount | fuzzy_name
    score: Mapped[float | None]
    debtor_id: Mapped[int | None] = mapped_column(ForeignKey("debtors.id", ondelete="SET NULL"))
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id", ondelete="SET NULL"))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id", ondelete="SET NULL"))
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Append-only trail of every action: who did what to which subject, when."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_subject", "subject_type", "subject_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AuditTrailIsAppendOnly(Exception):
    """Raised when code tries to change or delete an audit event through the ORM."""


@event.listens_for(Session, "before_flush")
def _forbid_audit_changes(session: Session, _context: Any, _instances: Any) -> None:
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, AuditEvent) and (obj in session.deleted or session.is_modified(obj)):
            raise AuditTrailIsAppendOnly("audit events cannot be changed or deleted")


@event.listens_for(Session, "do_orm_execute")
def _forbid_bulk_audit_changes(state: ORMExecuteState) -> None:
    # session.execute(update(AuditEvent)) / delete(...) skip the flush, so before_flush alone misses them.
    if (state.is_update or state.is_delete) and any(mapper.class_ is AuditEvent for mapper in state.all_mappers):
        raise AuditTrailIsAppendOnly("audit events cannot be changed or deleted")
