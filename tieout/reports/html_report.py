"""report.html: one self-contained page (inline CSS and SVG, no scripts) that opens from disk.

It is for reading, not editing: the same summary table as the workbook, three charts and the
open exceptions. Every piece of text from the data goes through html.escape, because
explanations quote gateway and customer text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any, Final

from tieout.reconcile.model import (
    AGING_BUCKETS,
    SEVERITY,
    ReconException,
    Summary,
    aging_bucket,
)
from tieout.reports._common import money_text, ordered_kinds, sort_key

__all__ = ["OPEN_EXCEPTIONS_SHOWN", "render_html"]

#: Open exceptions listed on the page; the rest are in report.xlsx and exceptions.csv.
OPEN_EXCEPTIONS_SHOWN: Final = 200

_SEVERITY_RANK: Final = {"high": 0, "medium": 1, "low": 2}
_CHART_W: Final = 720
_ACCENT: Final = "#2f6690"

_CSS: Final = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f2933;
margin:2rem auto;max-width:1200px;padding:0 1rem;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #d9e2ec;padding-bottom:.3rem}
.facts{color:#52606d;margin:0 0 1rem}.facts span{margin-right:1.5rem}
.ok{color:#1b7f3b;font-weight:600}.bad{color:#b42318;font-weight:600}
table{border-collapse:collapse;font-size:.85rem;width:100%}
th,td{padding:.35rem .5rem;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#f0f4f8;font-weight:600;white-space:nowrap}
tbody tr:nth-child(even){background:#fafbfc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.id{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem}
.sev-high{color:#b42318;font-weight:600}.sev-medium{color:#b54708}.sev-low{color:#52606d}
.charts{display:flex;flex-wrap:wrap;gap:1.5rem}.chart{flex:1 1 340px}
svg text{font-family:inherit;font-size:11px;fill:#52606d}
.note{color:#52606d;font-style:italic}.wrap{overflow-x:auto}
@media print{body{margin:0;max-width:none}}
"""


def render_html(exceptions: Sequence[ReconException], summary: Summary) -> str:
    """The whole page as text; identical input gives identical text (no clock, no randomness)."""
    title = f"Reconciliation {summary.start.isoformat()} to {summary.end.isoformat()}"
    conserved = (
        '<span class="ok">money conserved</span>'
        if summary.conservation_ok
        else '<span class="bad">money NOT conserved: check the run</span>'
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        '<p class="facts">'
        f"<span>Run <b>{escape(summary.run_id)}</b></span>"
        f"<span>As of <b>{summary.as_of.isoformat()}</b></span>"
        f"<span>Gateways <b>{escape(', '.join(summary.gateways) or '(none)')}</b></span>"
        f"<span>{conserved}</span></p>",
        "<h2>By gateway and currency</h2>",
        _summary_table(summary),
        "<h2>Charts</h2>",
        '<div class="charts">',
        '<div class="chart" style="flex-basis:100%">',
        _match_rate_chart(summary.daily),
        "</div>",
        '<div class="chart">',
        _bar_chart(
            "Exceptions by kind",
            [(k, summary.exceptions_by_kind[k]) for k in ordered_kinds(summary.exceptions_by_kind)],
        ),
        "</div>",
        '<div class="chart">',
        _bar_chart(
            "Exceptions by age (days since first seen)",
            [(b, summary.exceptions_by_age.get(b, 0)) for b, _lo, _hi in AGING_BUCKETS],
        ),
        "</div></div>",
        _open_table(exceptions, summary),
        _waterfall(summary.revenue),
        _checks_table(summary.checks),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _waterfall(points: Sequence[dict[str, Any]]) -> str:
    """Revenue recognized by accounting month, per currency, for what the range billed: a
    table with a bar per month (bars scale within each currency)."""
    head = "<h2>Revenue waterfall (recognized by month)</h2>"
    if not points:
        return head + '<p class="note">No revenue billed in the range.</p>'
    out = [
        head,
        '<p class="note">Invoices and credit notes issued in the range, recognized by '
        "accounting month (subscriptions by day over their service period; see "
        "docs/revenue.md).</p>",
    ]
    by_currency: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        by_currency.setdefault(p["currency"], []).append(p)
    for currency, rows in sorted(by_currency.items()):
        top = max(abs(int(r["recognized_minor"])) for r in rows) or 1
        total = sum(int(r["recognized_minor"]) for r in rows)
        out.append(f"<h3>{escape(currency)}: {escape(money_text(total, currency))} in all</h3>")
        out.append("<table><thead><tr>" + _th("month") + _th("recognized", "num")
                   + _th("") + "</tr></thead><tbody>")  # fmt: skip
        for r in rows:
            amount = int(r["recognized_minor"])
            width = 240 * abs(amount) / top
            bar = (
                f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 2:.0f}" height="12">'
                f'<rect x="0" y="1" width="{width:.1f}" height="10" fill="{_ACCENT}"/></svg>'
            )
            out.append(
                "<tr>" + _td(str(r["month"])[:7])
                + _td(money_text(amount, currency), "num") + f"<td>{bar}</td></tr>"
            )  # fmt: skip
        out.append("</tbody></table>")
    return "\n".join(out)


def _checks_table(checks: Sequence[dict[str, Any]]) -> str:
    """The validation summary: which checks ran over the range, which failed."""
    if not checks:
        return ""
    failed = sum(1 for c in checks if not c["passed"])
    head = (
        f"<h2>Data checks ({len(checks)} run, {failed} failed)</h2>"
        '<div class="wrap"><table><thead><tr>'
        + "".join(
            _th(h, cls)
            for h, cls in (
                ("Dataset", ""),
                ("Check", ""),
                ("Kind", ""),
                ("Severity", ""),
                ("Result", ""),
                ("Failing", "num"),
                ("Checked", "num"),
                ("What it checks", ""),
            )
        )
        + "</tr></thead><tbody>"
    )
    rows = []
    for c in sorted(checks, key=lambda c: (c["passed"], c["dataset"], c["name"])):
        result = (
            '<span class="ok">passed</span>' if c["passed"] else '<span class="bad">failed</span>'
        )
        rows.append(
            "<tr>"
            + _td(c["dataset"])
            + _td(c["name"], "id")
            + _td(c.get("group", ""))
            + _td(c["severity"])
            + f"<td>{result}</td>"
            + _td(str(c["failing"]), "num")
            + _td(str(c["checked"]), "num")
            + _td(c.get("description", ""))
            + "</tr>"
        )
    return head + "".join(rows) + "</tbody></table></div>"


def _summary_table(summary: Summary) -> str:
    if not summary.rows:
        return '<p class="note">No payments or settlement lines in this range.</p>'
    kinds = ordered_kinds(k for r in summary.rows for k in r.exceptions_by_kind)
    heads = [
        ("Gateway", ""),
        ("Currency", ""),
        ("Payments", "num"),
        ("Billed", "num"),
        ("Settled", "num"),
        ("Matched", "num"),
        ("Pending", "num"),
        ("In exceptions", "num"),
        *((k.replace("_", " "), "num") for k in kinds),
        ("Match rate", "num"),
        ("Payouts", "num"),
        ("Payouts tied out", "num"),
    ]
    out = ['<div class="wrap"><table><thead><tr>', *(_th(h, c) for h, c in heads), "</tr></thead>"]
    out.append("<tbody>")
    for r in summary.rows:
        rate = "n/a" if r.match_rate is None else f"{r.match_rate * 100:.1f}%"
        cells = [
            _td(r.gateway),
            _td(r.currency),
            _td(f"{r.payments:,}", "num"),
            *(
                _td(money_text(m, r.currency), "num")
                for m in (
                    r.billed_minor,
                    r.settled_minor,
                    r.matched_minor,
                    r.pending_minor,
                    r.exception_minor,
                )
            ),
            *(_td(f"{r.exceptions_by_kind.get(k, 0):,}", "num") for k in kinds),
            _td(rate, "num"),
            _td(f"{r.payouts:,}", "num"),
            _td(f"{r.payouts_tied_out:,}", "num"),
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _th(text: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<th{attr}>{escape(text)}</th>"


def _td(text: str | None, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{escape(text or '')}</td>"


def _daily_rate(day: dict[str, Any]) -> float | None:
    """The day's match rate (a display ratio): as given, else matched / payments."""
    rate = day.get("match_rate")
    if isinstance(rate, int | float) and not isinstance(rate, bool) and math.isfinite(rate):
        return min(max(float(rate), 0.0), 1.0)
    payments, matched = day.get("payments"), day.get("matched")
    if isinstance(payments, int) and isinstance(matched, int) and payments > 0:
        return min(max(matched / payments, 0.0), 1.0)
    return None


def _match_rate_chart(daily: Sequence[dict[str, Any]]) -> str:
    """Line of the daily match rate, 0-100%; days without payments break the line."""
    head = "<h3>Match rate by day</h3>"
    if not daily:
        return head + '<p class="note">No daily figures for this range.</p>'
    w, h, left, right, top, bottom = _CHART_W, 240, 44, 16, 12, 40
    pw, ph = w - left - right, h - top - bottom
    n = len(daily)

    def x(i: int) -> float:
        return left + (pw / 2 if n == 1 else pw * i / (n - 1))

    def y(rate: float) -> float:
        return top + ph * (1 - rate)

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {w} {h}" '
        f'width="100%" style="max-width:{w}px" aria-labelledby="mr-title">'
        '<title id="mr-title">Match rate by day</title>'
    ]
    for pct in (0, 25, 50, 75, 100):
        gy = y(pct / 100)
        svg.append(
            f'<line x1="{left}" y1="{gy:.1f}" x2="{w - right}" y2="{gy:.1f}" stroke="#e4e7eb"/>'
            f'<text x="{left - 6}" y="{gy + 4:.1f}" text-anchor="end">{pct}%</text>'
        )
    step = max(1, math.ceil(n / 8))
    segments: list[list[str]] = [[]]
    dots: list[str] = []
    for i, day in enumerate(daily):
        label = escape(str(day.get("day", "")))
        if (i % step == 0 and n - 1 - i >= step) or i == n - 1:
            anchor = (
                "middle" if n == 1 else "start" if i == 0 else "end" if i == n - 1 else "middle"
            )
            svg.append(
                f'<text x="{x(i):.1f}" y="{h - bottom + 16}" text-anchor="{anchor}">{label}</text>'
            )
        rate = _daily_rate(day)
        if rate is None:
            segments.append([])
            continue
        point = f"{x(i):.1f},{y(rate):.1f}"
        segments[-1].append(point)
        dots.append(
            f'<circle cx="{x(i):.1f}" cy="{y(rate):.1f}" r="3" fill="{_ACCENT}">'
            f"<title>{label}: {rate * 100:.1f}%</title></circle>"
        )
    for seg in segments:
        if len(seg) > 1:
            svg.append(
                f'<polyline class="match-rate" fill="none" stroke="{_ACCENT}" stroke-width="2" '
                f'points="{" ".join(seg)}"/>'
            )
    svg.extend(dots)
    svg.append("</svg>")
    return head + "".join(svg)


def _bar_chart(title: str, bars: Sequence[tuple[str, int]]) -> str:
    """Horizontal bars with the count at the end: labels stay readable however long."""
    head = f"<h3>{escape(title)}</h3>"
    if not bars or not any(v for _k, v in bars):
        return head + '<p class="note">No exceptions.</p>'
    label_w, row_h, w = 190, 26, 460
    h = row_h * len(bars) + 8
    top_value = max(v for _k, v in bars)
    bar_max = w - label_w - 60
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {w} {h}" '
        f'width="100%" style="max-width:{w}px"><title>{escape(title)}</title>'
    ]
    for i, (label, value) in enumerate(bars):
        by = 4 + i * row_h
        bw = bar_max * value / top_value if top_value else 0
        text = escape(label.replace("_", " "))
        svg.append(
            f'<text x="{label_w - 8}" y="{by + 16}" text-anchor="end">{text}</text>'
            f'<rect class="bar" x="{label_w}" y="{by + 3}" width="{bw:.1f}" height="{row_h - 8}" '
            f'fill="{_ACCENT}"><title>{text}: {value:,}</title></rect>'
            f'<text x="{label_w + bw + 6:.1f}" y="{by + 16}">{value:,}</text>'
        )
    svg.append("</svg>")
    return head + "".join(svg)


def _open_table(exceptions: Sequence[ReconException], summary: Summary) -> str:
    """Open exceptions, most severe then oldest first: what to work on next."""
    open_ = sorted(
        (e for e in exceptions if e.status == "open"),
        key=lambda e: (
            _SEVERITY_RANK.get(e.severity, len(_SEVERITY_RANK)),
            e.first_seen,
            *sort_key(e),
        ),
    )
    out = [f"<h2>Open exceptions ({len(open_):,})</h2>"]
    if not open_:
        return out[0] + '<p class="note">No open exceptions.</p>'
    shown = open_[:OPEN_EXCEPTIONS_SHOWN]
    if len(open_) > len(shown):
        more = len(open_) - len(shown)
        out.append(
            f'<p class="note">Showing the first {len(shown):,} of {len(open_):,}; {more:,} more '
            "are in report.xlsx and exceptions.csv.</p>"
        )
    heads = [
        "Severity",
        "Kind",
        "Gateway",
        "Amount",
        "Age (days)",
        "First seen",
        "Payment",
        "Invoice",
        "Settlement line",
        "Batch",
        "Explanation",
        "Exception id",
    ]
    out.append('<div class="wrap"><table><thead><tr>')
    out.extend(_th(h, "num" if h == "Amount" else "") for h in heads)
    out.append("</tr></thead><tbody>")
    for e in shown:
        severity = e.severity or SEVERITY.get(e.kind, "")
        cells = [
            _td(severity, f"sev-{severity}" if severity in _SEVERITY_RANK else ""),
            _td(e.kind.replace("_", " ")),
            _td(e.gateway),
            _td(money_text(e.amount_minor, e.currency), "num"),
            _td(aging_bucket(e.first_seen, summary.as_of)),
            _td(e.first_seen.isoformat()),
            _td(e.payment_id),
            _td(e.invoice_id),
            _td(e.settlement_line_id),
            _td(e.batch_id),
            _td(e.explanation),
            _td(e.exception_id, "id"),
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)
