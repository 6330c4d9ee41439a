"""Benchmark risk scoring: N debtors (bench/campaign.py's data set) scored and written back in one run.

    .venv/bin/python bench/risk.py --debtors 100000
    .venv/bin/python bench/risk.py --debtors 1000000 --database-url postgresql://postgres@127.0.0.1:5432/scratch

Prints the debtors scored, the seconds and debtors/s, the SQL statements sent, the RSS before scoring and the
peak RSS of the process. With `--reuse`, a database that already holds the bench creditor is scored as it is
(no new data), so the same data can be scored by two versions of the code.
"""

from __future__ import annotations

import argparse
import inspect
import resource
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.campaign import NOW, bench_database, generate  # the same debtors and invoices the planning bench uses
from bot.models import Creditor, Debtor
from bot.risk import score_debtors
from bot.store import Database

BENCH_CREDITOR = "bench-campaign"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debtors", type=int, default=100_000)
    parser.add_argument("--database-url", default="", help="an empty database; default: a temporary SQLite file")
    parser.add_argument("--batch-size", type=int, default=1000, help="debtors per page, where scoring pages")
    parser.add_argument("--reuse", action="store_true", help="score the bench creditor already in the database")
    args = parser.parse_args()
    with bench_database(args.database_url, "risk") as database:
        bench(database, args.debtors, args.batch_size, reuse=args.reuse)


def bench(database: Database, debtors: int, batch_size: int, *, reuse: bool) -> None:
    creditor_id = _existing_creditor(database) if reuse else None
    if creditor_id is None:
        started = time.perf_counter()
        creditor_id, invoices = generate(database, debtors)
        print(f"data      {debtors} debtors, {invoices} invoices in {time.perf_counter() - started:.1f} s")
    with database.session() as session:
        debtors = session.scalar(select(func.count()).where(Debtor.creditor_id == creditor_id)) or 0
    print(f"before    RSS {_rss_mib():.0f} MiB, peak so far {_peak_rss_mib():.0f} MiB")
    statements = _count_statements(database)
    # The code before paging took no batch size: the bench runs against both versions.
    options: dict[str, Any] = (
        {"batch_size": batch_size} if "batch_size" in inspect.signature(score_debtors).parameters else {}
    )
    with database.session() as session:
        started, cpu = time.perf_counter(), time.process_time()
        scored = score_debtors(session, creditor_id, NOW, **options)
        session.commit()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert scored == debtors, (scored, debtors)
    print(
        f"score     {scored} debtors in {elapsed:.1f} s = {scored / elapsed:,.0f} debtors/s "
        f"(process CPU {cpu:.1f} s = {cpu / scored * 1e6:.0f} µs/debtor), {statements[0]} SQL statements"
    )
    print(f"after     RSS {_rss_mib():.0f} MiB, peak RSS {_peak_rss_mib():.0f} MiB")


def _existing_creditor(database: Database) -> int | None:
    with database.session() as session:
        return session.scalar(select(Creditor.id).where(Creditor.slug == BENCH_CREDITOR))


def _count_statements(database: Database) -> list[int]:
    counter = [0]

    @event.listens_for(database.engine, "before_cursor_execute")
    def count(*_args: Any) -> None:
        counter[0] += 1

    return counter


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:  # resident pages, Linux
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
