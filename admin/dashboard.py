"""The managers' dashboard: KPI tiles, server-drawn SVG bar charts and a CSV export, all from bot/reports.py with
the same filters (creditor, segment, period). Managers and admins only."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from babel.numbers import format_percent, get_currency_precision
from flask import Blueprint, Response, current_app, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from admin.auth import require_role
from admin.charts import Bar, Chart
from admin.i18n import current_language, gettext
from bot.domain import Money
from bot.i18n import babel_locale, format_money
from bot.models import Creditor
from bot.reports import AGING_BUCKETS, Dashboard, Ratio, ReportError, ReportFilter, build_dashboard, segments
from bot.services import Services

blueprint = Blueprint("dashboard", __name__)
PRESETS = ("last_30", "this_month", "last_90", "custom")
DEFAULT_PRESET = "last_30"
PRESET_LABELS = {
    "last_30": "Last 30 days",
    "this_month": "This month",
    "last_90": "Last 90 days",
    "custom": "Custom",
}
MAX_SEGMENT = 32


class FilterError(ValueError):
    """A filter the dashboard refuses; the message is shown to the manager."""


@dataclass(frozen=True, slots=True)
class Choice:
    creditor: Creditor | None
    preset: str
    filters: ReportFilter
    timezone: str


def services() -> Services:
    return current_app.extensions["cobrabot"]


@blueprint.get("/dashboard")
@require_role("manager")
def dashboard() -> ResponseReturnValue:
    with services().database.session() as session:
        creditors = list(session.scalars(select(Creditor).order_by(Creditor.name)))
        page = {"creditors": creditors, "segments": segments(session), "presets": PRESETS, "labels": PRESET_LABELS}
        try:
            choice = parse_filters(request.args, session, services().clock())
        except FilterError as exc:
            return render_template("admin/dashboard.html", error=str(exc), args=request.args, **page), 400
        report = build_dashboard(session, choice.filters, choice.timezone)
    view = DashboardView(report, _money_locale(choice))
    return render_template("admin/dashboard.html", error=None, args=request.args, choice=choice, view=view, **page)


@blueprint.get("/dashboard.csv")
@require_role("manager")
def dashboard_csv() -> ResponseReturnValue:
    with services().database.session() as session:
        try:
            choice = parse_filters(request.args, session, services().clock())
        except FilterError as exc:
            return Response(f"{exc}\n", status=400, mimetype="text/plain")
        report = build_dashboard(session, choice.filters, choice.timezone)
    name = f"cobrabot-dashboard-{choice.filters.start.isoformat()}-{choice.filters.end.isoformat()}.csv"
    return Response(
        to_csv(report),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


# --- filters -------------------------------------------------------------------------------------------------


def parse_filters(args: Mapping[str, str], session: Session, now: datetime) -> Choice:
    """The query string as a report filter; anything it cannot read raises FilterError with the reason."""
    creditor = _creditor(args.get("creditor", "").strip(), session)
    segment = args.get("segment", "").strip() or None
    if segment is not None and len(segment) > MAX_SEGMENT:
        raise FilterError(f"segment must have at most {MAX_SEGMENT} characters")
    timezone = creditor.timezone if creditor else _shared_timezone(session)
    today = now.astimezone(ZoneInfo(timezone)).date()
    custom = bool(args.get("from") or args.get("to"))
    preset = args.get("preset", "").strip() or ("custom" if custom else DEFAULT_PRESET)
    if preset not in PRESETS:
        raise FilterError(f"unknown period {preset[:20]!r}: choose one of {', '.join(PRESETS)}")
    start, end = (_date(args, "from"), _date(args, "to")) if preset == "custom" else preset_period(preset, today)
    try:
        filters = ReportFilter(creditor.id if creditor else None, segment, start, end)
    except ReportError as exc:
        raise FilterError(str(exc)) from exc
    return Choice(creditor, preset, filters, timezone)


def _creditor(raw: str, session: Session) -> Creditor | None:
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 12:
        raise FilterError(f"creditor must be a creditor id, not {raw[:20]!r}")
    creditor = session.get(Creditor, int(raw))
    if creditor is None:
        raise FilterError(f"there is no creditor with id {raw}")
    return creditor


def _shared_timezone(session: Session) -> str:
    # All creditors at once: their own midnight when they share one, else UTC (one period boundary for all).
    zones = list(session.scalars(select(Creditor.timezone).distinct().limit(2)))
    return zones[0] if len(zones) == 1 else "UTC"


def _date(args: Mapping[str, str], name: str) -> date:
    raw = args.get(name, "").strip()
    if not raw:
        raise FilterError(f"a custom period needs both dates: '{name}' is missing")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise FilterError(f"'{name}' must be a date as YYYY-MM-DD, not {raw[:20]!r}") from None


def preset_period(preset: str, today: date) -> tuple[date, date]:
    """[start, end) of a preset; the rolling ones end tonight, so today counts."""
    if preset == "this_month":
        month_start = today.replace(day=1)
        return month_start, (month_start + timedelta(days=32)).replace(day=1)
    days = 90 if preset == "last_90" else 30
    return today - timedelta(days=days - 1), today + timedelta(days=1)


def _money_locale(choice: Choice) -> str:
    if choice.creditor is not None:
        return choice.creditor.default_locale
    return "es-CL" if current_language() == "es" else "en-US"


# --- what the page shows -------------------------------------------------------------------------------------


class DashboardView:
    """The report put into words and bars in the console's language and the creditor's money format."""

    def __init__(self, report: Dashboard, locale: str) -> None:
        self.report = report
        self.locale = locale

    def money(self, minor: int, currency: str) -> str:
        return format_money(Money(minor, currency), self.locale)

    def percent(self, ratio: Ratio) -> str:
        value = ratio.value
        return "—" if value is None else format_percent(value, locale=babel_locale(self.locale), format="#,##0.#%")

    def amounts(self, by_currency: Mapping[str, int]) -> str:
        return " · ".join(self.money(minor, currency) for currency, minor in sorted(by_currency.items())) or "—"

    @property
    def median_minutes(self) -> str:
        minutes = self.report.handoffs.median_minutes
        return "—" if minutes is None else f"{minutes:.0f} min"

    def aging_charts(self) -> list[Chart]:
        labels = {"not_due": gettext("Not due"), "90+": "90+ " + gettext("days")}
        charts = []
        for currency in _currencies(self.report.aging.values()):
            bars = [
                self._money_bar(
                    labels.get(name, f"{name} {gettext('days')}"), self.report.aging[name].get(currency, 0), currency
                )
                for name in AGING_BUCKETS
            ]
            title = f"{gettext('Aging of open balance')} ({currency})"
            as_of = self.report.filters.as_of.isoformat()
            charts.append(Chart(f"aging-{currency}", title, f"{gettext('as of')} {as_of}", bars))
        return charts

    def weekly_charts(self) -> list[Chart]:
        charts = []
        period = f"{self.report.filters.start.isoformat()} – {self.report.filters.end.isoformat()}"
        for currency in _currencies(week.amounts for week in self.report.weeks):
            bars = [self._money_bar(week.label, week.amounts.get(currency, 0), currency) for week in self.report.weeks]
            title = f"{gettext('Collected per week')} ({currency})"
            charts.append(Chart(f"weekly-{currency}", title, period, bars))
        return charts

    def channel_chart(self) -> Chart:
        bars = []
        for stats in self.report.channels:
            for name, ratio in ((gettext("Delivery rate"), stats.delivery), (gettext("Response rate"), stats.response)):
                bars.append(Bar(f"{stats.channel} · {name}", ratio.value or 0, self.percent(ratio)))
        description = gettext("Delivery rate") + " / " + gettext("Response rate")
        return Chart("channels", gettext("Channels"), description, bars, full_scale=1.0)

    def _money_bar(self, label: str, minor: int, currency: str) -> Bar:
        return Bar(label, max(minor, 0), self.money(minor, currency))


def _currencies(amounts: Iterable[Mapping[str, int]]) -> list[str]:
    """The currencies with a non-zero amount somewhere: a chart of zeros says nothing."""
    return sorted({currency for by_currency in amounts for currency, minor in by_currency.items() if minor})


# --- CSV -----------------------------------------------------------------------------------------------------

CSV_HEADER = ("section", "metric", "currency", "value")


def to_csv(report: Dashboard) -> str:
    """One row per number; money in major units of its currency (CLP 13700, USD 25.00), rates as fractions."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(csv_rows(report))
    return buffer.getvalue()


def csv_rows(report: Dashboard) -> Iterator[tuple[str, str, str, str]]:
    filters = report.filters
    yield "period", "start", "", filters.start.isoformat()
    yield "period", "end_exclusive", "", filters.end.isoformat()
    yield "period", "timezone", "", report.timezone
    for currency in report.currencies:
        yield "collected", "collected", currency, _major(report.collected.get(currency, 0), currency)
        yield "recovery", "open_balance_due", currency, _major(report.open_balance.get(currency, 0), currency)
        yield "recovery", "recovery_rate", currency, _rate(report.recovery[currency])
    for week in report.weeks:
        for currency, minor in sorted(week.amounts.items()):
            yield "collected_per_week", week.label, currency, _major(minor, currency)
    yield "promises", "kept", "", str(report.promises.get("kept", 0))
    yield "promises", "broken", "", str(report.promises.get("broken", 0))
    yield "promises", "kept_rate", "", _rate(report.promises_kept)
    for status, count in report.plans.items():
        yield "plans", status, "", str(count)
    for name in AGING_BUCKETS:
        for currency, minor in sorted(report.aging[name].items()):
            yield "aging", name, currency, _major(minor, currency)
    for stats in report.channels:
        yield f"channel:{stats.channel}", "sent", "", str(stats.sent)
        yield f"channel:{stats.channel}", "delivered", "", str(stats.delivered)
        yield f"channel:{stats.channel}", "delivery_rate", "", _rate(stats.delivery)
        yield f"channel:{stats.channel}", "debtors_messaged", "", str(stats.messaged)
        yield f"channel:{stats.channel}", "debtors_replied", "", str(stats.replied)
        yield f"channel:{stats.channel}", "response_rate", "", _rate(stats.response)
    handoffs = report.handoffs
    minutes = handoffs.median_minutes
    yield "handoffs", "count", "", str(handoffs.count)
    yield "handoffs", "resolved", "", str(handoffs.resolved)
    yield "handoffs", "within_sla_rate", "", _rate(handoffs.within_sla)
    yield "handoffs", "median_minutes_to_resolution", "", "" if minutes is None else f"{minutes:.1f}"


def _major(minor: int, currency: str) -> str:
    return str(Decimal(minor).scaleb(-get_currency_precision(currency)))


def _rate(ratio: Ratio) -> str:
    return "" if ratio.value is None else f"{ratio.value:.4f}"
