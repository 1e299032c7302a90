"""Data checks: Great Expectations suites and blocking Dagster asset checks (later issue)."""
