"""Quote stores by name: ``storage.quote_store`` is looked up here, and a new store (or an exchange
ingest source) plugs in by registering, with no if/elif to edit.

A store is registered as ``"module:Class"`` and imported only when it is opened, so the parquet path
never loads a database driver and ``settings.py`` can ask for the names without importing any store.
Third-party or test stores register the same way, or with the decorator form::

    @register_quote_store("duckdb")
    class DuckDBQuoteStore(QuoteStore): ...

Every store class builds itself from the settings with ``from_settings``.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, overload

from rof_pipelines.errors import ConfigError

if TYPE_CHECKING:
    from rof_pipelines.adapters.quote_stores.base import QuoteStore
    from rof_pipelines.settings import Settings

S = TypeVar("S", bound="type[QuoteStore]")


@dataclass(frozen=True)
class StoreEntry:
    """One registered store: where its class lives, and whether what it holds outlives the process
    (only those are offered for a deployment's config; the others are for tests)."""

    name: str
    target: "str | type[QuoteStore]"  # "package.module:Class", or the class itself
    persistent: bool = True

    def load(self) -> "type[QuoteStore]":
        if not isinstance(self.target, str):
            return self.target
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


_STORES: dict[str, StoreEntry] = {}


@overload
def register_quote_store(name: str, target: str, *, persistent: bool = True) -> None: ...
@overload
def register_quote_store(name: str, target: None = None, *, persistent: bool = True) -> Callable[[S], S]: ...


def register_quote_store(
    name: str, target: str | None = None, *, persistent: bool = True
) -> Callable[[S], S] | None:
    """Register ``target`` ("module:Class") under ``name``; without ``target``, a class decorator.

    Registering a name again for the same target is a no-op; for another target it is refused, so a
    plugin cannot silently take over a built-in store."""
    if target is None:

        def decorate(cls: S) -> S:
            _add(StoreEntry(name, cls, persistent))
            return cls

        return decorate
    _add(StoreEntry(name, target, persistent))
    return None


def _add(entry: StoreEntry) -> None:
    held = _STORES.get(entry.name)
    if held is not None and held != entry:
        raise ValueError(f"quote store {entry.name!r} is already registered as {held.target!r}")
    _STORES[entry.name] = entry


def unregister_quote_store(name: str) -> None:
    """Drop a registration (tests that register a store of their own)."""
    _STORES.pop(name, None)


def quote_store_names() -> tuple[str, ...]:
    """Every registered name, in registration order (the built-in stores first)."""
    return tuple(_STORES)


def quote_store_choices() -> str:
    """The accepted names for a message, in the form pydantic uses for a choice: the deployable ones,
    then the process-local ones marked as being for tests."""
    lasting = [repr(name) for name, entry in _STORES.items() if entry.persistent]
    local = [repr(name) for name, entry in _STORES.items() if not entry.persistent]
    text = _one_of(lasting)
    return f"{text} (or {_one_of(local)}: process-local, for tests)" if local else text


def _one_of(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def validate_quote_store_name(name: object) -> str:
    """``name`` if a store is registered under it; the ValueError names the valid choices."""
    if not isinstance(name, str) or name not in _STORES:
        raise ValueError(f"Input should be {quote_store_choices()}")
    return name


def quote_store_class(name: str) -> "type[QuoteStore]":
    """The class registered under ``name`` (importing its module now)."""
    entry = _STORES.get(name)
    if entry is None:
        raise ConfigError(f"storage.quote_store: unknown store {name!r}; registered: {quote_store_choices()}")
    return entry.load()


def open_quote_store(settings: "Settings") -> "QuoteStore":
    """The configured store; drivers are imported only for the store in use. The caller owns it and
    should ``close()`` it (or use ``with``)."""
    return quote_store_class(settings.storage.quote_store).from_settings(settings)


_PACKAGE = "rof_pipelines.adapters.quote_stores"
register_quote_store("parquet", f"{_PACKAGE}.parquet:ParquetQuoteStore")
register_quote_store("postgres", f"{_PACKAGE}.postgres:PostgresQuoteStore")
register_quote_store("clickhouse", f"{_PACKAGE}.clickhouse:ClickHouseQuoteStore")
register_quote_store("memory", f"{_PACKAGE}.memory:MemoryQuoteStore", persistent=False)
