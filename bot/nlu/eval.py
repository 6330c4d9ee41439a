"""Scoring an understander against a labelled JSONL file: accuracy, per-intent precision/recall/F1, confusions.

Each line of the file is {"text": ..., "intent": ..., "locale": "es" | "en"}; anything else is an error with
its line number, so a broken file can never produce a flattering figure.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bot.domain import Intent
from bot.nlu import LANGUAGES, Understander, detect_language


class MalformedDataset(ValueError):
    """The labelled file has a line that is not a valid labelled message."""


@dataclass(frozen=True, slots=True)
class LabelledMessage:
    text: str
    intent: Intent
    locale: str


@dataclass(frozen=True, slots=True)
class IntentScore:
    intent: Intent
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True, slots=True)
class Mistake:
    message: LabelledMessage
    predicted: Intent
    confidence: float


@dataclass(frozen=True, slots=True)
class EvalReport:
    total: int
    correct: int
    scores: tuple[IntentScore, ...]
    confusion: dict[tuple[Intent, Intent], int]  # (expected, predicted) -> count, diagonal included
    mistakes: tuple[Mistake, ...]
    language_correct: int  # detect_language() agreeing with the labelled locale
    mean_ms: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def recall(self, intent: Intent) -> float:
        return next(score.recall for score in self.scores if score.intent is intent)


def load_labelled(path: Path) -> list[LabelledMessage]:
    """Parse and validate a labelled JSONL file; blank lines are allowed, nothing else is forgiven."""
    messages = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            messages.append(_parse_line(line, number))
    if not messages:
        raise MalformedDataset(f"{path}: no labelled messages")
    return messages


def _parse_line(line: str, number: int) -> LabelledMessage:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise MalformedDataset(f"line {number}: not JSON ({exc.msg})") from None
    if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
        raise MalformedDataset(f"line {number}: expected an object with a non-empty 'text'")
    if row.get("locale") not in LANGUAGES:
        raise MalformedDataset(f"line {number}: 'locale' must be one of {', '.join(LANGUAGES)}")
    try:
        intent = Intent(row.get("intent"))
    except ValueError:
        raise MalformedDataset(f"line {number}: unknown intent {row.get('intent')!r}") from None
    return LabelledMessage(row["text"], intent, row["locale"])


def evaluate(
    understander: Understander,
    messages: Sequence[LabelledMessage],
    *,
    timezone: str = "America/Santiago",
    currency: str = "CLP",
    now: datetime,
) -> EvalReport:
    """Run every message through `understander` with its labelled locale and score the intents."""
    pairs: list[tuple[Intent, Intent]] = []
    mistakes = []
    started = time.perf_counter()
    for message in messages:
        result = understander.understand(
            message.text, locale=message.locale, timezone=timezone, currency=currency, now=now
        )
        pairs.append((message.intent, result.intent))
        if result.intent is not message.intent:
            mistakes.append(Mistake(message, result.intent, result.confidence))
    elapsed = time.perf_counter() - started
    return EvalReport(
        total=len(pairs),
        correct=sum(expected is predicted for expected, predicted in pairs),
        scores=_scores(pairs),
        confusion=dict(Counter(pairs)),
        mistakes=tuple(mistakes),
        language_correct=sum(detect_language(message.text) == message.locale for message in messages),
        mean_ms=1000 * elapsed / max(len(pairs), 1),
    )


def _scores(pairs: Sequence[tuple[Intent, Intent]]) -> tuple[IntentScore, ...]:
    scores = []
    for intent in Intent:
        true_positive = sum(expected is intent and predicted is intent for expected, predicted in pairs)
        predicted_count = sum(predicted is intent for _, predicted in pairs)
        support = sum(expected is intent for expected, _ in pairs)
        if not support and not predicted_count:
            continue
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append(IntentScore(intent, precision, recall, f1, support))
    return tuple(scores)


def format_report(report: EvalReport, *, show_mistakes: bool = False) -> str:
    """Plain-text report: headline figures, the per-intent table and the confusions, most frequent first."""
    lines = [
        f"messages: {report.total}",
        f"accuracy: {report.accuracy:.3f} ({report.correct}/{report.total})",
        f"language detection: {report.language_correct / max(report.total, 1):.3f}",
        f"mean latency: {report.mean_ms:.3f} ms/message",
        "",
        f"{'intent':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    lines += [
        f"{s.intent.value:<16}{s.precision:>10.3f}{s.recall:>10.3f}{s.f1:>10.3f}{s.support:>10}" for s in report.scores
    ]
    lines += ["", *_matrix(report), "", "confusions (expected -> predicted: count):"]
    wrong = [(pair, count) for pair, count in report.confusion.items() if pair[0] is not pair[1]]
    ranked = sorted(wrong, key=lambda item: (-item[1], item[0][0].value, item[0][1].value))
    lines += [f"  {expected.value} -> {predicted.value}: {count}" for (expected, predicted), count in ranked]
    if not ranked:
        lines.append("  none")
    if show_mistakes:
        lines += ["", "mistakes:"]
        lines += [
            f"  [{m.message.locale}] {m.message.text!r}: expected {m.message.intent.value}, "
            f"got {m.predicted.value} ({m.confidence:.2f})"
            for m in report.mistakes
        ]
    return "\n".join(lines)


def _matrix(report: EvalReport) -> list[str]:
    """Rows are expected intents, numbered columns the predicted ones (same numbering), zeros as dots."""
    intents = [intent for intent in Intent if any(intent in pair for pair in report.confusion)]
    header = "expected \\ predicted".ljust(22) + "".join(f"{n:>4}" for n in range(1, len(intents) + 1))
    rows = [
        f"{n:>2} {expected.value:<19}"
        + "".join(f"{report.confusion.get((expected, predicted), 0) or '.':>4}" for predicted in intents)
        for n, expected in enumerate(intents, start=1)
    ]
    return [header, *rows]
