"""Reports of a reconciliation run: exceptions.csv, summary.json, report.xlsx, report.html.

Plain Python (no Dagster), so the CLI, the assets and tests share one implementation.
"""

from tieout.reports.files import REPORT_FILES, exceptions_csv, summary_json, write_reports
from tieout.reports.html_report import OPEN_EXCEPTIONS_SHOWN, render_html
from tieout.reports.workbook import (
    SHEET_COLUMNS,
    StatusUpdate,
    build_workbook,
    read_status_updates,
)

__all__ = [
    "OPEN_EXCEPTIONS_SHOWN",
    "REPORT_FILES",
    "SHEET_COLUMNS",
    "StatusUpdate",
    "build_workbook",
    "exceptions_csv",
    "read_status_updates",
    "render_html",
    "summary_json",
    "write_reports",
]
