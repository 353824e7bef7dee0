from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from ta.momentum import RSIIndicator

from rof_pipelines.core.indicators import (
    INDICATOR_COLUMNS,
    IndicatorWindows,
    build_indicator_frame,
    composite_signal,
)
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import clean_quotes, generate_quotes, resample_bars

DAY = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    quotes, _ = clean_quotes(
        generate_quotes(Market.parse("binance:TONUSDT"), DAY, DAY + timedelta(days=1), seed=1)
    )
    return resample_bars(quotes, timedelta(minutes=1))


def test_every_column_present_and_defined_after_warmup(bars):
    frame = build_indicator_frame(bars)
    assert set(INDICATOR_COLUMNS) <= set(frame.columns)
    after = frame.iloc[IndicatorWindows().warmup_bars :]
    assert not after[list(INDICATOR_COLUMNS)].isna().any().any()
    assert len(frame) == 1440


def test_values_are_the_ta_library_and_consistent(bars):
    frame = build_indicator_frame(bars)
    pd.testing.assert_series_equal(frame["rsi"], RSIIndicator(bars["close"], 14).rsi(), check_names=False)
    np.testing.assert_allclose(frame["macd_hist"], frame["macd"] - frame["macd_signal"], equal_nan=True)
    defined = frame.dropna()
    assert ((defined["rsi"] >= 0) & (defined["rsi"] <= 100)).all()
    assert (defined["bb_low"] <= defined["bb_mid"]).all() and (defined["bb_mid"] <= defined["bb_high"]).all()
    np.testing.assert_allclose(defined["atr_pct"], defined["atr"] / defined["close"])
    assert set(defined["signal"].unique()) <= {-1.0, 0.0, 1.0}


def test_signal_is_a_two_of_three_vote():
    rows = pd.DataFrame(
        {  # rsi, macd_hist, bb_pband -> expected
            "rsi": [25, 25, 75, 50, 75, 50, np.nan],
            "macd_hist": [0.1, -0.1, -0.1, 0.1, 0.1, 0.0, 0.1],
            "bb_pband": [-0.1, -0.1, 1.2, 0.5, 0.5, 0.5, 0.5],
        }
    )
    expected = [1.0, 0.0, -1.0, 0.0, 0.0, 0.0, np.nan]
    np.testing.assert_array_equal(composite_signal(rows).to_numpy(), expected)


def test_short_input_does_not_crash():
    bars = pd.DataFrame(
        {
            "open": [1.0, 1.1],
            "high": [1.2, 1.2],
            "low": [0.9, 1.0],
            "close": [1.1, 1.15],
            "volume": 1.0,
            "n_ticks": 1.0,
        },
        index=pd.date_range(DAY, periods=2, freq="1min", name="ts"),
    )
    frame = build_indicator_frame(bars)
    assert len(frame) == 2 and frame["rsi"].isna().all()


@pytest.mark.parametrize(("n", "seed"), [(40, 0), (500, 1), (5000, 2)])
def test_compiled_atr_and_adx_equal_the_ta_library(n, seed):
    from ta.trend import ADXIndicator
    from ta.volatility import AverageTrueRange

    from rof_pipelines.core.indicators import adx, atr

    rng = np.random.default_rng(seed)
    close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.01, n))))
    high = close * (1 + rng.uniform(0, 0.01, n))
    low = close * (1 - rng.uniform(0, 0.01, n))
    expected_atr = AverageTrueRange(high, low, close, 14).average_true_range().to_numpy()
    expected_adx = ADXIndicator(high, low, close, 14).adx().to_numpy()
    got_atr, got_adx = atr(high, low, close, 14).to_numpy(), adx(high, low, close, 14).to_numpy()
    np.testing.assert_allclose(got_atr[13:], expected_atr[13:], rtol=1e-12)
    np.testing.assert_allclose(got_adx[27:], expected_adx[27:], rtol=1e-10)
    assert np.isnan(got_atr[:13]).all() and np.isnan(got_adx[:27]).all()


def test_numpy_true_range_equals_the_ta_library():
    """The optimiser's re-windowed ATR feature (core.features) reads this array version."""
    from ta.volatility import AverageTrueRange

    from rof_pipelines.core.indicators import true_range

    rng = np.random.default_rng(3)
    close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300))))
    high = close * (1 + rng.uniform(0, 0.01, 300))
    low = close * (1 - rng.uniform(0, 0.01, 300))
    expected = AverageTrueRange._true_range(high, low, close.shift(1)).to_numpy(dtype="float64")
    got = true_range(high.to_numpy(), low.to_numpy(), close.to_numpy())
    assert np.array_equal(got, expected, equal_nan=True)
