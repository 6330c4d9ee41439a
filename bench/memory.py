"""Resident memory while the inbound path handles 100,000 conversations: `python bench/memory.py [--conversations N]`.

Seeds N debtors with an overdue invoice in a scratch database (SQLite file by default, or `--database-url` for
a PostgreSQL server database to create and drop), then sends each debtor one web-chat message through
`ConversationService.receive` (lookup, dedupe, engine with offline NLU, transaction) in one process, sampling
the process's RSS every tenth of the run. Memory is flat when the last samples stay within a few MB of the
first ones after warm-up: per-conversation state must live in the database, not in the process.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.config import load_settings  # noqa: E402
from bot.domain import InboundMessage, utcnow  # noqa: E402
from bot.migrate import upgrade  # noqa: E402
from bot.models import Creditor, Debtor, Invoice  # noqa: E402
from bot.services import bootstrap  # noqa: E402
from bot.store import Database  # noqa: E402

TEXTS = ("hola", "cuánto debo?", "quiero pagar", "puedo pagar el viernes", "no puedo pagar")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed(database: Database, count: int) -> list[int]:
    today = utcnow().date()
    with database.session() as session:
        creditor = Creditor(slug="bench-memory", name="Bench", country="CL", currency="CLP")
        session.add(creditor)
        session.commit()
        creditor_id = creditor.id
    ids: list[int] = []
    for start in range(0, count, 5000):
        rows = [
            {"creditor_id": creditor_id, "external_ref": f"M{n}", "name": "Ana Pérez", "locale": "es-CL",
             "timezone": "America/Santiago", "channel_preference": ["webchat"], "risk_factors": {}}
            for n in range(start, min(count, start + 5000))
        ]  # fmt: skip
        with database.session() as session:
            batch = session.scalars(insert(Debtor).returning(Debtor.id), rows).all()
            session.execute(
                insert(Invoice),
                [{"creditor_id": creditor_id, "debtor_id": i, "number": f"M-{i}", "amount_minor": 45990,
                  "balance_minor": 45990, "currency": "CLP", "due_date": today - timedelta(days=10),
                  "status": "open", "issued_on": today - timedelta(days=40)} for i in batch],
            )  # fmt: skip
            session.commit()
        ids += batch
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--database-url", default="", help="default: a scratch SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite:///{scratch}/memory.db"
        upgrade(url)
        settings = load_settings(database_url=url, secret_key="bench-secret-" + "x" * 32)
        services = bootstrap(settings)
        started = time.perf_counter()
        debtors = seed(services.database, args.conversations)
        print(f"seeded    {len(debtors):,} debtors in {time.perf_counter() - started:.1f} s; RSS {rss_mb():.0f} MB")
        run(services, debtors)
        services.database.dispose()


def run(services: object, debtors: list[int]) -> None:
    rng = random.Random(5)
    step = max(1, len(debtors) // 10)
    samples: list[tuple[int, float]] = []
    started = time.perf_counter()
    for n, debtor_id in enumerate(debtors, start=1):
        message = InboundMessage(
            channel="webchat", sender=f"portal:{debtor_id}", text=rng.choice(TEXTS),
            provider_message_id=f"mem-{debtor_id}", received_at=utcnow(),
        )  # fmt: skip
        services.conversations.receive(message, debtor_id, verified=True)  # type: ignore[attr-defined]
        if n % step == 0:
            samples.append((n, rss_mb()))
            print(f"{n:>9,} conversations  RSS {samples[-1][1]:7.1f} MB  {n / (time.perf_counter() - started):6.0f}/s")
    if len(samples) >= 3:
        warm, last = samples[1][1], samples[-1][1]
        per_10k = (last - warm) / ((samples[-1][0] - samples[1][0]) / 10_000)
        print(f"growth after warm-up: {last - warm:+.1f} MB over {samples[-1][0] - samples[1][0]:,} conversations"
              f" ({per_10k:+.2f} MB per 10,000)")  # fmt: skip


if __name__ == "__main__":
    main()
