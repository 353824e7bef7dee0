"""Dagster definitions (thin glue over core and adapters)."""
