"""Benchmark reminder planning: N debtors with invoices spread over due dates, scored and planned in bulk.

    .venv/bin/python bench/campaign.py --debtors 100000
    .venv/bin/python bench/campaign.py --database-url postgresql://postgres@127.0.0.1:5432/scratch

Prints seconds and rows/s for scoring, planning (reminder rows) and messages queued, a second run that must plan
nothing, the peak RSS of the process, and how planning compares with a raw bulk insert of the same outbox rows
into a scratch copy of the outbox table (executemany in batches; also COPY on PostgreSQL): the ratio is the raw
insert's seconds over planning's seconds, i.e. planning's outbox rows/s as a share of the raw rows/s.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import MetaData, Table, func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.campaigns import plan_reminders
from bot.config import load_settings
from bot.migrate import upgrade
from bot.models import Creditor, Debtor, Invoice, Outbox, ScheduledReminder
from bot.risk import score_debtors
from bot.store import Database

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
ZONES = ("America/Santiago", "America/Mexico_City", "America/Bogota", "America/New_York")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debtors", type=int, default=100_000)
    parser.add_argument("--database-url", default="", help="an empty database; default: a temporary SQLite file")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--skip-score", action="store_true", help="plan without scoring first, so the peak RSS is planning's own"
    )
    args = parser.parse_args()
    with bench_database(args.database_url, "campaign") as database:
        bench(database, args.debtors, args.batch_size, score=not args.skip_score)
    print(f"peak RSS  {_peak_rss_mib():.0f} MiB")


@contextmanager
def bench_database(database_url: str, name: str) -> Iterator[Database]:
    """The migrated database at `database_url`, or a temporary SQLite file when none is given."""
    with tempfile.TemporaryDirectory(prefix=f"cobrabench-{name}-") as workdir:
        url = load_settings(database_url=database_url or f"sqlite:///{Path(workdir) / 'bench.db'}").database_url
        print(f"database  {url.split('@')[-1]}")
        upgrade(url)
        database = Database(url)
        try:
            yield database
        finally:
            database.dispose()


def generate(database: Database, debtors: int) -> tuple[int, int]:
    """Debtors with 1-3 invoices each, due from 60 days ago to 10 days ahead; core inserts, 5,000 a batch."""
    rng = random.Random(7)
    with database.session() as session:
        creditor = Creditor(slug="bench-campaign", name="Bench", currency="CLP")
        session.add(creditor)
        session.commit()
        creditor_id = creditor.id
    invoices = 0
    for start in range(0, debtors, 5000):
        count = min(5000, debtors - start)
        rows = [
            {"creditor_id": creditor_id, "external_ref": f"D{start + n}", "name": "Ana Pérez", "locale": "es-CL",
             "phone": f"+5696{start + n:07d}", "timezone": ZONES[(start + n) % len(ZONES)],
             "channel_preference": ["sms"], "risk_factors": {}}
            for n in range(count)
        ]  # fmt: skip
        with database.session() as session:
            ids = session.scalars(insert(Debtor).returning(Debtor.id), rows).all()
            invoice_rows = [
                _invoice(rng, creditor_id, debtor_id, k) for debtor_id in ids for k in range(rng.randint(1, 3))
            ]
            session.execute(insert(Invoice), invoice_rows)
            session.commit()
        invoices += len(invoice_rows)
    return creditor_id, invoices


def _invoice(rng: random.Random, creditor_id: int, debtor_id: int, k: int) -> dict[str, object]:
    amount = rng.randrange(5_000, 500_000)
    due = NOW.date() + timedelta(days=rng.randint(-60, 10))
    return {"creditor_id": creditor_id, "debtor_id": debtor_id, "number": f"{debtor_id}-{k}", "amount_minor": amount,
            "balance_minor": amount, "currency": "CLP", "due_date": due, "status": "open",
            "issued_on": date(2026, 9, 1)}  # fmt: skip


def bench(database: Database, debtors: int, batch_size: int, *, score: bool = True) -> None:
    started = time.perf_counter()
    creditor_id, invoices = generate(database, debtors)
    print(f"data      {debtors} debtors, {invoices} invoices in {time.perf_counter() - started:.1f} s")

    print(f"          peak RSS so far {_peak_rss_mib():.0f} MiB")
    if score:
        with database.session() as session:
            started = time.perf_counter()
            scored = score_debtors(session, creditor_id, NOW)
            session.commit()
        elapsed = time.perf_counter() - started
        print(f"score     {scored} debtors in {elapsed:.1f} s = {scored / elapsed:,.0f} debtors/s")
        print(f"          peak RSS so far {_peak_rss_mib():.0f} MiB")

    planned_seconds = 0.0
    for label in ("plan", "re-plan"):
        with database.session() as session:
            started = time.perf_counter()
            # Committed page by page, as the scheduler's job does.
            report = plan_reminders(session, NOW, batch_size=batch_size, commit_pages=True)
            session.commit()
        elapsed = time.perf_counter() - started
        planned_seconds = planned_seconds or elapsed
        print(
            f"{label:<9} {report.planned} reminders, {report.messages} messages in {elapsed:.1f} s = "
            f"{report.planned / elapsed:,.0f} reminders/s, {report.messages / elapsed:,.0f} messages/s"
        )
        print(f"          peak RSS so far {_peak_rss_mib():.0f} MiB")
    with database.session() as session:
        rows = session.scalar(select(func.count()).select_from(ScheduledReminder))
        outbox = session.scalar(select(func.count()).select_from(Outbox))
    print(f"check     {rows} reminder rows, {outbox} outbox rows (re-plan must add none)")
    for method, seconds in raw_outbox_inserts(database, batch_size).items():
        print(
            f"raw       {method}: {outbox} outbox rows in {seconds:.1f} s = {outbox / seconds:,.0f} rows/s; "
            f"planning/raw ratio {seconds / planned_seconds:.2f}"
        )


def raw_outbox_inserts(database: Database, batch_size: int) -> dict[str, float]:
    """Seconds to bulk-insert the outbox rows planning wrote into an empty copy of the table (same columns,
    indexes and foreign key): the floor that planning's own writes are measured against."""
    scratch = Outbox.__table__.to_metadata(MetaData(), name="bench_outbox_raw")
    for named in [*scratch.indexes, *scratch.constraints]:
        if isinstance(named.name, str):
            named.name = f"bench_{named.name}"
    Table("messages", scratch.metadata, autoload_with=database.engine)  # the FK to messages stays, as in outbox
    columns = ["message_id", "channel", "initiated_by", "status", "attempts", "next_attempt_at", "created_at"]
    with database.engine.connect() as connection:
        rows = [tuple(row) for row in connection.execute(select(*(Outbox.__table__.c[c] for c in columns)))]
    timings = {}
    methods = ["executemany"] + (["copy"] if database.dialect == "postgresql" else [])
    for method in methods:
        scratch.drop(database.engine, checkfirst=True)
        scratch.create(database.engine)
        started = time.perf_counter()
        with database.engine.begin() as connection:
            if method == "copy":
                sql = f"COPY bench_outbox_raw ({', '.join(columns)}) FROM STDIN"
                with connection.connection.cursor() as cursor, cursor.copy(sql) as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                for start in range(0, len(rows), batch_size):
                    chunk = [dict(zip(columns, row, strict=True)) for row in rows[start : start + batch_size]]
                    connection.execute(insert(scratch), chunk)
        timings[method] = time.perf_counter() - started
    scratch.drop(database.engine)
    return timings


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
