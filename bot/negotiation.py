"""Payment-plan negotiation: what the bot may offer, how it answers a counter-offer, and the independent
check every plan passes before it is accepted. Pure logic: no I/O, no clock, no ORM (see docs/negotiation.md).

A plan is an optional down payment on `first_date` followed by installments, one interval apart; with no
down payment the first installment is due on `first_date`. A plan of one installment and no down payment is
"payment in full" and is exempt from the down-payment and minimum-installment rules (it pays everything at once).
"""

from __future__ import annotations

import calendar
import enum
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from bot.domain import Money

_AS_NUMBER = PlainSerializer(float, return_type=float, when_used="json")
Percent = Annotated[Decimal, Field(ge=0, le=100, decimal_places=2), _AS_NUMBER]
DiscountPercent = Annotated[Decimal, Field(ge=0, lt=100, decimal_places=2), _AS_NUMBER]
Count = Annotated[int, Field(ge=1, le=120)]
MinorUnits = Annotated[int, Field(ge=0)]
Days = Annotated[int, Field(ge=0, le=366)]
Hours = Annotated[int, Field(ge=1, le=24 * 90)]
Interval = Literal["monthly"] | Annotated[int, Field(ge=1, le=366)]


class PolicyTerms(BaseModel):
    """One set of limits. Amounts are minor units of the creditor's currency; percentages allow 2 decimals."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_installments: Count = 6
    min_down_payment_pct: Percent = Decimal(10)
    min_installment_minor: MinorUnits = 0
    installment_interval: Interval = "monthly"
    max_first_payment_delay_days: Days = 7
    full_payment_discount_pct: DiscountPercent = Decimal(0)
    full_payment_deadline_days: Days | None = None
    offer_expiry_hours: Hours = 48

    def problems(self) -> list[str]:
        """Settings that parse but contradict each other; the console refuses to save a policy with any."""
        found = []
        if self.min_down_payment_pct == 100 and self.max_installments > 1:
            found.append("min_down_payment_pct 100 leaves nothing to split: max_installments > 1 is pointless")
        if self.full_payment_discount_pct > 0 and self.full_payment_deadline_days is None:
            found.append("full_payment_discount_pct is set but full_payment_deadline_days is not")
        if self.full_payment_discount_pct == 0 and self.full_payment_deadline_days is not None:
            found.append("full_payment_deadline_days is set but there is no full_payment_discount_pct")
        return found


class HardshipTerms(BaseModel):
    """Overrides for debtors in hardship; fields left out (or null) keep the normal policy's value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_installments: Count | None = None
    min_down_payment_pct: Percent | None = None
    min_installment_minor: MinorUnits | None = None
    installment_interval: Interval | None = None
    max_first_payment_delay_days: Days | None = None
    full_payment_discount_pct: DiscountPercent | None = None
    full_payment_deadline_days: Days | None = None
    offer_expiry_hours: Hours | None = None


def _default_hardship() -> HardshipTerms:
    return HardshipTerms(max_installments=12, min_down_payment_pct=Decimal(0))


class NegotiationPolicy(PolicyTerms):
    """A creditor's policy, parsed from Creditor.negotiation_policy ({} gives DEFAULT_POLICY)."""

    hardship: HardshipTerms | None = Field(default_factory=_default_hardship)

    def terms(self, hardship: bool = False) -> PolicyTerms:
        """The limits in force: the normal ones, or with the hardship overrides applied."""
        values = self.model_dump(exclude={"hardship"})
        if hardship and self.hardship is not None:
            values.update(self.hardship.model_dump(exclude_none=True))
        return PolicyTerms.model_validate(values)

    def to_json(self) -> dict[str, Any]:
        """What to store in Creditor.negotiation_policy: model_validate(policy.to_json()) == policy."""
        data = self.model_dump(mode="json", exclude_none=True)
        # An explicit null keeps "no hardship variant" from reverting to the default variant.
        data["hardship"] = self.hardship.model_dump(mode="json", exclude_none=True) if self.hardship else None
        return data

    def problems(self) -> list[str]:
        found = super().problems()
        if self.hardship is None:
            return found
        relief = self.terms(hardship=True)
        found += [f"hardship: {problem}" for problem in relief.problems() if problem not in found]
        stricter = [
            ("max_installments", relief.max_installments < self.max_installments),
            ("min_down_payment_pct", relief.min_down_payment_pct > self.min_down_payment_pct),
            ("min_installment_minor", relief.min_installment_minor > self.min_installment_minor),
            ("max_first_payment_delay_days", relief.max_first_payment_delay_days < self.max_first_payment_delay_days),
        ]
        found += [f"hardship.{name} is stricter than the normal policy's" for name, worse in stricter if worse]
        return found


DEFAULT_POLICY = NegotiationPolicy()


class OfferKind(enum.StrEnum):
    FULL_DISCOUNT = "full_discount"
    INSTALLMENTS = "installments"


class Reason(enum.StrEnum):
    """Stable codes; templates explain them in the debtor's language. check() also uses the last group."""

    WITHIN_POLICY = "within_policy"
    TOO_MANY_INSTALLMENTS = "too_many_installments"
    INSTALLMENT_BELOW_MINIMUM = "installment_below_minimum"
    DOWN_PAYMENT_BELOW_MINIMUM = "down_payment_below_minimum"
    FIRST_DATE_TOO_LATE = "first_date_too_late"
    FIRST_DATE_IN_PAST = "first_date_in_past"
    DOES_NOT_COVER_BALANCE = "does_not_cover_balance"
    WRONG_CURRENCY = "wrong_currency"
    NOTHING_OWED = "nothing_owed"
    BALANCE_CHANGED = "balance_changed"
    SUM_MISMATCH = "sum_mismatch"
    INVALID_AMOUNT = "invalid_amount"
    SCHEDULE_MISMATCH = "schedule_mismatch"
    DISCOUNT_NOT_ALLOWED = "discount_not_allowed"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class InstallmentTerm:
    seq: int
    due_date: date
    amount: Money


@dataclass(frozen=True, slots=True)
class PlanOffer:
    """Terms offered to a debtor: down_payment (if any) is due on first_date, then the installments."""

    kind: OfferKind
    total: Money
    discount: Money
    down_payment: Money
    first_date: date
    installments: tuple[InstallmentTerm, ...]
    expires_at: datetime

    def __post_init__(self) -> None:
        if self.expires_at.tzinfo is None:
            raise ValueError("PlanOffer.expires_at must be timezone-aware")

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict for conversation slots and PaymentPlan.terms; from_json reverses it."""
        return {
            "kind": self.kind.value,
            "currency": self.total.currency,
            "total_minor": self.total.minor,
            "discount_minor": self.discount.minor,
            "down_payment_minor": self.down_payment.minor,
            "first_date": self.first_date.isoformat(),
            "installments": [[term.seq, term.due_date.isoformat(), term.amount.minor] for term in self.installments],
            "expires_at": self.expires_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlanOffer:
        currency = data["currency"]
        return cls(
            kind=OfferKind(data["kind"]),
            total=Money(data["total_minor"], currency),
            discount=Money(data["discount_minor"], currency),
            down_payment=Money(data["down_payment_minor"], currency),
            first_date=date.fromisoformat(data["first_date"]),
            installments=tuple(
                InstallmentTerm(seq, date.fromisoformat(due), Money(minor, currency))
                for seq, due, minor in data["installments"]
            ),
            expires_at=datetime.fromisoformat(data["expires_at"]),
        )


@dataclass(frozen=True, slots=True)
class CounterOffer:
    """What the debtor asked for; any field may be missing, but not all of them."""

    installments: int | None = None
    installment_amount: Money | None = None
    down_payment: Money | None = None
    first_date: date | None = None

    def __post_init__(self) -> None:
        if (self.installments, self.installment_amount, self.down_payment, self.first_date) == (None,) * 4:
            raise ValueError("a counter-offer must ask for something")
        if self.installments is not None and self.installments < 1:
            raise ValueError("installments must be at least 1")
        if self.installment_amount is not None and self.installment_amount.minor <= 0:
            raise ValueError("installment_amount must be positive")
        if self.down_payment is not None and self.down_payment.minor < 0:
            raise ValueError("down_payment cannot be negative")

    def amounts(self) -> tuple[Money, ...]:
        return tuple(money for money in (self.installment_amount, self.down_payment) if money is not None)


@dataclass(frozen=True, slots=True)
class Limits:
    """The policy's limits for one balance, for templates explaining a refusal."""

    max_installments: int
    min_installment: Money
    min_down_payment: Money
    earliest_first_date: date
    latest_first_date: date
    full_payment_discount: Money
    full_payment_deadline: date | None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """accepted is set only when the counter is within policy as asked; closest is the nearest acceptable plan."""

    reason: Reason
    limits: Limits
    accepted: PlanOffer | None
    closest: PlanOffer | None


@dataclass(frozen=True, slots=True)
class Violation:
    code: Reason
    message: str


def propose(
    policy: NegotiationPolicy, balance: Money, today: date, now: datetime, hardship: bool = False
) -> list[PlanOffer]:
    """The menu: pay in full (discounted if allowed), the shortest split and the longest split, deduplicated."""
    _require_aware(now)
    if balance.minor <= 0:
        return []
    terms = policy.terms(hardship)
    deadline = _discount_deadline(terms, today)
    full_by = deadline if deadline is not None and _max_discount(terms, balance.minor) else today
    offers = [_pay_in_full(terms, balance, full_by, today, now)]
    down = _min_down(terms, balance.minor)
    for count in (1 if down else 2, _max_count(terms, balance.minor - down)):
        if _is_valid_split(terms, balance.minor, down, count):
            offers.append(_plan(terms, balance, down, count, today, now))
    return list(dict.fromkeys(offers))


def evaluate(
    policy: NegotiationPolicy,
    balance: Money,
    counter: CounterOffer,
    today: date,
    now: datetime,
    hardship: bool = False,
) -> Evaluation:
    """Accept the counter-offer if it is within policy, else say why (first rule broken) and what is closest."""
    _require_aware(now)
    terms = policy.terms(hardship)
    limits = _limits(terms, balance, today)
    if any(money.currency != balance.currency for money in counter.amounts()):
        return Evaluation(Reason.WRONG_CURRENCY, limits, None, None)
    if balance.minor <= 0:
        return Evaluation(Reason.NOTHING_OWED, limits, None, None)
    reasons: list[Reason] = []
    first = _first_date(counter.first_date or today, limits, reasons)
    down, count = _resolve(terms, balance.minor, counter, reasons)
    if (down, count) == (0, 1):
        plan = _pay_in_full(terms, balance, first, today, now)
    else:
        plan = _plan(terms, balance, down, count, first, now)
    if reasons:
        return Evaluation(reasons[0], limits, None, plan)
    return Evaluation(Reason.WITHIN_POLICY, limits, plan, plan)


def check(
    policy: NegotiationPolicy, balance: Money, offer: PlanOffer, today: date, now: datetime, hardship: bool = False
) -> list[Violation]:
    """Every way the offer breaks the policy for this balance today; an offer with any must not become a plan."""
    _require_aware(now)
    terms = policy.terms(hardship)
    moneys = (offer.total, offer.discount, offer.down_payment, *(term.amount for term in offer.installments))
    if any(money.currency != balance.currency for money in moneys):
        return [Violation(Reason.WRONG_CURRENCY, f"the offer is not entirely in {balance.currency}")]
    if balance.minor <= 0:
        return [Violation(Reason.NOTHING_OWED, "nothing is owed")]
    found = [*_check_amounts(balance, offer), *_check_schedule(terms, offer, today), *_check_limits(terms, offer)]
    if now >= offer.expires_at:
        found.append(Violation(Reason.EXPIRED, f"the offer expired at {offer.expires_at.isoformat()}"))
    return found


def _resolve(terms: PolicyTerms, owed: int, counter: CounterOffer, reasons: list[Reason]) -> tuple[int, int]:
    """(down payment, installment count) closest to the counter; (0, 1) is payment in full."""
    if _pays_in_full(counter, owed):
        if counter.installment_amount is not None and counter.installment_amount.minor < owed:
            reasons.append(Reason.DOES_NOT_COVER_BALANCE)
        return 0, 1
    minimum = _min_down(terms, owed)
    down = minimum if counter.down_payment is None else counter.down_payment.minor
    asks_to_split = counter.installments is not None or counter.installment_amount is not None
    if down < minimum or (minimum >= owed and asks_to_split):
        # Splitting when the minimum down payment is the whole balance means a down payment below the minimum.
        reasons.append(Reason.DOWN_PAYMENT_BELOW_MINIMUM)
        down = minimum
    if down >= owed:
        return 0, 1
    return _fit_minimum(terms, owed, down, _count(terms, owed - down, counter, reasons), reasons)


def _pays_in_full(counter: CounterOffer, owed: int) -> bool:
    """A down payment of everything, or (without a down payment) one installment or one that covers everything."""
    if counter.down_payment is not None:
        return counter.down_payment.minor >= owed
    if counter.installments == 1:
        return True
    amount = counter.installment_amount
    return counter.installments is None and amount is not None and amount.minor >= owed


def _count(terms: PolicyTerms, financed: int, counter: CounterOffer, reasons: list[Reason]) -> int:
    count, amount = counter.installments, counter.installment_amount
    if count is not None:
        if amount is not None and amount.minor * count < financed:
            reasons.append(Reason.DOES_NOT_COVER_BALANCE)
    elif amount is not None:
        per = amount.minor
        if per < terms.min_installment_minor and per < financed:
            reasons.append(Reason.INSTALLMENT_BELOW_MINIMUM)
            per = terms.min_installment_minor
        count = -(-financed // per)
    else:
        count = max(1, _max_count(terms, financed))
    if count > terms.max_installments:
        reasons.append(Reason.TOO_MANY_INSTALLMENTS)
        count = terms.max_installments
    return count


def _fit_minimum(terms: PolicyTerms, owed: int, down: int, count: int, reasons: list[Reason]) -> tuple[int, int]:
    """Fewer installments (or a smaller down payment) until every installment reaches the minimum."""
    financed, minimum = owed - down, _smallest_installment(terms)
    if (down == 0 and count == 1) or financed >= count * minimum:
        return down, count
    reasons.append(Reason.INSTALLMENT_BELOW_MINIMUM)
    if financed >= minimum:
        return down, financed // minimum
    # The down payment leaves less than one minimum installment: leave exactly one, if the down payment allows.
    if owed - minimum >= max(_min_down(terms, owed), 1):
        return owed - minimum, 1
    return 0, 1


def _first_date(asked: date, limits: Limits, reasons: list[Reason]) -> date:
    if asked < limits.earliest_first_date:
        reasons.append(Reason.FIRST_DATE_IN_PAST)
        return limits.earliest_first_date
    if asked > limits.latest_first_date:
        reasons.append(Reason.FIRST_DATE_TOO_LATE)
        return limits.latest_first_date
    return asked


def _pay_in_full(terms: PolicyTerms, balance: Money, due: date, today: date, now: datetime) -> PlanOffer:
    """One payment on `due`, discounted when the policy gives a discount and `due` is within its deadline."""
    deadline = _discount_deadline(terms, today)
    discount = _max_discount(terms, balance.minor) if deadline is not None and due <= deadline else 0
    return _plan(terms, balance, 0, 1, due, now, discount)


def _plan(
    terms: PolicyTerms, balance: Money, down: int, count: int, first: date, now: datetime, discount: int = 0
) -> PlanOffer:
    """Split evenly; the remainder's extra minor units go one each to the first installments."""
    currency = balance.currency
    quotient, extra = divmod(balance.minor - discount - down, count)
    offset = 1 if down else 0
    installments = tuple(
        InstallmentTerm(
            seq,
            _step_date(first, seq - 1 + offset, terms.installment_interval),
            Money(quotient + (1 if seq <= extra else 0), currency),
        )
        for seq in range(1, count + 1)
    )
    return PlanOffer(
        kind=OfferKind.FULL_DISCOUNT if discount else OfferKind.INSTALLMENTS,
        total=balance,
        discount=Money(discount, currency),
        down_payment=Money(down, currency),
        first_date=first,
        installments=installments,
        expires_at=now + timedelta(hours=terms.offer_expiry_hours),
    )


def _check_amounts(balance: Money, offer: PlanOffer) -> list[Violation]:
    found = []
    if offer.total != balance:
        found.append(Violation(Reason.BALANCE_CHANGED, f"offer total {offer.total.minor} != balance {balance.minor}"))
    amounts = [term.amount.minor for term in offer.installments]
    if not amounts or min(amounts) <= 0 or offer.down_payment.minor < 0 or offer.discount.minor < 0:
        found.append(Violation(Reason.INVALID_AMOUNT, "needs installments > 0, down payment and discount >= 0"))
    if offer.down_payment.minor + sum(amounts) != offer.total.minor - offer.discount.minor:
        found.append(Violation(Reason.SUM_MISMATCH, "down payment + installments != total - discount"))
    return found


def _check_schedule(terms: PolicyTerms, offer: PlanOffer, today: date) -> list[Violation]:
    found = []
    offset = 1 if offer.down_payment.minor else 0
    expected = [
        (seq, _step_date(offer.first_date, seq - 1 + offset, terms.installment_interval))
        for seq in range(1, len(offer.installments) + 1)
    ]
    if [(term.seq, term.due_date) for term in offer.installments] != expected:
        found.append(Violation(Reason.SCHEDULE_MISMATCH, "installments do not follow the policy's interval"))
    deadline = _discount_deadline(terms, today)
    if offer.kind is OfferKind.FULL_DISCOUNT and deadline is not None:
        latest = deadline
    else:
        latest = today + timedelta(days=terms.max_first_payment_delay_days)
    if offer.first_date < today:
        found.append(Violation(Reason.FIRST_DATE_IN_PAST, f"first payment {offer.first_date} is before {today}"))
    elif offer.first_date > latest:
        found.append(Violation(Reason.FIRST_DATE_TOO_LATE, f"first payment {offer.first_date} is after {latest}"))
    return found


def _check_limits(terms: PolicyTerms, offer: PlanOffer) -> list[Violation]:
    count, down = len(offer.installments), offer.down_payment.minor
    if offer.kind is OfferKind.FULL_DISCOUNT:
        found = []
        if count != 1 or down:
            found.append(Violation(Reason.SCHEDULE_MISMATCH, "a full payment is one payment with no down payment"))
        if offer.discount.minor > _max_discount(terms, offer.total.minor):
            found.append(Violation(Reason.DISCOUNT_NOT_ALLOWED, "discount above the policy's full-payment discount"))
        return found
    found = []
    if offer.discount.minor:
        found.append(Violation(Reason.DISCOUNT_NOT_ALLOWED, "only payment in full may be discounted"))
    if count > terms.max_installments:
        found.append(Violation(Reason.TOO_MANY_INSTALLMENTS, f"{count} installments > {terms.max_installments}"))
    if down == 0 and count == 1:
        return found
    if any(term.amount.minor < terms.min_installment_minor for term in offer.installments):
        found.append(Violation(Reason.INSTALLMENT_BELOW_MINIMUM, f"installment < {terms.min_installment_minor}"))
    minimum = _min_down(terms, offer.total.minor - offer.discount.minor)
    if down < minimum:
        found.append(Violation(Reason.DOWN_PAYMENT_BELOW_MINIMUM, f"down payment {down} < {minimum}"))
    return found


def _limits(terms: PolicyTerms, balance: Money, today: date) -> Limits:
    currency, owed = balance.currency, max(balance.minor, 0)
    discount = _max_discount(terms, owed)
    return Limits(
        max_installments=terms.max_installments,
        min_installment=Money(terms.min_installment_minor, currency),
        min_down_payment=Money(_min_down(terms, owed), currency),
        earliest_first_date=today,
        latest_first_date=today + timedelta(days=terms.max_first_payment_delay_days),
        full_payment_discount=Money(discount, currency),
        full_payment_deadline=_discount_deadline(terms, today) if discount else None,
    )


def _is_valid_split(terms: PolicyTerms, owed: int, down: int, count: int) -> bool:
    financed = owed - down
    return (
        financed > 0
        and 1 <= count <= terms.max_installments
        and (down > 0 or count >= 2)
        and financed >= count * _smallest_installment(terms)
    )


def _basis_points(percent: Decimal) -> int:
    return int(percent * 100)  # exact: percentages carry at most two decimals


def _min_down(terms: PolicyTerms, owed: int) -> int:
    """Rounded up, so a plan never falls short of the percentage."""
    return -(-owed * _basis_points(terms.min_down_payment_pct) // 10_000)


def _max_discount(terms: PolicyTerms, owed: int) -> int:
    """Rounded down, so a discount never exceeds the percentage; none without a deadline."""
    if terms.full_payment_deadline_days is None:
        return 0
    return owed * _basis_points(terms.full_payment_discount_pct) // 10_000


def _max_count(terms: PolicyTerms, financed: int) -> int:
    return min(terms.max_installments, financed // _smallest_installment(terms))


def _smallest_installment(terms: PolicyTerms) -> int:
    """The policy's minimum, and never less than one minor unit: an installment of 0 is no installment."""
    return max(terms.min_installment_minor, 1)


def _discount_deadline(terms: PolicyTerms, today: date) -> date | None:
    if terms.full_payment_deadline_days is None or terms.full_payment_discount_pct == 0:
        return None
    return today + timedelta(days=terms.full_payment_deadline_days)


def _step_date(first: date, steps: int, interval: Interval) -> date:
    """first + steps intervals; calendar months keep first's day, clamped to the month's end (Jan 31 -> Feb 28)."""
    if interval == "monthly":
        years, month_index = divmod(first.month - 1 + steps, 12)
        year, month = first.year + years, month_index + 1
        return date(year, month, min(first.day, calendar.monthrange(year, month)[1]))
    return first + timedelta(days=interval * steps)


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
