"""Apply the engine's domain commands inside the caller's transaction, and audit each one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import singledispatchmethod
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot import commands
from bot.audit import record
from bot.debtors import open_invoices
from bot.models import (
    Case,
    ConsentOptOut,
    Conversation,
    Debtor,
    Installment,
    Invoice,
    PaymentPlan,
    PromiseToPay,
)
from bot.payments.links import create_link
from bot.portal import PortalTokens

# How soon a person must pick up each kind of case.
CASE_SLA = {
    "dispute": timedelta(days=3),
    "reconciliation": timedelta(days=2),
    "hardship": timedelta(days=2),
    "deceased": timedelta(days=5),
    "bankruptcy": timedelta(days=5),
}
HANDOFF_SLA = timedelta(hours=4)
PAYMENT_LINK_LIFETIME = timedelta(days=7)


@dataclass
class Effects:
    """One turn's worth of command application; `outputs` feeds values such as links into the replies."""

    session: Session
    conversation: Conversation
    debtor: Debtor
    now: datetime
    portal: PortalTokens

    def __post_init__(self) -> None:
        self.outputs: dict[str, Any] = {}
        self.created_plan: PaymentPlan | None = None

    def apply_all(self, to_apply: tuple[Any, ...]) -> dict[str, Any]:
        for command in to_apply:
            self.apply(command)
        return self.outputs

    @singledispatchmethod
    def apply(self, command: object) -> None:
        raise TypeError(f"no handler for command {type(command).__name__}")

    @apply.register
    def _(self, command: commands.IdentityVerified) -> None:
        self.conversation.identity_verified_at = self.now
        self.conversation.failed_verifications = 0
        self._audit("identity.verified", self.conversation)

    @apply.register
    def _(self, command: commands.IdentityFailed) -> None:
        self.conversation.failed_verifications += 1
        self._audit("identity.failed", self.conversation, failures=self.conversation.failed_verifications)

    @apply.register
    def _(self, command: commands.SendPaymentLink) -> None:
        installment_id = self._installment_id(command.installment_seq)
        link = create_link(
            self.session,
            self.portal,
            self.debtor,
            command.amount,
            "installment" if installment_id else "settlement",
            now=self.now,
            installment_id=installment_id,
            lifetime=PAYMENT_LINK_LIFETIME,
        )
        self.outputs["link"] = link.url

    @apply.register
    def _(self, command: commands.CreatePlan) -> None:
        offer = command.offer
        plan = PaymentPlan(
            debtor_id=self.debtor.id,
            conversation_id=self.conversation.id,
            status="active",
            currency=offer.total.currency,
            total_minor=offer.total.minor,
            down_payment_minor=offer.down_payment.minor,
            discount_minor=offer.discount.minor,
            installment_count=len(offer.installments),
            terms=offer.to_json(),
            accepted_at=self.now,
            expires_at=offer.expires_at,
            invoices=open_invoices(self.session, self.debtor.id),
        )
        plan.installments = [
            Installment(seq=term.seq, due_date=term.due_date, amount_minor=term.amount.minor)
            for term in offer.installments
        ]
        self.session.add(plan)
        self.session.flush()
        self.created_plan = plan
        self._audit("plan.created", plan, total_minor=plan.total_minor, installments=plan.installment_count)

    @apply.register
    def _(self, command: commands.RecordPromise) -> None:
        invoices = open_invoices(self.session, self.debtor.id)
        promise = PromiseToPay(
            debtor_id=self.debtor.id,
            invoice_id=invoices[0].id if invoices else None,
            conversation_id=self.conversation.id,
            amount_minor=command.amount.minor,
            currency=command.amount.currency,
            promised_date=command.promised_date,
            created_at=self.now,  # payments count toward it from this moment, on the same clock
        )
        self.session.add(promise)
        self._audit("promise.recorded", promise, amount_minor=promise.amount_minor, date=str(promise.promised_date))

    @apply.register
    def _(self, command: commands.OpenCase) -> None:
        case = Case(
            debtor_id=self.debtor.id,
            conversation_id=self.conversation.id,
            kind=command.kind,
            reason=command.reason,
            sla_due_at=self.now + CASE_SLA.get(command.kind, HANDOFF_SLA),
        )
        self.session.add(case)
        if command.kind == "dispute":
            # Cease collecting while the dispute is open: the debt stays owed but leaves every cadence.
            self.session.execute(
                update(Invoice)
                .where(Invoice.debtor_id == self.debtor.id, Invoice.status == "open")
                .values(status="disputed")
            )
        self._audit("case.opened", case, kind=command.kind)

    @apply.register
    def _(self, command: commands.Handoff) -> None:
        self.conversation.mode = "human"
        self.conversation.handoff_reason = command.reason
        self.conversation.handoff_at = self.now
        self._audit("conversation.handed_off", self.conversation, reason=command.reason)

    @apply.register
    def _(self, command: commands.OptOut) -> None:
        channel = "all" if command.scope == "all" else self.conversation.channel
        opt_out = ConsentOptOut(debtor_id=self.debtor.id, channel=channel, source="debtor", created_at=self.now)
        self.session.add(opt_out)
        self._audit("consent.opted_out", opt_out, channel=channel)

    @apply.register
    def _(self, command: commands.MarkWrongPerson) -> None:
        opt_out = ConsentOptOut(
            debtor_id=self.debtor.id, channel=self.conversation.channel, source="wrong_person", created_at=self.now
        )
        self.session.add(opt_out)
        self._audit("address.wrong_person", self.conversation, channel=self.conversation.channel)

    def _installment_id(self, seq: int | None) -> int | None:
        """The id of installment `seq` of the plan created this turn, else of the debtor's active plan."""
        if not seq:
            return None
        plan = (
            self.created_plan
            or self.session.scalars(
                select(PaymentPlan)
                .where(PaymentPlan.debtor_id == self.debtor.id, PaymentPlan.status == "active")
                .order_by(PaymentPlan.id.desc())
            ).first()
        )
        return next((i.id for i in plan.installments if i.seq == seq), None) if plan else None

    def _audit(self, action: str, subject: object, **data: Any) -> None:
        record(self.session, "bot", action, subject, conversation_id=self.conversation.id, **data)
