"""Bank-statement reconciliation: each credit line of an imported statement becomes a payment, a suggestion for an
agent, or an entry in the reconciliation queue.

Rules, strongest first: (a) a reference in the description (invoice number, payment link code, debtor
external_ref) matches; (b) the amount equals exactly one debtor's open balance or one open invoice or installment
(and agrees with the payer's name when the bank gives one); (c) a fuzzy match of the payer's name is only ever a
suggestion. The creditor's book is loaded once per import and kept current in memory as payments are recorded,
so a statement of 10,000 lines is matched without a query per rule.

Idempotent twice over: the same file again finds its ImportBatch (sha256) and changes nothing; a line already
seen in an overlapping statement has the same fingerprint and is skipped; and the payment's provider id is the
fingerprint, so record_payment never records a line twice.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo

from rapidfuzz import fuzz, process
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot import audit
from bot.config import Settings
from bot.domain import Money
from bot.importer import UnknownCreditorError
from bot.models import (
    Creditor,
    Debtor,
    ImportBatch,
    Installment,
    Invoice,
    PaymentLink,
    PaymentPlan,
    StatementLine,
)
from bot.payments.allocation import ReceivedPayment, pay_installment, record_payment
from bot.payments.settlement import cancel_reminders_of_paid_invoices, queue_receipt
from bot.payments.statements import (
    LineError,
    ParsedLine,
    StatementFileError,
    StatementFormat,
    normalise,
    parse_statement,
)
from bot.store import Database

logger = logging.getLogger(__name__)

BATCH_KIND = "bank_statement"
NAME_SUGGEST = 85.0  # a payer name scoring this against one debtor is worth an agent's look
NAME_AGREES = 70.0  # below this, the payer's name contradicts the debtor an amount points at
IN_LIST_SIZE = 900
PROGRESS_EVERY = 250
QUEUE_STATUSES = ("suggested", "unmatched")
TOKEN_SPLIT = re.compile(r"[\s,;:()\[\]{}\"'#|]+")
NAME_NOISE = re.compile(
    r"\b(transferencia|transf|tef|deposito|abono|pago|de|desde|rut|ref|cta|cte|n)\b|\d[\d.\-kK]*", re.IGNORECASE
)

Progress = Callable[[int, int], None]


class ReconcileError(Exception):
    """A console action on a statement line that cannot be done; the message says why."""


# --- matching ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """What a line would pay: a debtor, and the invoice or installment it names, if any."""

    debtor_id: int
    invoice_id: int | None = None
    invoice_number: str | None = None
    installment_id: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    status: str  # matched | suggested | unmatched
    rule: str | None = None
    score: float | None = None
    target: Target | None = None


UNMATCHED = Decision("unmatched")


class CreditorBook:
    """The creditor's debtors, references and open balances in dicts, kept current as payments are recorded."""

    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.names: dict[int, str] = {}
        self.refs: dict[str, Target | None] = {}  # None: the code names two debtors, so it proves nothing
        self.invoices: dict[int, list[Any]] = {}  # id -> [debtor_id, number, open balance]
        self.invoices_by_amount: dict[int, set[int]] = {}
        self.balances: dict[int, int] = {}
        self.debtors_by_balance: dict[int, set[int]] = {}
        self.installments: dict[int, list[int]] = {}  # id -> [debtor_id, still owed]
        self.installments_by_amount: dict[int, set[int]] = {}

    @classmethod
    def load(cls, session: Session, creditor: Creditor) -> CreditorBook:
        book = cls(creditor.currency)
        for debtor_id, name, external_ref in session.execute(
            select(Debtor.id, Debtor.name, Debtor.external_ref).where(Debtor.creditor_id == creditor.id)
        ):
            book.names[debtor_id] = normalise(name)
            book._add_ref(external_ref, Target(debtor_id))
        book._load_invoices(session, creditor.id)
        book._load_links(session, creditor.id)
        book._load_installments(session, creditor.id)
        return book

    def _load_invoices(self, session: Session, creditor_id: int) -> None:
        rows = session.execute(
            select(
                Invoice.id, Invoice.debtor_id, Invoice.number, Invoice.balance_minor, Invoice.currency, Invoice.status
            )
            .where(Invoice.creditor_id == creditor_id)
            .order_by(Invoice.id)
        )
        for invoice_id, debtor_id, number, balance, currency, status in rows:
            self._add_ref(number, Target(debtor_id, invoice_id, number))
            if currency == self.currency and status == "open" and balance > 0:
                self.invoices[invoice_id] = [debtor_id, number, balance]
                self.invoices_by_amount.setdefault(balance, set()).add(invoice_id)
                self.balances[debtor_id] = self.balances.get(debtor_id, 0) + balance
        for debtor_id, balance in self.balances.items():
            self.debtors_by_balance.setdefault(balance, set()).add(debtor_id)

    def _load_links(self, session: Session, creditor_id: int) -> None:
        rows = session.execute(
            select(PaymentLink.short_code, PaymentLink.debtor_id, PaymentLink.invoice_id, PaymentLink.installment_id)
            .join(Debtor, Debtor.id == PaymentLink.debtor_id)
            .where(Debtor.creditor_id == creditor_id)
        )
        for code, debtor_id, invoice_id, installment_id in rows:
            number = self.invoices[invoice_id][1] if invoice_id in self.invoices else None
            self._add_ref(code, Target(debtor_id, invoice_id if number else None, number, installment_id))

    def _load_installments(self, session: Session, creditor_id: int) -> None:
        rows = session.execute(
            select(Installment.id, PaymentPlan.debtor_id, Installment.amount_minor - Installment.paid_minor)
            .join(PaymentPlan, PaymentPlan.id == Installment.plan_id)
            .join(Debtor, Debtor.id == PaymentPlan.debtor_id)
            .where(
                Debtor.creditor_id == creditor_id,
                PaymentPlan.status == "active",
                PaymentPlan.currency == self.currency,
                Installment.status != "paid",
            )
        )
        for installment_id, debtor_id, owed in rows:
            if owed > 0:
                self.installments[installment_id] = [debtor_id, owed]
                self.installments_by_amount.setdefault(owed, set()).add(installment_id)

    def _add_ref(self, code: str | None, target: Target) -> None:
        key = (code or "").strip().upper()
        if len(key) < 3:
            return  # "1" or "A2" would be found inside any description
        if key not in self.refs:
            self.refs[key] = target
            return
        known = self.refs[key]
        if known is not None and known.debtor_id != target.debtor_id:
            self.refs[key] = None

    # rule (a)
    def by_reference(self, text: str) -> Target | bool | None:
        """The target the text's codes name; False when they name two debtors, None when they name none."""
        found: dict[int, Target] = {}
        for raw in TOKEN_SPLIT.split(text.upper()):
            for token in {raw, raw.strip(".-_/")}:
                target = self.refs.get(token)
                if target is not None:
                    best = found.get(target.debtor_id)
                    if best is None or (best.invoice_id is None and best.installment_id is None):
                        found[target.debtor_id] = target
        if len(found) > 1:
            return False
        return next(iter(found.values()), None)

    # rule (b)
    def by_amount(self, amount_minor: int) -> dict[int, Target]:
        """Debtors one of whose open invoices, installments or whole balance is exactly this amount."""
        found: dict[int, Target] = {}
        for installment_id in sorted(self.installments_by_amount.get(amount_minor, ())):
            debtor_id = self.installments[installment_id][0]
            found.setdefault(debtor_id, Target(debtor_id, installment_id=installment_id))
        for invoice_id in sorted(self.invoices_by_amount.get(amount_minor, ())):
            debtor_id, number, _ = self.invoices[invoice_id]
            found.setdefault(debtor_id, Target(debtor_id, invoice_id, number))
        for debtor_id in self.debtors_by_balance.get(amount_minor, ()):
            found.setdefault(debtor_id, Target(debtor_id))
        return found

    # rule (c)
    def by_name(self, query: str, *, partial: bool) -> list[tuple[int, float]]:
        """The two best debtors for a name (or a description), best first, above NAME_SUGGEST."""
        scorer = fuzz.WRatio if partial else fuzz.token_sort_ratio
        best = process.extract(query, self.names, scorer=scorer, processor=None, score_cutoff=NAME_SUGGEST, limit=2)
        return [(debtor_id, score) for _choice, score, debtor_id in best]

    def name_score(self, query: str, debtor_id: int) -> float:
        return fuzz.token_sort_ratio(query, self.names.get(debtor_id, ""), processor=None)

    def settle(self, debtor_id: int, invoice_shares: dict[int, int], installment_id: int | None, paid: int) -> None:
        """Keep the book current after a payment so later lines of the same file see the new balances."""
        for invoice_id, share in invoice_shares.items():
            entry = self.invoices.get(invoice_id)
            if entry is None:
                continue
            self._move(self.invoices_by_amount, invoice_id, entry[2], entry[2] - share)
            entry[2] -= share
            old = self.balances.get(debtor_id, 0)
            self._move(self.debtors_by_balance, debtor_id, old, old - share)
            self.balances[debtor_id] = old - share
        if installment_id in self.installments:
            entry = self.installments[installment_id]
            self._move(self.installments_by_amount, installment_id, entry[1], max(entry[1] - paid, 0))
            entry[1] = max(entry[1] - paid, 0)

    @staticmethod
    def _move(index: dict[int, set[int]], key: int, old: int, new: int) -> None:
        index.get(old, set()).discard(key)
        if new > 0:
            index.setdefault(new, set()).add(key)


def decide(book: CreditorBook, line: ParsedLine) -> Decision:
    """The outcome the rules give one credit line; pure, so the matching is testable without a database."""
    reference = book.by_reference(f"{line.description} {line.reference or ''}")
    if reference is False:
        return UNMATCHED  # two debtors' codes on one transfer: a person must split it
    if isinstance(reference, Target):
        return Decision("matched", "reference", 100.0, reference)
    payer = normalise(line.payer_name or "")
    by_amount = book.by_amount(line.amount.minor) if line.amount.currency == book.currency else {}
    if len(by_amount) == 1:
        (target,) = by_amount.values()
        if not payer:
            return Decision("matched", "amount", 100.0, target)
        score = book.name_score(payer, target.debtor_id)
        if score >= NAME_AGREES:
            return Decision("matched", "amount", score, target)
        return _by_name(book, line, payer) or Decision("suggested", "amount", score, target)
    if len(by_amount) > 1 and payer:
        scored = sorted(((book.name_score(payer, d), d) for d in by_amount), reverse=True)
        (best, debtor_id), runner_up = scored[0], scored[1][0]
        if best >= NAME_SUGGEST and best > runner_up:
            return Decision("suggested", "amount_name", best, by_amount[debtor_id])
        return UNMATCHED
    if by_amount:
        return UNMATCHED  # the same amount is owed by several debtors and nothing tells them apart
    return _by_name(book, line, payer) or UNMATCHED


def _by_name(book: CreditorBook, line: ParsedLine, payer: str) -> Decision | None:
    query = payer or normalise(NAME_NOISE.sub(" ", line.description))
    if len(query) < 4:
        return None
    best = book.by_name(query, partial=not payer)
    if not best or (len(best) > 1 and best[1][1] >= best[0][1]):
        return None  # nobody close, or two debtors equally close
    debtor_id, score = best[0]
    if not 0 < line.amount.minor <= book.balances.get(debtor_id, 0):
        return None  # a name alone, with an amount the debtor does not owe, is not worth an agent's time
    return Decision("suggested", "fuzzy_name", round(score, 1), Target(debtor_id))


# --- importing ----------------------------------------------------------------------------------------------


@dataclass
class StatementReport:
    filename: str
    format: str
    batch_id: int | None = None
    already_imported: bool = False
    lines: int = 0
    credits: int = 0
    debits: int = 0
    matched: int = 0
    suggested: int = 0
    unmatched: int = 0
    seen_before: int = 0  # credit lines an earlier, overlapping statement already brought in
    errors: list[LineError] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "lines": self.lines,
            "credits": self.credits,
            "debits": self.debits,
            "matched": self.matched,
            "suggested": self.suggested,
            "unmatched": self.unmatched,
            "seen_before": self.seen_before,
            "errors": [{"line": error.line_no, "reason": error.reason} for error in self.errors[:200]],
            "error_count": len(self.errors),
        }


def fingerprints(creditor_id: int, format_name: str, lines: Iterable[ParsedLine]) -> list[str]:
    """sha256 of the line's content plus its occurrence among identical lines of the file: two real 10.000
    transfers on one day stay two lines, while the same line in an overlapping statement is recognised."""
    seen: Counter[tuple[Any, ...]] = Counter()
    prints = []
    for line in lines:
        key = (line.booked_on.isoformat(), line.amount.minor, line.amount.currency, line.description, line.reference)
        occurrence = seen[key]
        seen[key] += 1
        text = "\x1f".join(str(part) for part in (creditor_id, format_name, *key, occurrence))
        prints.append(hashlib.sha256(text.encode()).hexdigest())
    return prints


def import_statement(
    database: Database,
    data: bytes,
    filename: str,
    fmt: StatementFormat,
    creditor_slug: str,
    *,
    now: datetime,
    actor: str = "import",
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> StatementReport:
    """Parse and reconcile one statement in ONE transaction. Raises StatementFileError or UnknownCreditorError
    before writing anything. `settings` given: matched debtors are sent a receipt."""
    started = time.perf_counter()
    with database.session() as session:
        creditor = session.scalars(select(Creditor).where(Creditor.slug == creditor_slug)).one_or_none()
        if creditor is None:
            raise UnknownCreditorError(f"no creditor with slug {creditor_slug!r}")
        statement = parse_statement(data, fmt, creditor.currency)
        report = StatementReport(filename, fmt.name, lines=statement.rows, errors=statement.errors)
        report.credits, report.debits = len(statement.credits), statement.debits
        digest = hashlib.sha256(f"{creditor.id}\x1f{fmt.name}\x1f".encode() + data).hexdigest()
        earlier = session.scalars(
            select(ImportBatch).where(ImportBatch.kind == BATCH_KIND, ImportBatch.sha256 == digest)
        ).one_or_none()
        if earlier is not None:
            return _already(report, earlier.id, started)
        batch = ImportBatch(kind=BATCH_KIND, sha256=digest, filename=filename[:500], created_at=now)
        session.add(batch)
        session.flush()
        try:
            reconciler = _Reconciler(session, creditor, fmt, batch.id, now, actor, settings)
            reconciler.run(statement.credits, report, progress)
            batch.summary = report.summary()
            audit.record(session, actor, "statement.imported", batch, creditor_id=creditor.id, **_counts(report))
            session.commit()
        except IntegrityError:
            session.rollback()  # the same file imported concurrently, and the other import won
            batch_id = session.scalar(
                select(ImportBatch.id).where(ImportBatch.kind == BATCH_KIND, ImportBatch.sha256 == digest)
            )
            if batch_id is None:
                raise StatementConflictError(
                    "another statement with some of the same lines was imported at the same moment; "
                    "nothing from this file was saved, import it again"
                ) from None
            return _already(report, batch_id, started)
        report.batch_id = batch.id
    report.seconds = time.perf_counter() - started
    return report


class StatementConflictError(StatementFileError):
    """An overlapping statement imported at the same moment took some of this file's lines; nothing of this file
    was saved and importing it again succeeds. Refused like a bad file, so the console and CLI say why."""


def _already(report: StatementReport, batch_id: int | None, started: float) -> StatementReport:
    report.already_imported, report.batch_id = True, batch_id
    report.seconds = time.perf_counter() - started
    return report


def _counts(report: StatementReport) -> dict[str, int]:
    summary = report.summary()
    return {key: value for key, value in summary.items() if isinstance(value, int)}


class _Reconciler:
    def __init__(
        self,
        session: Session,
        creditor: Creditor,
        fmt: StatementFormat,
        batch_id: int,
        now: datetime,
        actor: str,
        settings: Settings | None,
    ) -> None:
        self.session = session
        self.creditor = creditor
        self.provider = provider_of(fmt.name)
        self.batch_id = batch_id
        self.now = now
        self.actor = actor
        self.settings = settings
        self.zone = ZoneInfo(creditor.timezone)
        self.book = CreditorBook.load(session, creditor)

    def run(self, credits: list[ParsedLine], report: StatementReport, progress: Progress | None) -> None:
        prints = fingerprints(self.creditor.id, report.format, credits)
        known = _known_fingerprints(self.session, prints)
        for done, (line, fingerprint) in enumerate(zip(credits, prints, strict=True)):
            if progress and done % PROGRESS_EVERY == 0:
                progress(done, len(credits))
            if fingerprint in known:
                report.seen_before += 1
                continue
            known.add(fingerprint)
            status = self.reconcile(line, fingerprint)
            setattr(report, status, getattr(report, status) + 1)
        if progress:
            progress(len(credits), len(credits))

    def reconcile(self, line: ParsedLine, fingerprint: str) -> str:
        decision = decide(self.book, line)
        target = decision.target
        row = StatementLine(
            batch_id=self.batch_id,
            creditor_id=self.creditor.id,
            line_no=line.line_no,
            fingerprint=fingerprint,
            booked_on=line.booked_on,
            amount_minor=line.amount.minor,
            currency=line.amount.currency,
            description=line.description,
            payer_name=line.payer_name,
            bank_reference=line.reference,
            status=decision.status,
            match_rule=decision.rule,
            score=decision.score,
            debtor_id=target.debtor_id if target else None,
            invoice_id=target.invoice_id if target else None,
            created_at=self.now,
        )
        self.session.add(row)
        if decision.status == "matched" and target is not None:
            received_at = datetime.combine(line.booked_on, clock_time(12), self.zone).astimezone(UTC)
            row.payment_id = pay_line(
                self.session, row, target, self.provider, received_at, self.actor, self.now, self.settings, self.book
            )
        return decision.status


def _known_fingerprints(session: Session, prints: list[str]) -> set[str]:
    known: set[str] = set()
    for start in range(0, len(prints), IN_LIST_SIZE):
        chunk = prints[start : start + IN_LIST_SIZE]
        known.update(session.scalars(select(StatementLine.fingerprint).where(StatementLine.fingerprint.in_(chunk))))
    return known


def provider_of(format_name: str) -> str:
    return f"bank:{format_name}"[:32]


def pay_line(
    session: Session,
    row: StatementLine,
    target: Target,
    provider: str,
    received_at: datetime,
    actor: str,
    now: datetime,
    settings: Settings | None,
    book: CreditorBook | None = None,
) -> int:
    """Record the line's money as the target debtor's payment (once: its reference is the line's fingerprint),
    then what every new payment brings: installment credited, reminders cancelled, receipt queued."""
    debtor = session.scalars(select(Debtor).where(Debtor.id == target.debtor_id).with_for_update()).one()
    received = ReceivedPayment(
        provider=provider,
        reference=row.fingerprint,
        amount=Money(row.amount_minor, row.currency),
        received_at=received_at,
        invoice_number=target.invoice_number,
        raw={"statement_batch_id": row.batch_id, "line": row.line_no, "bank_reference": row.bank_reference},
    )
    recorded = record_payment(session, debtor, received, actor, now)
    payment = recorded.payment
    if recorded.created:
        if target.installment_id is not None:
            pay_installment(session, payment, target.installment_id, now)
        cancel_reminders_of_paid_invoices(session, payment)
        if settings is not None:
            queue_receipt(session, debtor, payment, settings, now)
        if book is not None:
            shares = {a.invoice_id: a.amount_minor for a in payment.allocations if a.invoice_id is not None}
            book.settle(debtor.id, shares, target.installment_id, payment.amount_minor)
    return payment.id
