"""Per-market settings: calendar, bar interval, window and costs come from the market's entry, then
its exchange, then the defaults; a window too short for the agent, the GA and the A/B test is refused
at load with the numbers; the partition start is configurable."""

from datetime import date, timedelta

import pytest

from rof_pipelines.core.market import WindowLength
from rof_pipelines.errors import ConfigError
from rof_pipelines.settings import load_settings, parse_duration


def settings(**storage):  # type: ignore[no-untyped-def]
    return load_settings(overrides={"storage": storage}, environ={})


def test_defaults_follow_the_exchange_and_its_asset_class():
    config = settings()
    crypto = config.market_profile("binance:BTCUSDT")
    fx = config.market_profile("oanda:EURUSD")
    stock = config.market_profile("nasdaq:GOOG")
    assert (crypto.calendar_name, crypto.asset_class) == ("24/7", "crypto")
    assert (fx.calendar_name, fx.asset_class) == ("FX", "fx")
    assert (stock.calendar_name, stock.asset_class) == ("XNYS", "equity")
    # Crypto pays the configured taker-like costs; FX and stocks their asset class's basis points.
    assert (crypto.fee, crypto.slippage) == (0.001, 0.0005)
    assert (fx.fee, fx.slippage) == (0.00002, 0.00001)
    assert fx.costs_text() == "fee 0.20 bp + slippage 0.10 bp per side"
    assert (stock.fee, stock.slippage) == (0.00005, 0.0001)
    assert crypto.bar_interval == fx.bar_interval == timedelta(minutes=1)


def test_market_entry_beats_exchange_beats_defaults():
    config = settings(
        markets=[
            "binance:TONUSDT",
            {"market": "oanda:EURUSD", "bar_interval": "1h", "data_period": "90d", "fee": 0.00001},
        ],
        exchanges={"oanda": {"slippage": 0.00004, "bar_interval": "4h"}, "lse": {"calendar": "XLON"}},
        costs={"equity": {"fee": 0.0002, "slippage": 0.0003}},
    )
    assert config.storage.markets == ["binance:TONUSDT", "oanda:EURUSD"]
    eurusd = config.market_profile("oanda:EURUSD")
    assert eurusd.bar_interval == timedelta(hours=1)  # the market's own, not the exchange's 4h
    assert eurusd.window == WindowLength(span=timedelta(days=90))
    assert (eurusd.fee, eurusd.slippage) == (0.00001, 0.00004)
    gbpusd = config.market_profile("oanda:GBPUSD")  # not configured: its exchange's 4h
    assert gbpusd.bar_interval == timedelta(hours=4) and gbpusd.window.span == timedelta(days=1)
    vod = config.market_profile("lse:VOD")
    assert vod.calendar_name == "XLON" and (vod.fee, vod.slippage) == (0.0002, 0.0003)


def test_windows_in_spans_years_or_bars():
    assert WindowLength.parse("2y", parse_duration).span == timedelta(days=730)
    assert WindowLength.parse("500 bars", parse_duration) == WindowLength(bars=500)
    assert WindowLength.parse("500b", parse_duration) == WindowLength(bars=500)
    config = settings(markets=[{"market": "nasdaq:GOOG", "bar_interval": "1d", "data_period": "400 bars"}])
    profile = config.market_profile("nasdaq:GOOG")
    assert profile.window.expected_bars(profile.bars_per_year) == 400
    assert str(profile.window) == "400 bars"
    assert config.redacted()["storage"]["market_overrides"]["nasdaq:GOOG"]["data_period"] == "400 bars"


def test_a_window_too_short_for_the_optimiser_is_refused_with_the_numbers():
    with pytest.raises(ConfigError) as refused:
        settings(markets=[{"market": "oanda:EURUSD", "bar_interval": "1h", "data_period": "7d"}])
    message = str(refused.value)
    assert "storage.markets[oanda:EURUSD]" in message
    assert "a 7d window at 1h bars on the FX calendar holds about 119 bars" in message
    assert "83 training bars (need >= 200)" in message and "GA validation bars (need >= 30)" in message
    with pytest.raises(ConfigError, match=r"ab_tests.data_period: binance:TONUSDT: a 2h window at 1m"):
        load_settings(overrides={"ab_tests": {"data_period": "2h"}}, environ={})
    with pytest.raises(ConfigError, match=r"150 bars"):
        settings(markets=[{"market": "nasdaq:GOOG", "bar_interval": "1d", "data_period": "150 bars"}])


def test_bar_intervals_from_one_second_to_one_day():
    for ok in ("1m", "5m", "1h", "4h", "1d"):
        config = load_settings(
            overrides={"storage": {"bar_interval": ok}, "ab_tests": {"data_period": "1000 bars"}}, environ={}
        )
        assert config.market_profile("binance:TONUSDT").bar_interval == parse_duration(ok)
    for bad in ("7m", "2d", "1w"):
        with pytest.raises(ConfigError, match="bar_interval must divide a day evenly"):
            load_settings(
                overrides={"storage": {"markets": [{"market": "oanda:EURUSD", "bar_interval": bad}]}},
                environ={},
            )


def test_history_start_is_configurable_and_bounded():
    assert settings().storage.history_start == date(2000, 1, 1)
    assert settings(history_start="1990-01-02").storage.history_start == date(1990, 1, 2)
    with pytest.raises(
        ConfigError, match=r"storage\.history_start: history_start must lie between 1970-01-01"
    ):
        settings(history_start="1960-01-01")
