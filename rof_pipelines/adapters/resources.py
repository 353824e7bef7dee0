"""Dagster resources: the configuration, the quote store, the state store and the broker, read fresh on
every run (hot reload).

The state store is an abstract resource with a real and an in-memory implementation (the quote store
needs none: ``storage.quote_store: memory`` is the in-memory one, chosen by name like the others).
Assets and sensors annotate ``state_store: StateStoreResource`` and get whichever the definitions or
the test bind."""

import threading
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from dagster import ConfigurableResource, InitResourceContext

from rof_pipelines.adapters.config_versions import load_in_force
from rof_pipelines.adapters.embedded_pg import ensure_state_store
from rof_pipelines.adapters.logs import configure_for_process
from rof_pipelines.adapters.quote_stores import QuoteStore, open_quote_store
from rof_pipelines.adapters.rabbitmq import RabbitMQ
from rof_pipelines.adapters.state_store import InMemoryStateStore, StateStore, ensure_migrated
from rof_pipelines.settings import Settings, config_path_from_env

if TYPE_CHECKING:
    from rof_pipelines.adapters.state_store import StateRepositories


class RofSettings(ConfigurableResource):
    """config.yaml plus environment overrides. ``config_path`` empty means ``$ROF_CONFIG`` or the
    project's config.yaml, resolved when a run asks, never at import time."""

    config_path: Optional[str] = None  # noqa: UP045 - Dagster's config schema needs Optional

    def load(self) -> Settings:
        """The configuration in force: an invalid edit of the file leaves the last valid one."""
        return load_in_force(Path(self.config_path) if self.config_path else None)

    def path(self) -> Path:
        return Path(self.config_path) if self.config_path else config_path_from_env()

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Each process that runs steps (or ticks) logs at ``system_setup.log_level`` in
        ``log_format``, scrubbed of the secrets (adapters/logs.py), with the config in force."""
        configure_for_process(self.load)


class QuoteStoreResource(ConfigurableResource):
    """Opens the configured quote store for one step; the step closes it (no connection outlives it)."""

    settings: RofSettings

    def open(self) -> QuoteStore:
        return open_quote_store(self.settings.load())


_migrated: set[str] = set()
_migrate_lock = threading.Lock()


class StateStoreResource(ConfigurableResource):
    """What an asset or sensor asks for to read and write the state store: ``open()`` gives a store
    with the repositories of :class:`~rof_pipelines.adapters.state_store.StateRepositories`, for one
    step or tick (``with resource.open() as store: ...``). Implemented by
    :class:`PostgresStateStoreResource` (production, the default) and
    :class:`InMemoryStateStoreResource` (tests about Dagster wiring)."""

    @abstractmethod
    def open(self) -> "StateRepositories":
        """A store for one step or tick; the caller closes it (``with``)."""


class PostgresStateStoreResource(StateStoreResource):
    """The configured PostgreSQL state store (``state_storage``). The first open in a process applies
    the migrations when ``state_storage.auto_migrate`` is true ("migrate at start"); later opens skip
    that. With ``db_host: embedded`` it first makes sure the project's embedded server runs (a cheap
    check when it does; otherwise it starts the detached holder, as ``rof db serve --detach`` would)."""

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


_memory_stores: dict[str, InMemoryStateStore] = {}
_memory_lock = threading.Lock()


class InMemoryStateStoreResource(StateStoreResource):
    """The state store in this process's memory, shared by every open with the same ``space`` (like
    connections to one database). For runs executed in process (``materialize``); nothing survives
    the process. ``unavailable`` makes every call fail as if the database were down."""

    space: str = "default"
    unavailable: Optional[str] = None  # noqa: UP045 - Dagster's config schema needs Optional

    def open(self) -> InMemoryStateStore:
        with _memory_lock:
            store = _memory_stores.setdefault(self.space, InMemoryStateStore())
        store.unavailable = self.unavailable
        return store

    @staticmethod
    def drop(space: str) -> None:
        """Forget everything stored under ``space`` (a test's teardown)."""
        with _memory_lock:
            _memory_stores.pop(space, None)


class RabbitMQResource(ConfigurableResource):
    """A broker client for one tick; it holds no connection between calls."""

    settings: RofSettings

    def open(self) -> RabbitMQ:
        settings = self.settings.load()
        rabbit = settings.storage.rabbitmq
        return RabbitMQ(rabbit, settings.system_setup.circuit_breaker, queue_prefix=rabbit.queue_prefix)
