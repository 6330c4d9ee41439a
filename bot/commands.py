"""Domain commands: what the engine decided should change in the world.

The engine only returns these; bot.conversations applies them in the same transaction as the new
conversation state and the outgoing messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from bot.domain import Money
from bot.negotiation import PlanOffer


@dataclass(frozen=True, slots=True)
class IdentityVerified:
    pass


@dataclass(frozen=True, slots=True)
class IdentityFailed:
    pass


@dataclass(frozen=True, slots=True)
class SendPaymentLink:
    """A payment link for `amount`; `installment_seq` targets an installment of the active plan."""

    amount: Money
    installment_seq: int | None = None


@dataclass(frozen=True, slots=True)
class CreatePlan:
    offer: PlanOffer


@dataclass(frozen=True, slots=True)
class RecordPromise:
    amount: Money
    promised_date: date


@dataclass(frozen=True, slots=True)
class OpenCase:
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class Handoff:
    reason: str


@dataclass(frozen=True, slots=True)
class OptOut:
    scope: str  # "channel" or "all"


@dataclass(frozen=True, slots=True)
class MarkWrongPerson:
    pass


Command = (
    IdentityVerified
    | IdentityFailed
    | SendPaymentLink
    | CreatePlan
    | RecordPromise
    | OpenCase
    | Handoff
    | OptOut
    | MarkWrongPerson
)
