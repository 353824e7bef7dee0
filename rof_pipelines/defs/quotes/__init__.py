"""Quotes: snapshots from the configured store, their checks, market discovery and the `quotes.updated`
queue (assets, jobs, sensors, definitions)."""
