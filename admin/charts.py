"""Bar charts as inline SVG, drawn on the server: no JavaScript library, readable by screen readers (<title>,
<desc>) and always shown beside a table of the same numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from admin.i18n import gettext

WIDTH = 640
LABEL_WIDTH = 200
VALUE_WIDTH = 110
ROW = 26
BAR = 18


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float  # the length of the bar; never negative
    shown: str  # the value as people read it ("$ 45.990", "75 %")


@dataclass(frozen=True, slots=True)
class Chart:
    chart_id: str
    title: str
    description: str
    bars: Sequence[Bar]
    full_scale: float | None = None  # 1.0 for rates: 50 % is half the width whatever the other bars are

    @property
    def svg(self) -> Markup:
        return bar_chart(self.chart_id, self.title, self.description, self.bars, self.full_scale)

    @property
    def table(self) -> Markup:
        return data_table(self.title, self.description, self.bars)


def bar_chart(
    chart_id: str, title: str, description: str, bars: Sequence[Bar], full_scale: float | None = None
) -> Markup:
    """Horizontal bars scaled to `full_scale` (else the largest value); labels left, values after each bar."""
    height = max(len(bars), 1) * ROW + 8
    longest = full_scale or max((bar.value for bar in bars), default=0) or 1
    room = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet" aria-labelledby="{chart_id}-title {chart_id}-desc">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
    ]
    for row, bar in enumerate(bars):
        top = 4 + row * ROW
        length = round(min(max(bar.value, 0) / longest, 1) * room, 1)
        middle = top + BAR / 2 + 4
        parts.append(
            f'<g class="bar"><text class="label" x="{LABEL_WIDTH - 8}" y="{middle}" text-anchor="end">'
            f"{escape(bar.label)}</text>"
            f'<rect x="{LABEL_WIDTH}" y="{top}" width="{length}" height="{BAR}" rx="2"></rect>'
            f'<text class="value" x="{LABEL_WIDTH + length + 6}" y="{middle}">{escape(bar.shown)}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def data_table(title: str, description: str, bars: Sequence[Bar]) -> Markup:
    """The chart's numbers as a plain table: the fallback for screen readers, printing and copying."""
    rows = "".join(f'<tr><th scope="row">{escape(bar.label)}</th><td>{escape(bar.shown)}</td></tr>' for bar in bars)
    return Markup(
        f'<table class="data"><caption>{escape(title)} — {escape(description)}</caption>'
        f'<thead><tr><th scope="col">{escape(gettext("Bucket"))}</th><th scope="col">{escape(gettext("Value"))}</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )
