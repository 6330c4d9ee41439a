"""Benchmark bank-statement reconciliation: a creditor with N debtors and a synthetic BancoEstado statement of
10,000 lines (references, exact amounts, misspelled names, noise, debits), imported twice (the re-import must
change nothing).

    .venv/bin/python bench/reconcile.py --debtors 5000 --lines 10000
    .venv/bin/python bench/reconcile.py --database-url postgresql://postgres@127.0.0.1:5432/scratch

Prints lines/s, the outcome counts, and checks that money was neither created nor lost.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.config import load_settings
from bot.migrate import upgrade
from bot.models import Creditor, Debtor, Invoice, Payment, PaymentAllocation
from bot.payments.reconcile import StatementReport, import_statement
from bot.payments.statements import BANCOESTADO
from bot.store import Database

CREDITOR_SLUG = "bench-reconcile"
FIRST_NAMES = (
    "Ana", "Jorge", "Camila", "Matías", "Valentina", "Benjamín", "Josefa", "Tomás", "Sofía", "Vicente", "Isidora",
    "Agustín", "Florencia", "Martín", "Catalina", "Joaquín", "Antonia", "Cristóbal", "Fernanda", "Ignacio",
)  # fmt: skip
LAST_NAMES = (
    "González", "Muñoz", "Rojas", "Díaz", "Pérez", "Soto", "Contreras", "Silva", "Martínez", "Sepúlveda", "Morales",
    "Rodríguez", "López", "Fuentes", "Hernández", "Torres", "Araya", "Flores", "Espinoza", "Valenzuela",
)  # fmt: skip
HEADER = "Fecha;N° Operación;Descripción;Cargos;Abonos;Saldo\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debtors", type=int, default=5000, help="debtors of the creditor, one open invoice each")
    parser.add_argument("--lines", type=int, default=10_000, help="statement lines to generate")
    parser.add_argument("--database-url", default="", help="an empty database; default: a temporary SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cobrabench-reconcile-") as workdir:
        bench(Path(workdir), args.debtors, args.lines, args.database_url)


def bench(workdir: Path, debtors: int, lines: int, database_url: str) -> None:
    settings = load_settings(database_url=database_url or f"sqlite:///{workdir / 'bench.db'}")
    print(f"database  {settings.database_url.split('@')[-1]}")
    upgrade(settings.database_url)
    database = Database(settings.database_url)
    rng = random.Random(7)
    try:
        people = prepare_creditor(database, rng, debtors)
        statement = write_statement(rng, people, lines)
        print(f"statement {lines} lines, {len(statement) / 2**20:.1f} MiB, {debtors} debtors")
        first = run(database, statement, settings, "first import")
        second = run(database, statement, settings, "re-import")
        check(database, first, second)
    finally:
        database.dispose()


def prepare_creditor(database: Database, rng: random.Random, count: int) -> list[tuple[str, str, str, int]]:
    """Debtors (external_ref, name, invoice number, balance) inserted in one go."""
    people = []
    with database.session() as session:
        creditor = Creditor(slug=CREDITOR_SLUG, name="Bench Aguas", country="CL", currency="CLP")
        session.add(creditor)
        session.flush()
        for index in range(count):
            name = " ".join((*rng.sample(FIRST_NAMES, 2), *rng.sample(LAST_NAMES, 2)))
            ref, number, balance = f"B-{index:06d}", f"F-{index:06d}", rng.randint(5_000, 900_000)
            debtor = Debtor(creditor_id=creditor.id, external_ref=ref, name=name, country="CL")
            debtor.invoices.append(
                Invoice(
                    creditor_id=creditor.id,
                    number=number,
                    amount_minor=balance,
                    balance_minor=balance,
                    currency="CLP",
                    due_date=date(2026, 10, 1) + timedelta(days=rng.randint(0, 60)),
                )
            )
            session.add(debtor)
            people.append((ref, name, number, balance))
        session.commit()
    return people


def write_statement(rng: random.Random, people: list[tuple[str, str, str, int]], lines: int) -> bytes:
    """30 % references, 25 % exact amounts, 15 % misspelled names, 20 % noise, 10 % debits."""
    rows = [HEADER]
    for index in range(lines):
        ref, name, number, balance = rng.choice(people)
        booked = (date(2026, 11, 1) + timedelta(days=index % 24)).strftime("%d/%m/%Y")
        kind = rng.random()
        credit, debit = _amount(balance), ""
        if kind < 0.30:
            description = f"TRANSFERENCIA DE {_plain(name)} PAGO {rng.choice((number, ref))}"
        elif kind < 0.55:
            description = f"TRANSFERENCIA DE {_plain(name)}"
        elif kind < 0.70:
            description = f"TRANSFERENCIA DE {_misspelt(rng, _plain(name))}"
            credit = _amount(max(balance // 2, 1000))
        elif kind < 0.90:
            description = f"DEPOSITO {rng.randint(1000, 99999)}"
            credit = _amount(rng.randint(1000, 2_000_000))
        else:
            description, credit, debit = "PAGO PROVEEDORES", "", _amount(rng.randint(1000, 500_000))
        rows.append(f"{booked};{700000 + index};{description};{debit};{credit};0\n")
    return "".join(rows).encode()


def _amount(minor: int) -> str:
    return f"{minor:,}".replace(",", ".")


def _plain(name: str) -> str:
    return name.upper().translate(str.maketrans("ÁÉÍÓÚÑ", "AEIOUN"))


def _misspelt(rng: random.Random, name: str) -> str:
    position = rng.randrange(1, len(name) - 1)
    return name[:position] + name[position + 1 :]  # one letter dropped, as a hurried payer types it


def run(database: Database, statement: bytes, settings: object, label: str) -> StatementReport:
    started = time.perf_counter()
    report = import_statement(
        database, statement, "bench.csv", BANCOESTADO, CREDITOR_SLUG, now=datetime.now(UTC), settings=settings
    )
    elapsed = time.perf_counter() - started
    print(
        f"{label:<12}  {report.lines} lines in {elapsed:.2f} s = {report.lines / elapsed:,.0f} lines/s  "
        f"(credits {report.credits}: matched {report.matched}, suggested {report.suggested}, "
        f"unmatched {report.unmatched}; debits {report.debits}; errors {len(report.errors)}; "
        f"already imported: {report.already_imported})"
    )
    return report


def check(database: Database, first: StatementReport, second: StatementReport) -> None:
    """The figures mean nothing if the result was wrong: money conserved, re-import a no-op."""
    with database.session() as session:
        paid = session.scalar(select(func.coalesce(func.sum(Payment.amount_minor), 0)))
        allocated = session.scalar(select(func.coalesce(func.sum(PaymentAllocation.amount_minor), 0)))
        payments = session.scalar(select(func.count()).select_from(Payment))
    problems = []
    if paid != allocated:
        problems.append(f"payments {paid} != allocations {allocated}")
    if payments != first.matched:
        problems.append(f"{payments} payments for {first.matched} matched lines")
    if not second.already_imported:
        problems.append("re-import was not a no-op")
    if problems:
        sys.exit("CHECK FAILED: " + "; ".join(problems))
    print(f"check     ok: {payments} payments, {paid:,} CLP, all allocated; re-import changed nothing")


if __name__ == "__main__":
    main()
