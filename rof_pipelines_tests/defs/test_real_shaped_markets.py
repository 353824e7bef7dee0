"""Real-shaped data end to end: each file is imported with one `rof quotes import` and run with
`rof run` through Dagster up to the A/B report, with the market's own bar interval, window,
calendar and costs; closed days are skipped, not red.

(a) hourly FX candles from 2017 written by pandas (the timestamp is the unnamed index), weekend
gaps, a 90-day window at 1h; (b) daily equity candles from 2004 as a Yahoo download, exchange
holidays, a 2-year window at 1d; (c) one-minute crypto klines, a 7-day window at 1m.
"""

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
from typer.testing import CliRunner

from rof_pipelines.cli import app
from rof_pipelines.partitions import market_day_key
from rof_pipelines_tests.fixtures.real_shaped import (
    crypto_kline_rows,
    equity_daily_frame,
    fx_hourly_frame,
    write_kline_csv,
    write_yahoo_csv,
)

pytestmark = pytest.mark.slow
SMALL_GA = ("--ga-generations", "2", "--ga-population", "8")
ASSETS = ("quote_snapshots", "indicator_frame", "q_table", "ga_population", "ab_report", "strategy_knowledge")


@dataclass(frozen=True)
class Case:
    market: str
    bar_interval: str
    data_period: str
    trading_day: date
    closed_day: date | None
    bars_per_year: float
    import_args: tuple[str, ...] = ()


def write_fx(path: Path) -> Path:
    fx_hourly_frame("2017-01-02", days=190, seed=1).to_csv(path)  # pandas' own layout
    return path


def write_equity(path: Path) -> Path:
    return write_yahoo_csv(equity_daily_frame("2004-01-02", "2006-12-29", seed=2), path)


def write_crypto(path: Path) -> Path:
    return write_kline_csv(crypto_kline_rows("2024-03-01", minutes=8 * 1440, seed=3), path)


CASES = {
    # Monday after a weekend: its MACD/ADX need the bars before the weekend.
    "fx_1h": (Case("oanda:EURUSD", "1h", "90d", date(2017, 6, 5), date(2017, 6, 3), 6258.0), write_fx),
    # The day after Independence Day; the holiday itself has no work.
    "equity_1d": (
        Case("nasdaq:GOOG", "1d", "2y", date(2006, 7, 5), date(2006, 7, 4), 251.25, ("--tz", "UTC")),
        write_equity,
    ),
    "crypto_1m": (Case("binance:BTCUSDT", "1m", "7d", date(2024, 3, 8), None, 525960.0), write_crypto),
}


@pytest.fixture
def project(tmp_path: Path, state_storage: dict, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = {
        "storage": {
            "data_dir": str(tmp_path / "data"),
            "quote_store": "parquet",
            "markets": [
                {"market": case.market, "bar_interval": case.bar_interval, "data_period": case.data_period}
                for case, _ in CASES.values()
            ],
            "exchanges": {"oanda": {"bar_interval": "1h", "data_period": "90d"}},
        },
        "state_storage": state_storage,
        "ai_config": {"rl": {"episodes": 2}},
        "ab_tests": {"experiment": {"ga": {"min_population": 8}}, "n_boot": 200},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("ROF_CONFIG", str(path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return tmp_path


def latest(instance: DagsterInstance, asset: str, market: str, day: date) -> dict | None:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[market_day_key(market, day)]), limit=1
    ).records
    if not records:
        return None
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_imported_market_runs_to_the_ab_report(project: Path, name: str) -> None:
    case, write = CASES[name]
    runner = CliRunner()
    source = write(project / f"{name}.csv")

    imported = runner.invoke(app, ["quotes", "import", str(source), "-m", case.market, *case.import_args])
    assert imported.exit_code == 0, imported.output
    assert f"x markets {case.market}" in imported.output
    assert "added to the Dagster instance" in imported.output

    days = [case.trading_day] + ([case.closed_day] if case.closed_day else [])
    ran = runner.invoke(
        app,
        ["run", "-m", case.market, *[a for day in days for a in ("-d", day.isoformat())], *SMALL_GA],
    )
    assert ran.exit_code == 0, ran.output

    instance = DagsterInstance.get()
    report = latest(instance, "ab_report", case.market, case.trading_day)
    assert report is not None, ran.output
    assert report["calendar"] == ("24/7" if name == "crypto_1m" else ("FX" if name == "fx_1h" else "XNYS"))
    assert report["bar_interval"] == case.bar_interval
    assert report["bars_per_year"] == pytest.approx(case.bars_per_year)
    assert "bp" in report["costs"]
    assert report["decision"].startswith(("promote", "keep active"))
    assert report["train_bars"] >= 200 and report["test_bars"] >= 30
    frame = latest(instance, "indicator_frame", case.market, case.trading_day)
    assert frame is not None and frame["warmup_bars_available"] >= 100
    row = next(
        line
        for line in ran.output.splitlines()
        if line.startswith(case.market) and f" {case.trading_day} " in line
    )
    assert " ok " in row and row.rstrip().endswith("all passed"), row  # no failed or warning check

    if case.closed_day:
        for asset in ASSETS:
            assert latest(instance, asset, case.market, case.closed_day) is None
        assert "skipped: market closed" in ran.output


def failure_text(instance: DagsterInstance) -> str:
    runs = instance.get_runs(limit=1)
    return " ".join(
        str(event.dagster_event.event_specific_data)
        for event in instance.all_logs(runs[0].run_id)
        if event.dagster_event and event.dagster_event.event_type_value == "STEP_FAILURE"
    )


def test_refusals_name_the_numbers(project: Path) -> None:
    runner = CliRunner()
    hourly = write_fx(project / "fx.csv")

    # Candles coarser than the market's bars: refused at import, nothing written.
    refused = runner.invoke(app, ["quotes", "import", str(hourly), "-m", "fxcm:GBPUSD"])
    assert refused.exit_code == 2
    assert "1h candles cannot feed fxcm:GBPUSD's 1m bars" in refused.output
    assert "nothing was written" in refused.output and 'bar_interval: "1h"' in refused.output

    # A day before the first partition day: refused, saying what to change.
    early = runner.invoke(app, ["run", "-m", "oanda:EURUSD", "-d", "1999-12-31"])
    assert early.exit_code == 2
    assert "1999-12-31 is before the first partition day 2000-01-01 (storage.history_start)" in early.output
    assert "set storage.history_start to 1999-12-31 or earlier" in early.output

    # Data before history_start imports, with a warning that names the start.
    old = project / "old.csv"
    fx_hourly_frame("1999-12-27", days=10, seed=4).to_csv(old)
    warned = runner.invoke(app, ["quotes", "import", str(old), "-m", "oanda:USDJPY"])
    assert warned.exit_code == 0, warned.output
    assert "data from 1999-12-27 starts before the first partition day 2000-01-01" in warned.output
    # Ten days of history cannot fill a 90-day window: the run fails with the bar counts.
    short = runner.invoke(app, ["run", "-m", "oanda:USDJPY", "-d", "2000-01-05", *SMALL_GA])
    assert short.exit_code == 1
    text = failure_text(DagsterInstance.get())
    assert "oanda:USDJPY: the 90d window ending 2000-01-05 holds" in text and "(need >= 200)" in text

    # bar_interval made finer after the import: indicator_frame refuses to invent sub-bars.
    assert runner.invoke(app, ["quotes", "import", str(hourly), "-m", "oanda:EURUSD"]).exit_code == 0
    config = yaml.safe_load((project / "config.yaml").read_text())
    config["storage"]["markets"] = [{"market": "oanda:EURUSD", "bar_interval": "15m", "data_period": "30d"}]
    (project / "config.yaml").write_text(yaml.safe_dump(config))
    finer = runner.invoke(app, ["run", "-m", "oanda:EURUSD", "-d", "2017-06-05", *SMALL_GA])
    assert finer.exit_code == 1
    assert "bar_interval 15m is finer than the stored 1h candles" in failure_text(DagsterInstance.get())
