"""Engine turns per second on one core, with the offline NLU: `python bench/engine.py [--turns 20000]`.

Measures DialogEngine.handle alone (NLU + flow walk + negotiation; no database), then the NLU alone, and
prints both rates and the share of a turn spent understanding the message.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.domain import ConversationState, InboundMessage, Money
from bot.engine import DebtorFacts, DialogEngine
from bot.nlu.offline import OfflineNLU

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
CONVERSATION = [
    "hola",
    "cuánto debo?",
    "quiero pagar en cuotas",
    "en 12 cuotas",
    "puedo 30 mil al mes",
    "acepto",
    "le pago el viernes",
    "gracias",
    "I want to pay my bill",
    "can I pay in installments?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=20_000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the issue asks
    nlu = OfflineNLU()
    engine = DialogEngine(nlu)
    facts = DebtorFacts(
        debtor_name="Ana",
        creditor_name="Aguas del Valle",
        locale="es-CL",
        timezone="America/Santiago",
        currency="CLP",
        balance=Money(120_000, "CLP"),
        next_due_date=date(2026, 12, 5),
    )
    engine_rate = _engine_rate(engine, facts, args.turns)
    nlu_rate = _nlu_rate(nlu, args.turns)
    print(f"engine turns/s (one core, offline NLU): {engine_rate:,.0f}")
    print(f"per turn: {1e6 / engine_rate:,.0f} µs")
    print(f"NLU alone messages/s: {nlu_rate:,.0f}")
    print(f"NLU share of a turn: {engine_rate / nlu_rate:.0%}")


def _engine_rate(engine: DialogEngine, facts: DebtorFacts, turns: int) -> float:
    state = ConversationState("collections", 1, "start", identity_verified=True)
    started = time.perf_counter()
    for number in range(turns):
        text = CONVERSATION[number % len(CONVERSATION)]
        if number % len(CONVERSATION) == 0:
            state = ConversationState("collections", 1, "start", identity_verified=True)
        turn = engine.handle(state, InboundMessage("sms", "+56961234567", text), facts, lambda: NOW)
        state = turn.state if turn.state.mode == "bot" else state
    return turns / (time.perf_counter() - started)


def _nlu_rate(nlu: OfflineNLU, count: int) -> float:
    started = time.perf_counter()
    for number in range(count):
        nlu.understand(
            CONVERSATION[number % len(CONVERSATION)], locale="es", timezone="America/Santiago", currency="CLP", now=NOW
        )
    return count / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
