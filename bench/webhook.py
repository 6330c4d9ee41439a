"""Benchmark the Twilio SMS webhook under gunicorn against a bare Flask app on the same server settings.

    .venv/bin/python bench/webhook.py
    .venv/bin/python bench/webhook.py --requests 5000 --concurrency 16 --redis-url redis://127.0.0.1:6379/0

Creates a scratch PostgreSQL database (dropped at the end, even on failure), migrates it, loads debtors with
invoices, then serves Cobrabot with gunicorn on 127.0.0.1 and posts signed SMS webhooks (unique MessageSids, many
distinct debtors) through the whole path: signature check, dedupe, engine with offline NLU, transaction, outbox.
The same load then goes to bench/bare_app.py under the same gunicorn settings. Prints msg/s, p50/p99 latency and
the ratio to bare Flask, then a cProfile of the same payloads through app.test_client() in this process.

The load generator runs in this process, on the same cores as the server: figures are lower bounds.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import os
import pstats
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.config import load_settings  # noqa: E402
from bot.domain import utcnow  # noqa: E402
from bot.migrate import upgrade  # noqa: E402
from bot.models import Creditor, Debtor, Invoice, Message, Outbox  # noqa: E402
from bot.store import Database  # noqa: E402

PATH = "/webhooks/twilio/sms"
PUBLIC_URL = "https://bench.cobrabot.invalid"
SID, TOKEN, SMS_FROM = "AC" + "b" * 32, "bench-twilio-token", "+15005550006"
SECRET = "bench-secret-key-" + "x" * 32
# A debtor's first turns: a greeting (verification question), then typical replies the offline NLU classifies.
BODIES = ("hola", "cuánto debo?", "quiero pagar", "puedo pagar el viernes", "gracias")


@dataclass
class RunResult:
    label: str
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    elapsed: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process group while driving
    drained: float | None = None  # queue mode: seconds from the first request (or the resume) to an empty inbox
    drain_cpu: dict[str, float] = field(default_factory=dict)  # --drain-after: CPU seconds while draining
    started_at: datetime | None = None

    @property
    def ok(self) -> int:
        return self.statuses[200]

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="", help="COBRABOT_REDIS_URL for the app (locks, rate limits)")
    parser.add_argument("--debtors", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=10_000, help="per target, after warm-up")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32, help="client connections (keep-alive)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="time cap per target")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="gthread threads per worker")
    parser.add_argument("--profile", type=int, default=1000, help="in-process requests to profile; 0 skips")
    parser.add_argument("--profile-only", action="store_true", help="skip the gunicorn runs")
    parser.add_argument(
        "--queue",
        action="store_true",
        help="COBRABOT_INBOUND_QUEUE: webhooks store and answer, inbox workers run the turns",
    )
    parser.add_argument("--inbox-workers", type=int, default=1, help="queue mode: `cobrabot inbox-worker` processes")
    parser.add_argument("--inbox-threads", type=int, default=4, help="queue mode: threads per inbox worker")
    parser.add_argument(
        "--drain-after",
        action="store_true",
        help="queue mode: stop the inbox workers (SIGSTOP) during the load, then time how they drain the backlog",
    )
    args = parser.parse_args()
    with scratch_database(args.server_url) as url:
        run(args, url)


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A fresh database on the server, dropped on the way out whatever happened."""
    server = load_settings(database_url=server_url).database_url
    name = f"cobrabench_webhook_{os.getpid()}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        print(f"dropped   {name}")


def run(args: argparse.Namespace, url: str) -> None:
    print(f"database  {make_url(url).render_as_string(hide_password=True).split('@')[-1]}")
    upgrade(url)
    started = time.perf_counter()
    phones = seed(url, args.debtors)
    print(f"data      {len(phones)} debtors with invoices in {time.perf_counter() - started:.1f} s")
    env = os.environ | {
        "COBRABOT_DATABASE_URL": url,
        "COBRABOT_PUBLIC_URL": PUBLIC_URL,
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "COBRABOT_TWILIO_SMS_FROM": SMS_FROM,
        "COBRABOT_SECRET_KEY": SECRET,
        "COBRABOT_REDIS_URL": args.redis_url,
        "COBRABOT_INBOUND_QUEUE": "true" if args.queue else "false",
    }
    payloads = Payloads(phones)
    total = args.warmup + args.requests
    results = []
    targets = () if args.profile_only else (("cobrabot", "bot.wsgi:app"), ("bare flask", "bare_app:app"))
    for label, target in targets:
        requests = payloads.take(total) if label == "cobrabot" else payloads.bare(total)
        workers = args.inbox_workers if args.queue and label == "cobrabot" else 0
        database = make_url(url).database or ""
        with (
            gunicorn(target, env, args.workers, args.threads) as (port, master),
            inbox_workers(env, workers, args.inbox_threads) as worker_pids,
        ):
            drive(port, requests[: args.warmup], args.concurrency, args.max_seconds, "warm-up")
            if workers:
                wait_drained(url, time.perf_counter())
            paused = _signal_all(worker_pids, signal.SIGSTOP) if args.drain_after else set()
            before = cpu_seconds(master, database, worker_pids)
            result = drive(port, requests[args.warmup :], args.concurrency, args.max_seconds, label)
            if workers and not paused:
                result.drained = wait_drained(url, time.perf_counter() - result.elapsed)
            after = cpu_seconds(master, database, worker_pids)
            result.cpu = {group: after[group] - before.get(group, 0.0) for group in after}
            if paused:
                # The burst was only accepted; now the workers, stopped meanwhile, work through the backlog.
                _signal_all(paused, signal.SIGCONT)
                result.drained = wait_drained(url, time.perf_counter())
                drained = cpu_seconds(master, database, worker_pids)
                result.drain_cpu = {group: drained[group] - after.get(group, 0.0) for group in drained}
        results.append(result)
    if results:
        report(results, args)
        check(url, results[0])
    if args.profile:
        profile(url, args.redis_url, payloads.take(args.profile), queue=args.queue)


def seed(url: str, debtors: int) -> list[str]:
    """Debtors with one or two overdue invoices each; core inserts, 2,000 a batch. Returns their phones."""
    rng = random.Random(11)
    database = Database(url)
    today = utcnow().date()
    phones = [f"+5697{n:07d}" for n in range(debtors)]
    try:
        with database.session() as session:
            creditor = Creditor(slug="bench-webhook", name="Bench", country="CL", currency="CLP")
            session.add(creditor)
            session.commit()
            creditor_id = creditor.id
        for start in range(0, debtors, 2000):
            rows = [
                {"creditor_id": creditor_id, "external_ref": f"W{n}", "name": "Ana Pérez", "locale": "es-CL",
                 "phone": phones[n], "timezone": "America/Santiago", "channel_preference": ["sms"],
                 "risk_factors": {}}
                for n in range(start, min(debtors, start + 2000))
            ]  # fmt: skip
            with database.session() as session:
                ids = session.scalars(insert(Debtor).returning(Debtor.id), rows).all()
                invoices = [_invoice(rng, creditor_id, i, k, today) for i in ids for k in range(rng.randint(1, 2))]
                session.execute(insert(Invoice), invoices)
                session.commit()
        with database.engine.connect() as connection:
            connection.execute(text("ANALYZE"))
            connection.commit()
    finally:
        database.dispose()
    return phones


def _invoice(rng: random.Random, creditor_id: int, debtor_id: int, k: int, today: date) -> dict[str, object]:
    amount = rng.randrange(5_000, 500_000)
    return {"creditor_id": creditor_id, "debtor_id": debtor_id, "number": f"{debtor_id}-{k}", "amount_minor": amount,
            "balance_minor": amount, "currency": "CLP", "due_date": today - timedelta(days=rng.randint(1, 60)),
            "status": "open", "issued_on": today - timedelta(days=90)}  # fmt: skip


class Payloads:
    """Signed form bodies, built before any clock starts: debtor i gets request i, i + N, ... so concurrent
    requests come from distinct debtors and each debtor walks through BODIES in order."""

    def __init__(self, phones: list[str]) -> None:
        self.phones = phones
        self.sent = 0
        self.validator = RequestValidator(TOKEN)

    def form(self, n: int) -> dict[str, str]:
        phone = self.phones[n % len(self.phones)]
        body = BODIES[(n // len(self.phones)) % len(BODIES)]
        return {"MessageSid": f"SM{n:032x}", "AccountSid": SID, "From": phone, "To": SMS_FROM, "Body": body}

    def take(self, count: int) -> list[tuple[bytes, dict[str, str]]]:
        forms = [self.form(n) for n in range(self.sent, self.sent + count)]
        self.sent += count
        return [(urlencode(form).encode(), self.headers(form)) for form in forms]

    def headers(self, form: dict[str, str]) -> dict[str, str]:
        return {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": self.validator.compute_signature(PUBLIC_URL + PATH, form),
        }

    def bare(self, count: int) -> list[tuple[bytes, dict[str, str]]]:
        """Same shape and size as the real requests, without consuming MessageSids the profile will use."""
        forms = [self.form(10_000_000 + n) for n in range(count)]
        return [(urlencode(form).encode(), self.headers(form)) for form in forms]


@contextmanager
def gunicorn(target: str, env: dict[str, str], workers: int, threads: int) -> Iterator[tuple[int, int]]:
    """gthread workers: each request is a short CPU burst plus a few database round trips, so a handful of
    threads per worker keeps both cores busy while one thread waits on PostgreSQL; sync workers would idle
    during those waits, and async workers would need gevent-patched drivers."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--worker-class", "gthread",
               "--threads", str(threads), "--bind", f"127.0.0.1:{port}", "--pythonpath", f"{ROOT},{ROOT / 'bench'}",
               "--log-level", "warning", "--keep-alive", "30", target]  # fmt: skip
    process = subprocess.Popen(command, env=env, cwd=ROOT)
    try:
        wait_ready(port, process)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def inbox_workers(env: dict[str, str], count: int, threads: int) -> Iterator[set[int]]:
    """Queue mode: `cobrabot inbox-worker` processes draining the inbox while the load runs."""
    command = [str(Path(sys.executable).parent / "cobrabot"), "inbox-worker", "--threads", str(threads)]
    processes = [subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL) for _ in range(count)]
    try:
        yield {process.pid for process in processes}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _signal_all(pids: set[int], signum: int) -> set[int]:
    for pid in pids:
        os.kill(pid, signum)
    return pids


def wait_drained(url: str, since: float, timeout: float = 600.0) -> float:
    """Seconds from `since` (perf_counter) until the inbox is empty, polled every 50 ms."""
    engine = create_engine(load_settings(database_url=url).database_url)
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as connection:
            while connection.execute(text("SELECT count(*) FROM inbox")).scalar():
                connection.commit()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the inbox was not drained after {timeout:.0f} s")
                time.sleep(0.05)
    finally:
        engine.dispose()
    return time.perf_counter() - since


def cpu_seconds(gunicorn_master: int, database: str, inbox_pids: set[int] = frozenset()) -> dict[str, float]:
    """CPU (user + system) so far of the gunicorn master and workers, the inbox workers, the PostgreSQL backends
    serving the scratch database, and this process (the load generator), from /proc; empty where there is no
    /proc."""
    groups: dict[str, float] = {}
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended meanwhile
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ..., utime (12th), stime
        pid, parent, used = int(entry.name), int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks
        if gunicorn_master in (pid, parent):
            group = "gunicorn"
        elif pid in inbox_pids:
            group = "inbox workers"
        elif command.startswith("postgres:") and f" {database} " in command:
            group = "postgres"
        elif pid == os.getpid():
            group = "load generator"
        else:
            continue
        groups[group] = groups.get(group, 0.0) + used
    return groups


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status < 500:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn on port {port} not ready after {timeout:.0f} s")


def drive(
    port: int, requests: list[tuple[bytes, dict[str, str]]], concurrency: int, max_seconds: float, label: str
) -> RunResult:
    """Post every request once over `concurrency` keep-alive connections, stopping early at the time cap."""
    result = RunResult(label, started_at=utcnow())
    lock = threading.Lock()
    cursor = iter(range(len(requests)))
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        latencies, statuses, errors = [], Counter[int](), 0
        while time.monotonic() < deadline:
            with lock:
                index = next(cursor, None)
            if index is None:
                break
            body, headers = requests[index]
            started = time.perf_counter()
            try:
                connection.request("POST", PATH, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                statuses[response.status] += 1
                latencies.append(time.perf_counter() - started)
            except (OSError, http.client.HTTPException):
                errors += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.close()
        with lock:
            result.latencies += latencies
            result.statuses.update(statuses)
            result.errors += errors

    threads = [threading.Thread(target=worker) for _ in range(min(concurrency, len(requests)))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.elapsed = time.perf_counter() - started
    print(f"{label:<10} {sum(result.statuses.values())} responses {dict(result.statuses)} in {result.elapsed:.1f} s")
    return result


def report(results: list[RunResult], args: argparse.Namespace) -> None:
    app, bare = results
    print()
    print(f"gunicorn gthread, {args.workers} workers x {args.threads} threads; {args.concurrency} client connections;")
    print(f"{os.cpu_count()} CPUs shared with the load generator; redis: {args.redis_url or 'no'}")
    print(f"{'target':<12}{'ok':>8}{'errors':>8}{'msg/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for result in results:
        worst = max(result.latencies, default=0.0) * 1000
        failed = result.errors + sum(v for k, v in result.statuses.items() if k != 200)
        print(
            f"{result.label:<12}{result.ok:>8}{failed:>8}{result.rate:>10,.0f}"
            f"{result.percentile(0.5):>10.1f}{result.percentile(0.99):>10.1f}{worst:>10.1f}"
        )
    for result in results:
        if result.cpu and result.ok:
            spent = ", ".join(f"{group} {seconds / result.ok * 1000:.2f}" for group, seconds in result.cpu.items())
            print(f"CPU ms per request, {result.label}: {spent}")
    ratio = app.rate / bare.rate if bare.rate else float("nan")
    print(f"ratio cobrabot / bare flask: {ratio:.2f}  (mean latency {statistics.fmean(app.latencies) * 1000:.1f} ms)")
    if app.drained is not None:
        since = "the workers resumed" if args.drain_after else "the first request"
        print(
            f"queue     {app.ok} turns done {app.drained:.1f} s after {since}: {app.ok / app.drained:,.0f} "
            f"turns/s with {args.inbox_workers} inbox worker(s) x {args.inbox_threads} threads"
        )
    if app.drain_cpu:
        spent = ", ".join(f"{group} {seconds / app.ok * 1000:.2f}" for group, seconds in app.drain_cpu.items())
        print(f"CPU ms per turn while draining: {spent}")


def check(url: str, result: RunResult) -> None:
    """Each accepted webhook should be one stored inbound message with replies queued in the outbox; prints the
    time from receiving a message to its first reply being queued (the turn's latency, queue wait included)."""
    database = Database(url)
    try:
        with database.session() as session:
            inbound = session.scalar(select(func.count()).select_from(Message).where(Message.direction == "in"))
            outbox = session.scalar(select(func.count()).select_from(Outbox))
            p50, p99 = session.execute(_REPLY_DELAY, {"since": result.started_at}).one()
    finally:
        database.dispose()
    print(f"check     {inbound} inbound messages stored (warm-up included), {outbox} outbox rows")
    print(f"reply     queued {p50 * 1000:.0f} ms (p50) / {p99 * 1000:.0f} ms (p99) after its message was received")


_REPLY_DELAY = text(
    """
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY delay), percentile_cont(0.99) WITHIN GROUP (ORDER BY delay)
    FROM (
        SELECT extract(epoch FROM (SELECT min(o.created_at) FROM messages o
                                   WHERE o.conversation_id = i.conversation_id AND o.direction = 'out' AND o.id > i.id)
                       - i.created_at) AS delay
        FROM messages i WHERE i.direction = 'in' AND i.created_at >= :since
    ) delays
    """
)


def count_round_trips(app: object, client: object, requests: list[tuple[bytes, dict[str, str]]]) -> None:
    """SQL statements, transactions and pool checkouts per webhook: on loopback PostgreSQL each is a round trip."""
    from sqlalchemy import event

    engine = app.extensions["cobrabot"].database.engine  # type: ignore[attr-defined]
    counts = Counter[str]()
    listeners = {
        "before_cursor_execute": lambda *_a, **_k: counts.update(["statements"]),
        "commit": lambda *_a: counts.update(["commits"]),
        "rollback": lambda *_a: counts.update(["rollbacks"]),
        "engine_connect": lambda *_a: counts.update(["checkouts"]),
    }
    for name, listener in listeners.items():
        event.listen(engine, name, listener)
    *counted, shown_request = requests
    for body, headers in counted:
        client.post(PATH, data=body, headers=headers)  # type: ignore[attr-defined]
    for name, listener in listeners.items():
        event.remove(engine, name, listener)
    per_request = ", ".join(f"{value / len(counted):.1f} {key}" for key, value in sorted(counts.items()))
    print(f"\nround trips per webhook ({len(counted)} in-process): {per_request}")
    if os.environ.get("BENCH_SHOW_SQL"):
        shown: list[str] = []
        event.listen(engine, "before_cursor_execute", lambda _c, _cur, sql, *_a: shown.append(" ".join(sql.split())))
        client.post(PATH, data=shown_request[0], headers=shown_request[1])  # type: ignore[attr-defined]
        print("\n".join(f"  {sql[:160]}" for sql in shown))


def time_per_webhook(client: object, requests: list[tuple[bytes, dict[str, str]]]) -> None:
    """Wall and CPU time per webhook in-process, one thread, no profiler: wall minus CPU is the time spent
    waiting on PostgreSQL (this process's CPU includes the driver's syscalls, not the server's work)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    for body, headers in requests:
        client.post(PATH, data=body, headers=headers)  # type: ignore[attr-defined]
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    count = len(requests)
    per_wall, per_cpu = wall / count * 1000, cpu / count * 1000
    print(
        f"timed     {count} webhooks in-process, one thread: {count / wall:,.0f} webhooks/s, "
        f"{per_wall:.2f} ms wall = {per_cpu:.2f} ms CPU + {per_wall - per_cpu:.2f} ms waiting"
    )


def profile(url: str, redis_url: str, requests: list[tuple[bytes, dict[str, str]]], *, queue: bool = False) -> None:
    """The same kind of payloads through app.test_client() in this process, one at a time, under cProfile (in
    queue mode: what accepting a webhook costs; the turns stay in the inbox)."""
    from bot.app import create_app

    settings = load_settings(
        database_url=url,
        redis_url=redis_url or None,
        public_url=PUBLIC_URL,
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_sms_from=SMS_FROM,
        secret_key=SECRET,
        inbound_queue=queue,
    )
    app = create_app(settings)
    client = app.test_client()
    warm, measured = requests[:50], requests[50:]
    for body, headers in warm:
        client.post(PATH, data=body, headers=headers)
    count_round_trips(app, client, measured[:50])
    timed, measured = measured[50 : len(measured) // 2], measured[len(measured) // 2 :]
    time_per_webhook(client, timed)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for body, headers in measured:
        client.post(PATH, data=body, headers=headers)
    profiler.disable()
    elapsed = time.perf_counter() - started
    calls = pstats.Stats(profiler).total_calls  # type: ignore[attr-defined]
    print(
        f"\nprofile   {len(measured)} requests in-process: {len(measured) / elapsed:,.0f} req/s under cProfile, "
        f"{calls / len(measured):,.0f} Python function calls per webhook (load-independent)"
    )
    # Own time first (where the CPU or the wait is), then cumulative time of Cobrabot's own functions only.
    for key, restriction in (("tottime", ()), ("cumulative", (r"/(bot|channels)/",))):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(*restriction, 30)
        print(out.getvalue().replace(str(ROOT) + "/", ""))
    if queue:
        profile_drain(app.extensions["cobrabot"])
    app.extensions["cobrabot"].database.dispose()


def profile_drain(services: object, batch_size: int = 32) -> None:
    """Queue mode: the turns the profile queued, drained in this process by one worker on one thread: the first
    half one by one, the second half in batches (bot/turn_batch.py). For each: turns/s and CPU per turn without
    a profiler, statements and commits per turn, then Python function calls per turn under cProfile."""
    from bot.inbox import InboxWorker

    database = services.database  # type: ignore[attr-defined]
    pending = _inbox_count(database)
    modes = (("one by one", False), ("batched", True))
    for index, (label, batched) in enumerate(modes):
        worker = InboxWorker(database, services.inbound, services.clock, batch_size=batch_size, batched=batched)  # type: ignore[attr-defined]
        share = pending // 2 if index == 0 else _inbox_count(database)  # the second mode drains what is left
        counts = Counter[str]()
        turns, wall, cpu = _drain_for(worker, share * 3 // 5, counts)
        profiler = cProfile.Profile()
        profiler.enable()
        profiled, _, _ = _drain_for(worker, share - turns)
        profiler.disable()
        calls = pstats.Stats(profiler).total_calls  # type: ignore[attr-defined]
        per_turn = ", ".join(f"{value / turns:.2f} {key}" for key, value in sorted(counts.items()))
        print(
            f"drain     {label:<10} {turns} turns in-process, one thread: {turns / wall:,.0f} turns/s, "
            f"{wall / turns * 1000:.2f} ms wall = {cpu / turns * 1000:.2f} ms CPU per turn; {per_turn}; "
            f"{calls / max(profiled, 1):,.0f} Python function calls per turn"
        )
        if index == len(modes) - 1:
            for key, restriction in (("tottime", ()), ("cumulative", (r"/(bot|channels)/",))):
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(*restriction, 25)
                print(out.getvalue().replace(str(ROOT) + "/", ""))
        worker.close()


def _inbox_count(database: Database) -> int:
    with database.engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM inbox")).scalar_one()


def _drain_for(worker: object, turns: int, counts: Counter[str] | None = None) -> tuple[int, float, float]:
    """Run claims until `turns` messages are processed (or the inbox is empty): (turns, wall s, CPU s); with
    `counts`, the statements and commits it took are added there."""
    from sqlalchemy import event

    engine = worker.database.engine  # type: ignore[attr-defined]
    listeners = {
        "before_cursor_execute": lambda *_a, **_k: counts.update(["statements"]),
        "commit": lambda *_a: counts.update(["commits"]),
    } if counts is not None else {}  # fmt: skip
    for name, listener in listeners.items():
        event.listen(engine, name, listener)
    done, wall, cpu = 0, time.perf_counter(), time.process_time()
    while done < turns:
        report = worker.run_once()  # type: ignore[attr-defined]
        if not report.claimed:
            break
        done += report.processed
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for name, listener in listeners.items():
        event.remove(engine, name, listener)
    return done, wall, cpu


if __name__ == "__main__":
    main()
