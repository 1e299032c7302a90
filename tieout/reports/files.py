"""write_reports: the four files a reconciliation run leaves for people and for machines.

exceptions.csv and summary.json are the machine-readable record (exact integers, ISO dates);
report.xlsx is where accountants work; report.html is for reading. All four are rendered in
memory first and only then written, so a rendering error never leaves a half-written set.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import date

from tieout.connectors.storage import Storage
from tieout.reconcile.model import EXCEPTION_COLUMNS, ReconException, Summary
from tieout.reports._common import sort_exceptions
from tieout.reports.html_report import render_html
from tieout.reports.workbook import build_workbook

__all__ = ["REPORT_FILES", "exceptions_csv", "summary_json", "write_reports"]

#: The keys write_reports writes (and returns), in order.
REPORT_FILES: tuple[str, ...] = ("exceptions.csv", "summary.json", "report.xlsx", "report.html")


def exceptions_csv(exceptions: Sequence[ReconException]) -> bytes:
    """UTF-8, '\\n' line ends, header EXCEPTION_COLUMNS, rows by (kind, gateway, exception_id)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EXCEPTION_COLUMNS)
    for e in sort_exceptions(exceptions):
        writer.writerow(_csv_value(v) for v in e.as_row().values())
    return buf.getvalue().encode("utf-8")


def _csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def summary_json(summary: Summary) -> bytes:
    """summary.to_json() with sorted keys and indent 2, so equal summaries diff as equal."""
    text = json.dumps(summary.to_json(), sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def write_reports(
    exceptions: Sequence[ReconException], summary: Summary, out: Storage
) -> dict[str, str]:
    """Render all four reports, then write them into `out`; returns {file name: uri}."""
    rendered = {
        "exceptions.csv": exceptions_csv(exceptions),
        "summary.json": summary_json(summary),
        "report.xlsx": build_workbook(exceptions, summary),
        "report.html": render_html(exceptions, summary).encode("utf-8"),
    }
    return {name: out.write(name, rendered[name]) for name in REPORT_FILES}
