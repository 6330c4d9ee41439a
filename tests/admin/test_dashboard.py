"""The managers' dashboard: tiles and SVG charts with the report's numbers, the CSV export with the same filters,
agents refused, and bad filters answered with a clear 400."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from flask import Flask
from flask.testing import FlaskClient

from admin.charts import Bar, Chart, bar_chart
from admin.dashboard import preset_period
from bot.store import Database
from tests.admin import signed_in
from tests.bot.test_reports import Portfolio, portfolio  # noqa: F401 - the same hand-checked portfolio

NOVEMBER = "preset=custom&from=2026-11-01&to=2026-12-01"


def _client(app: Flask, db: Database, role: str, language: str = "en") -> FlaskClient:
    client = signed_in(app, db, f"{role}@cobrabot.example", role)
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = language
    return client


def _csv(client: FlaskClient, query: str) -> list[list[str]]:
    response = client.get(f"/admin/dashboard.csv?{query}")
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


def test_manager_sees_tiles_and_svg_charts(console: Flask, db: Database, portfolio: Portfolio) -> None:  # noqa: F811
    manager = _client(console, db, "manager")
    response = manager.get(f"/admin/dashboard?creditor={portfolio.aguas}&{NOVEMBER}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert page.count('class="tile"') == 5
    assert "$13.700" in page  # collected, in the creditor's es-CL money format
    assert "66,7%" in page  # promises kept: 2 of 3
    assert "210 min" in page  # median minutes to resolution
    assert page.count('<svg class="chart" role="img"') == 4  # aging (CLP), weekly (CLP, USD), channels
    assert '<title id="aging-CLP-title">Aging of open balance (CLP)</title>' in page
    assert '<desc id="aging-CLP-desc">as of 2026-11-30</desc>' in page
    assert '<th scope="row">90+ days</th><td>$5.000</td>' in page  # the table under the chart
    assert '<th scope="row">2026-W45</th><td>$10.000</td>' in page
    assert "<td>3</td><td>2</td><td>66,7%</td><td>2</td><td>1</td><td>50%</td>" in page  # sms row


def test_default_period_is_the_last_30_days_in_the_creditors_time_zone(
    console: Flask,
    db: Database,
    portfolio: Portfolio,  # noqa: F811
) -> None:
    manager = _client(console, db, "manager")
    page = manager.get(f"/admin/dashboard?creditor={portfolio.aguas}").get_data(as_text=True)
    # The clock says 2026-11-25 15:00 UTC, noon in Santiago: Oct 27 up to and including today.
    assert "2026-10-27 – 2026-11-26 (America/Santiago)" in page
    assert '<option value="last_30" selected>' in page


def test_spanish_is_the_default_language(console: Flask, db: Database, portfolio: Portfolio) -> None:  # noqa: F811
    manager = _client(console, db, "manager", language="")
    page = manager.get(f"/admin/dashboard?creditor={portfolio.aguas}&{NOVEMBER}").get_data(as_text=True)
    assert "<h1>Panel</h1>" in page and "Recaudado" in page and "Antigüedad del saldo abierto (CLP)" in page


def test_agents_get_403_and_no_dashboard_link(console: Flask, db: Database) -> None:
    agent = _client(console, db, "agent")
    assert agent.get("/admin/dashboard").status_code == 403
    assert agent.get("/admin/dashboard.csv").status_code == 403
    assert "/admin/dashboard" not in agent.get("/admin/inbox").get_data(as_text=True)


def test_managers_have_the_dashboard_in_the_nav(console: Flask, db: Database) -> None:
    manager = _client(console, db, "manager")
    assert 'href="/admin/dashboard">Dashboard</a>' in manager.get("/admin/inbox").get_data(as_text=True)


def test_csv_export_has_the_header_and_the_same_numbers(
    console: Flask,
    db: Database,
    portfolio: Portfolio,  # noqa: F811
) -> None:
    manager = _client(console, db, "manager")
    response = manager.get(f"/admin/dashboard.csv?creditor={portfolio.aguas}&{NOVEMBER}")
    assert response.mimetype == "text/csv"
    disposition = response.headers["Content-Disposition"]
    assert disposition == 'attachment; filename="cobrabot-dashboard-2026-11-01-2026-12-01.csv"'
    rows = _csv(manager, f"creditor={portfolio.aguas}&{NOVEMBER}")
    assert rows[0] == ["section", "metric", "currency", "value"]
    expected = [
        ["collected", "collected", "CLP", "13700"],
        ["collected", "collected", "USD", "25.00"],  # major units: 2500 cents
        ["recovery", "open_balance_due", "CLP", "20000"],
        ["recovery", "recovery_rate", "CLP", "0.4065"],  # 13700 / 33700
        ["collected_per_week", "2026-W46", "CLP", "3700"],
        ["promises", "kept_rate", "", "0.6667"],
        ["plans", "broken", "", "1"],
        ["aging", "61-90", "CLP", "6000"],
        ["channel:sms", "delivery_rate", "", "0.6667"],
        ["channel:sms", "response_rate", "", "0.5000"],
        ["handoffs", "within_sla_rate", "", "0.3333"],
        ["handoffs", "median_minutes_to_resolution", "", "210.0"],
    ]
    assert [row for row in expected if row not in rows] == []


def test_csv_follows_the_segment_and_creditor_filters(
    console: Flask,
    db: Database,
    portfolio: Portfolio,  # noqa: F811
) -> None:
    manager = _client(console, db, "manager")
    pyme = _csv(manager, f"creditor={portfolio.aguas}&segment=pyme&{NOVEMBER}")
    assert ["collected", "collected", "CLP", "0"] in pyme and ["handoffs", "count", "", "1"] in pyme
    luz = _csv(manager, f"creditor={portfolio.luz}&{NOVEMBER}")
    assert ["collected", "collected", "CLP", "7000"] in luz
    assert not any(row[2] == "USD" for row in luz)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("preset=custom&from=2026-13-01&to=2026-12-01", "&#39;from&#39; must be a date as YYYY-MM-DD"),
        ("from=2026-11-01", "&#39;to&#39; is missing"),
        ("from=2026-12-01&to=2026-11-01", "must be after its start"),
        ("from=2026-11-01&to=2026-11-01", "must be after its start"),
        ("from=2020-01-01&to=2026-01-01", "at most 366 days"),
        ("creditor=abc", "creditor must be a creditor id"),
        ("creditor=999999", "there is no creditor with id 999999"),
        ("preset=forever", "unknown period"),
        ("segment=" + "x" * 40, "segment must have at most 32 characters"),
    ],
)
def test_bad_filters_get_a_400_with_the_reason(console: Flask, db: Database, query: str, reason: str) -> None:
    manager = _client(console, db, "manager")
    page = manager.get(f"/admin/dashboard?{query}")
    assert page.status_code == 400 and reason in page.get_data(as_text=True)
    export = manager.get(f"/admin/dashboard.csv?{query}")
    assert export.status_code == 400 and reason.replace("&#39;", "'") in export.get_data(as_text=True)


def test_presets() -> None:
    today = date(2026, 1, 15)
    assert preset_period("last_30", today) == (date(2025, 12, 17), date(2026, 1, 16))
    assert preset_period("this_month", today) == (date(2026, 1, 1), date(2026, 2, 1))
    assert preset_period("last_90", today) == (date(2025, 10, 18), date(2026, 1, 16))
    assert preset_period("this_month", date(2026, 12, 31)) == (date(2026, 12, 1), date(2027, 1, 1))


def test_bar_chart_escapes_labels_and_scales_to_the_largest_bar() -> None:
    svg = bar_chart("c", "<Title>", "desc & more", [Bar("<b>", 50, "50"), Bar("b", 100, "100")])
    assert "&lt;Title&gt;" in svg and "desc &amp; more" in svg and "<b>" not in svg
    assert 'role="img"' in svg and '<desc id="c-desc">' in svg
    widths = [part.split('"')[0] for part in svg.split('width="')[2:]]
    assert float(widths[1]) == 2 * float(widths[0])


def test_rate_charts_are_drawn_against_100_percent() -> None:
    svg = bar_chart("r", "rates", "d", [Bar("a", 0.75, "75%"), Bar("b", 0.5, "50%")], full_scale=1.0)
    widths = [float(part.split('"')[0]) for part in svg.split('width="')[2:]]
    assert widths[0] == 0.75 * (640 - 200 - 110) and widths[1] == 0.5 * (640 - 200 - 110)


def test_the_table_fallback_holds_the_same_escaped_numbers(console: Flask) -> None:
    chart = Chart("t", "<T>", "d", [Bar("<x>", 1, "1 & 2")])
    with console.test_request_context("/", headers={"Accept-Language": "en"}):
        table = chart.table
    assert "<caption>&lt;T&gt; — d</caption>" in table
    assert '<th scope="row">&lt;x&gt;</th><td>1 &amp; 2</td>' in table
