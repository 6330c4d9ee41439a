"""`cobrabot nlu`: try the offline understanding on messages (parse) and score it on a labelled file (eval)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from bot.domain import Entities


def _timezone(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"unknown IANA time zone {value!r}") from None
    return value


def _currency(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from babel.numbers import list_currencies

    if value.upper() not in list_currencies():
        raise click.BadParameter(f"unknown ISO 4217 currency {value!r}")
    return value.upper()


def _now(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 timestamp: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_timezone_option = click.option(
    "--timezone", default="America/Santiago", show_default=True, callback=_timezone, help="Debtor's IANA time zone."
)
_currency_option = click.option(
    "--currency", default="CLP", show_default=True, callback=_currency, help="Debtor's ISO 4217 currency."
)
_now_option = click.option(
    "--now", "now", default=None, callback=_now, help="Reference time (ISO 8601; naive means UTC). Default: now."
)


@click.group("nlu")
def nlu_group() -> None:
    """Offline natural-language understanding (intents and entities, es/en)."""


@nlu_group.command("parse")
@click.option("--locale", type=click.Choice(["es", "en"]), default=None, help="Message language (default: detect).")
@_timezone_option
@_currency_option
@_now_option
def parse(locale: str | None, timezone: str, currency: str, now: datetime) -> None:
    """Read one message per line on stdin; print one JSON object per message."""
    from bot.nlu.offline import OfflineNLU

    nlu = OfflineNLU()
    for line in sys.stdin:
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        result = nlu.understand(text, locale=locale, timezone=timezone, currency=currency, now=now)
        row = {
            "text": result.text,
            "intent": result.intent.value,
            "confidence": round(result.confidence, 4),
            "locale": result.locale,
            "entities": entities_json(result.entities),
        }
        click.echo(json.dumps(row, ensure_ascii=False))


def entities_json(entities: Entities) -> dict[str, Any]:
    """Dates as ISO strings, amounts as decimal strings in major units with their currency."""
    return {
        "dates": [day.isoformat() for day in entities.dates],
        "amounts": [{"amount": str(money.amount), "currency": money.currency} for money in entities.amounts],
        "installments": entities.installments,
        "reference": entities.reference,
    }


@nlu_group.command("eval")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--mistakes", is_flag=True, help="Also list every misclassified message.")
@click.option("--fail-under", type=click.FloatRange(0, 1), default=None, help="Exit 1 if accuracy is below this.")
@_timezone_option
@_currency_option
@_now_option
def evaluate_command(
    path: Path, mistakes: bool, fail_under: float | None, timezone: str, currency: str, now: datetime
) -> None:
    """Score the offline NLU on a labelled JSONL file ({"text", "intent", "locale"} per line)."""
    from bot.nlu.eval import MalformedDataset, evaluate, format_report, load_labelled
    from bot.nlu.offline import OfflineNLU

    try:
        messages = load_labelled(path)
    except MalformedDataset as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    report = evaluate(OfflineNLU(), messages, timezone=timezone, currency=currency, now=now)
    click.echo(format_report(report, show_mistakes=mistakes))
    if fail_under is not None and report.accuracy < fail_under:
        raise click.ClickException(f"accuracy {report.accuracy:.3f} is below {fail_under:.3f}")
