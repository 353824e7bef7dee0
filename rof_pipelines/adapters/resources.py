"""Dagster resources: the configuration, the quote store and the state store, read fresh on every run
(hot reload)."""

import threading
from pathlib import Path
from typing import Optional

from dagster import ConfigurableResource

from rof_pipelines.adapters.config_versions import load_in_force
from rof_pipelines.adapters.embedded_pg import ensure_state_store
from rof_pipelines.adapters.quote_stores import QuoteStore, open_quote_store
from rof_pipelines.adapters.rabbitmq import RabbitMQ
from rof_pipelines.adapters.state_store import StateStore, ensure_migrated
from rof_pipelines.settings import Settings, config_path_from_env


class RofSettings(ConfigurableResource):
    """config.yaml plus environment overrides. ``config_path`` empty means ``$ROF_CONFIG`` or the
    project's config.yaml, resolved when a run asks, never at import time."""

    config_path: Optional[str] = None  # noqa: UP045 - Dagster's config schema needs Optional

    def load(self) -> Settings:
        """The configuration in force: an invalid edit of the file leaves the last valid one."""
        return load_in_force(Path(self.config_path) if self.config_path else None)

    def path(self) -> Path:
        return Path(self.config_path) if self.config_path else config_path_from_env()


class QuoteStoreResource(ConfigurableResource):
    """Opens the configured quote store for one step; the step closes it (no connection outlives it)."""

    settings: RofSettings

    def open(self) -> QuoteStore:
        return open_quote_store(self.settings.load())


_migrated: set[str] = set()
_migrate_lock = threading.Lock()


class StateStoreResource(ConfigurableResource):
    """Opens the state store for one step. The first open in a process applies the migrations when
    ``state_storage.auto_migrate`` is true ("migrate at start"); later opens skip that. With
    ``db_host: embedded`` it first makes sure the project's embedded server runs (a cheap check when
    it does; otherwise it starts the detached holder, as ``rof db serve --detach`` would)."""

    settings: RofSettings

    def open(self) -> StateStore:
        settings = self.settings.load()
        ensure_state_store(settings.state_storage)
        store = StateStore(settings.state_storage, settings.system_setup.circuit_breaker)
        key = settings.state_storage.describe()
        with _migrate_lock:
            if key not in _migrated:
                ensure_migrated(store, settings)
                _migrated.add(key)
        return store


class RabbitMQResource(ConfigurableResource):
    """A broker client for one tick; it holds no connection between calls."""

    settings: RofSettings

    def open(self) -> RabbitMQ:
        settings = self.settings.load()
        rabbit = settings.storage.rabbitmq
        return RabbitMQ(rabbit, settings.system_setup.circuit_breaker, queue_prefix=rabbit.queue_prefix)
