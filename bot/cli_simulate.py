"""`cobrabot simulate`: run the reminder cadences against a simulated year before publishing one (docs/simulate.md)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import click

from bot.simulate import DEFAULT_START, SimulationConfig, describe, simulate


@click.command("simulate")
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 730), help="Simulated days to run.")
@click.option("--debtors", default=200, show_default=True, type=click.IntRange(1, 100_000), help="Synthetic debtors.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same portfolio and same figures.")
@click.option("--creditor-country", default="CL", show_default=True, help="ISO country whose contact rules apply.")
@click.option(
    "--start", type=click.DateTime(["%Y-%m-%d"]), default=DEFAULT_START.strftime("%Y-%m-%d"), show_default=True,
    help="First simulated day (UTC midnight).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead of text.")
def simulate_command(days: int, debtors: int, seed: int, creditor_country: str, start: datetime, as_json: bool) -> None:
    """Run the active cadences on a scratch database with simulated debtors and print the figures.

    Exits 1 when any message was sent outside allowed hours or over a cap (the figures must show 0).
    """
    config = SimulationConfig(
        days=days, debtors=debtors, seed=seed, creditor_country=creditor_country.upper(),
        start=start.replace(tzinfo=UTC),
    )  # fmt: skip
    began = time.monotonic()
    result = simulate(config)
    if as_json:
        click.echo(json.dumps(result.figures(), indent=2, sort_keys=True))
    else:
        for line in describe(result):
            click.echo(line)
        click.echo(f"(simulated in {time.monotonic() - began:.1f} s)")
    if result.quiet_hour_violations or result.cap_violations:
        raise SystemExit(1)
