"""Dagster assets: thin wrappers over library code that attach metadata."""
