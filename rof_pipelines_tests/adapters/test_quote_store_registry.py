"""Stores by name, the shared template and the driver error tables, without a database server: the
registry (lazy imports, a fourth store plugging in, the unknown-name error), the base class running
the checks for every store, the memory store shared by name within a process, and the ErrorMaps of
the psycopg, ClickHouse and parquet families tagging errors with service and operation."""

import subprocess
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from clickhouse_connect.driver import exceptions as ch_errors

from rof_pipelines.adapters.quote_stores import QuoteStore, open_quote_store, quote_store_names
from rof_pipelines.adapters.quote_stores.clickhouse import CLICKHOUSE_ERRORS
from rof_pipelines.adapters.quote_stores.memory import MemoryQuoteStore
from rof_pipelines.adapters.quote_stores.parquet import ParquetQuoteStore
from rof_pipelines.adapters.quote_stores.postgres import PSYCOPG_ERRORS
from rof_pipelines.adapters.quote_stores.registry import (
    quote_store_class,
    register_quote_store,
    unregister_quote_store,
)
from rof_pipelines.core.market import Market
from rof_pipelines.errors import (
    ConfigError,
    DataValidationError,
    PermanentError,
    StoreUnavailableError,
)
from rof_pipelines_tests.adapters.test_postgres_store import TON, make_quotes


def test_the_built_in_stores_are_registered_and_the_parquet_path_loads_no_driver():
    assert quote_store_names()[:4] == ("parquet", "postgres", "clickhouse", "memory")
    code = (
        "import sys\n"
        "from rof_pipelines.settings import load_settings\n"
        "from rof_pipelines.adapters.quote_stores import open_quote_store\n"
        "store = open_quote_store(load_settings(environ={}))\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('psycopg', 'clickhouse_connect', 'chdb')]\n"
        "print(store.name, loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "parquet []"


def test_an_unknown_store_name_names_the_key_and_the_choices(make_settings):
    with pytest.raises(ConfigError) as caught:
        make_settings({"storage": {"quote_store": "mongo"}})
    text = str(caught.value)
    assert "storage.quote_store: Input should be 'parquet', 'postgres' or 'clickhouse'" in text
    assert "'memory'" in text and "'mongo'" in text
    with pytest.raises(
        ConfigError, match=r"storage.quote_store: unknown store 'mongo'; registered: 'parquet'"
    ):
        quote_store_class("mongo")


class _ListStore(QuoteStore):
    """A fourth store, defined here: rows in a list, to show a store plugs in by registering."""

    name = "list"

    def __init__(self) -> None:
        self.rows: dict[Market, pd.DataFrame] = {}
        self.calls: list[str] = []

    @classmethod
    def from_settings(cls, settings) -> "_ListStore":  # type: ignore[no-untyped-def]
        return cls()

    def ensure_schema(self) -> None:
        self.calls.append("ensure_schema")

    def _write(self, market: Market, frame: pd.DataFrame) -> None:
        self.calls.append("write")
        self.rows[market] = frame

    def _read(self, market: Market, start_us: int, end_us: int) -> pd.DataFrame:
        self.calls.append("read")
        return self.rows.get(market, pd.DataFrame())

    def _markets(self) -> Iterable[Market]:
        return reversed(list(self.rows))

    def _time_range(self, market: Market) -> tuple[datetime, datetime] | None:
        return None


@pytest.fixture
def list_store_registered() -> Iterator[None]:
    register_quote_store("list")(_ListStore)
    try:
        yield
    finally:
        unregister_quote_store("list")


def test_a_fourth_store_plugs_in_by_registering(list_store_registered, make_settings):
    settings = make_settings({"storage": {"quote_store": "list"}})
    with open_quote_store(settings) as store:
        assert isinstance(store, _ListStore)
    with pytest.raises(ValueError, match="already registered"):
        register_quote_store("parquet", "somewhere.else:Store")
    register_quote_store(
        "parquet", "rof_pipelines.adapters.quote_stores.parquet:ParquetQuoteStore"
    )  # same: ok


def test_the_base_checks_before_the_store_sees_anything(list_store_registered):
    store = _ListStore()
    with pytest.raises(DataValidationError, match="row 2: ts is missing"):
        store.write(TON, make_quotes(n=5).assign(ts=lambda f: f["ts"].where(f.index != 2)))
    assert store.write(TON, make_quotes(n=0)) == 0
    start = datetime(2026, 1, 2, tzinfo=UTC)
    assert store.read(TON, start, start).empty and store.read(TON, start, datetime(2026, 1, 1)).empty
    assert store.calls == []  # refused, empty or inverted: the store was never asked
    assert store.write(TON, make_quotes(n=5)) == 5
    store.write(Market.parse("okx:BTCUSDT"), make_quotes(n=5))
    assert store.markets() == sorted([TON, Market.parse("okx:BTCUSDT")])
    empty = _ListStore().read(TON, datetime(2026, 1, 1), start)
    assert list(empty.columns) == ["ts", "price", "bid", "ask", "volume"]  # canonical, not the store's


def test_memory_stores_share_data_by_space_within_the_process(make_settings):
    settings = make_settings({"storage": {"quote_store": "memory"}})
    try:
        with open_quote_store(settings) as first:
            first.write(TON, make_quotes(n=50))
        with open_quote_store(settings) as second:
            assert len(second.read(TON, datetime(2000, 1, 1), datetime(2100, 1, 1))) == 50
        assert MemoryQuoteStore("another space").markets() == []
    finally:
        MemoryQuoteStore.drop_space(str(settings.storage.resolved_data_dir()))


def test_driver_errors_map_onto_the_project_errors():
    cases = [
        (
            PSYCOPG_ERRORS,
            psycopg.errors.UndefinedTable("no table"),
            PermanentError,
            "run ensure_schema() first",
        ),
        (PSYCOPG_ERRORS, psycopg.DataError("bad"), DataValidationError, None),
        (PSYCOPG_ERRORS, psycopg.IntegrityError("dup"), DataValidationError, None),
        (PSYCOPG_ERRORS, psycopg.OperationalError("gone"), StoreUnavailableError, None),
        (PSYCOPG_ERRORS, ConnectionResetError("reset"), StoreUnavailableError, None),
        (PSYCOPG_ERRORS, psycopg.ProgrammingError("syntax"), PermanentError, None),
        (CLICKHOUSE_ERRORS, ch_errors.DataError("bad"), DataValidationError, None),
        (CLICKHOUSE_ERRORS, ch_errors.DatabaseError("Code: 6. cannot parse"), PermanentError, None),
        (CLICKHOUSE_ERRORS, ch_errors.OperationalError("gone"), StoreUnavailableError, None),
        (CLICKHOUSE_ERRORS, RuntimeError("chDB: already initialized"), PermanentError, None),
    ]
    for table, exc, expected, hint in cases:
        error = table.translate(exc, service="svc", label="store at host", operation="write", secrets=["pw"])
        assert type(error) is expected, (exc, error)
        assert (error.service, error.operation) == ("svc", "write")
        assert str(error).startswith("store at host: ")
        assert hint is None or str(error).endswith(f"({hint})")


@pytest.mark.parametrize(("code", "expected"), [(6, DataValidationError), (209, StoreUnavailableError)])
def test_clickhouse_server_codes_decide_the_class(code, expected):
    exc = ch_errors.DatabaseError(f"Code: {code}.")
    exc.code = code  # clickhouse-connect sets it from the server's answer
    assert type(CLICKHOUSE_ERRORS.translate(exc, service="clickhouse", label="ch")) is expected


def test_an_unreadable_day_file_is_permanent_and_says_where(tmp_path):
    store = ParquetQuoteStore(tmp_path / "quotes")
    store.write(TON, make_quotes(n=50))
    day_file = next(store.root.rglob("part-0.parquet"))
    day_file.write_bytes(b"not parquet at all")
    with pytest.raises(PermanentError, match=f"cannot read {day_file}") as caught:
        store.time_range(TON)
    assert (caught.value.service, caught.value.operation) == ("parquet", "time_range")
    with pytest.raises(PermanentError, match="cannot read binance:TONUSDT files") as caught:
        store.read(TON, datetime(2000, 1, 1), datetime(2100, 1, 1))
    assert caught.value.operation == "read" and isinstance(caught.value.__cause__, pa.ArrowInvalid | OSError)
