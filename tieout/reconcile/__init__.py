"""Reconciliation: billing payments against gateway settlement lines (plain Python, no Dagster)."""
