"""Benchmark `cobrabot import debtors`: a generated CSV imported twice (the second run must change nothing).

    .venv/bin/python bench/import_debtors.py --rows 100000
    .venv/bin/python bench/import_debtors.py --database-url postgresql://postgres@127.0.0.1:5432/scratch

Prints rows, seconds and rows/s of both runs and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.config import load_settings
from bot.importer import COLUMNS, ImportReport, import_debtors
from bot.migrate import upgrade
from bot.models import Creditor, Debtor, Invoice
from bot.store import Database

CREDITOR_SLUG = "bench-import"
SECRET = "bench-secret"
FIRST_NAMES = ("Ana", "Jorge", "Camila", "Matías", "Valentina", "Benjamín", "Josefa", "Tomás", "Sofía", "Vicente")
LAST_NAMES = ("González", "Muñoz", "Rojas", "Díaz", "Pérez", "Soto", "Contreras", "Silva", "Martínez", "Sepúlveda")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="CSV rows (invoices) to generate")
    parser.add_argument("--database-url", default="", help="an empty database; default: a temporary SQLite file")
    parser.add_argument("--batch-size", type=int, default=1000, help="debtors per transaction")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cobrabench-import-") as workdir:
        bench(Path(workdir), args.rows, args.database_url, args.batch_size)


def bench(workdir: Path, rows: int, database_url: str, batch_size: int) -> None:
    url = load_settings(database_url=database_url or f"sqlite:///{workdir / 'bench.db'}").database_url
    csv_path = workdir / "debtors.csv"
    debtors = write_csv(csv_path, rows)
    print(f"database  {url.split('@')[-1]}")
    print(f"csv       {rows} rows, {debtors} debtors, {csv_path.stat().st_size / 2**20:.1f} MiB")

    upgrade(url)
    database = Database(url)
    try:
        prepare_creditor(database)
        first = run(database, csv_path, batch_size, "first import")
        second = run(database, csv_path, batch_size, "re-import")
        check(database, first, second, debtors, rows)
    finally:
        database.dispose()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(f"peak RSS  {peak_mib:.0f} MiB")
    print(f"ratio     re-import takes {second.seconds / first.seconds:.2f}x the first import's time")


def write_csv(path: Path, rows: int) -> int:
    """About rows/2 Chilean debtors with 1-3 CLP invoices each; returns the number of debtors."""
    rng = random.Random(42)
    written = debtors = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        while written < rows:
            debtors += 1
            debtor = debtor_columns(rng, debtors)
            for seq in range(min(rng.randint(1, 3), rows - written)):
                writer.writerow(debtor + invoice_columns(rng, debtors, seq))
                written += 1
    return debtors


def debtor_columns(rng: random.Random, index: int) -> list[str]:
    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)} {rng.choice(LAST_NAMES)}"
    phone = f"+56 9 6{rng.randint(0, 8)}{rng.randint(0, 99):02d} {rng.randint(0, 9999):04d}"  # 96[0-8]: mobile
    rut = rng.randint(5_000_000, 25_000_000)
    birth = date(1950, 1, 1) + timedelta(days=rng.randint(0, 20_000))
    return [
        f"B-{index:07d}", name, phone, f"cliente{index}@example.cl", "", "es-CL", "America/Santiago", "CL",
        "whatsapp|sms|email", f"{rut:,}".replace(",", ".") + f"-{rut_check_digit(rut)}", birth.isoformat(),
    ]  # fmt: skip


def invoice_columns(rng: random.Random, index: int, seq: int) -> list[str]:
    amount = rng.randint(5_000, 500_000)
    balance = amount if rng.random() < 0.7 else rng.randint(0, amount)
    issued = date(2026, 1, 1) + timedelta(days=rng.randint(0, 330))
    due = issued + timedelta(days=30)
    number = f"F-{index:07d}-{seq}"
    return [number, str(amount), str(balance), "CLP", due.isoformat(), issued.isoformat(), f"Boleta {number}"]


def rut_check_digit(body: int) -> str:
    total = sum(int(digit) * (2 + position % 6) for position, digit in enumerate(reversed(str(body))))
    digit = 11 - total % 11
    return {10: "K", 11: "0"}.get(digit, str(digit))


def prepare_creditor(database: Database) -> None:
    with database.session() as session:
        if session.scalar(select(Creditor.id).where(Creditor.slug == CREDITOR_SLUG)) is None:
            session.add(Creditor(slug=CREDITOR_SLUG, name="Bench Aguas", country="CL", currency="CLP"))
            session.commit()


def run(database: Database, csv_path: Path, batch_size: int, label: str) -> ImportReport:
    report = import_debtors(database, csv_path, CREDITOR_SLUG, secret_key=SECRET, batch_size=batch_size)
    print(
        f"{label:<12}  {report.rows} rows in {report.seconds:.2f} s = {report.rows_per_second:,.0f} rows/s  "
        f"(debtors {report.debtors_created} created / {report.debtors_updated} updated / "
        f"{report.debtors_unchanged} unchanged, invoices {report.invoices_created} created / "
        f"{report.invoices_updated} updated, {report.rows_with_errors} rows with errors)"
    )
    return report


def check(database: Database, first: ImportReport, second: ImportReport, debtors: int, rows: int) -> None:
    """The figures mean nothing if the import was wrong: every row in, and the re-run a no-op."""
    with database.session() as session:
        creditor_id = select(Creditor.id).where(Creditor.slug == CREDITOR_SLUG).scalar_subquery()
        stored_debtors = session.scalar(select(func.count()).where(Debtor.creditor_id == creditor_id))
        stored_invoices = session.scalar(select(func.count()).where(Invoice.creditor_id == creditor_id))
    problems = []
    if first.errors or second.errors:
        problems.append(f"row errors: {(first.errors or second.errors)[:3]}")
    if (stored_debtors, stored_invoices) != (debtors, rows):
        problems.append(f"stored {stored_debtors} debtors / {stored_invoices} invoices, expected {debtors} / {rows}")
    if second.debtors_unchanged != debtors or second.invoices_unchanged != rows:
        problems.append("re-import was not a no-op")
    if problems:
        sys.exit("FAILED: " + "; ".join(problems))


if __name__ == "__main__":
    main()
