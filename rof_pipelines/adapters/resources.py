"""Dagster resources: the configuration and the quote store, read fresh on every run (hot reload)."""

from typing import Optional

from dagster import ConfigurableResource

from rof_pipelines.adapters.quote_stores import QuoteStore, open_quote_store
from rof_pipelines.settings import Settings, load_settings


class RofSettings(ConfigurableResource):
    """config.yaml plus environment overrides. ``config_path`` empty means ``$ROF_CONFIG`` or the
    project's config.yaml, resolved when a run asks, never at import time."""

    config_path: Optional[str] = None  # noqa: UP045 - Dagster's config schema needs Optional

    def load(self) -> Settings:
        return load_settings(self.config_path)


class QuoteStoreResource(ConfigurableResource):
    """Opens the configured quote store for one step; the step closes it (no connection outlives it)."""

    settings: RofSettings

    def open(self) -> QuoteStore:
        return open_quote_store(self.settings.load())
