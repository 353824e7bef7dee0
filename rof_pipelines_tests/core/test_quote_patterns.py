"""Planted patterns in the quote generator: present when asked for, absent (and unchanged) otherwise."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from rof_pipelines.core.indicators import build_indicator_frame
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import GeneratorConfig, clean_quotes, generate_quotes, resample_bars

TON = Market.parse("binance:TONUSDT")
DAY = datetime(2024, 3, 1, tzinfo=UTC)
MOMENTUM = GeneratorConfig(pattern="momentum")


def trend_t_statistic(quotes: pd.DataFrame, minutes: int) -> float:
    """Welch t of the next-bar return (what a decision at bar t earns: open t+1 -> open t+2) between
    bars whose EMA trend feature is up and bars where it is down."""
    clean, _ = clean_quotes(quotes)
    frame = build_indicator_frame(resample_bars(clean, timedelta(minutes=minutes))).iloc[60:]
    opens = frame["open"].to_numpy()
    earned = opens[2:] / opens[1:-1] - 1.0
    trend = frame["trend"].to_numpy()[:-2]
    up, down = earned[trend > 0], earned[trend < 0]
    return float((up.mean() - down.mean()) / np.sqrt(up.var(ddof=1) / len(up) + down.var(ddof=1) / len(down)))


def test_pattern_none_is_the_walk_the_generator_always_produced():
    """Pinned values of the plain walk, so a pattern can never change it (other tests rely on it)."""
    quotes = generate_quotes(TON, DAY, DAY + timedelta(hours=6), seed=3)
    assert len(quotes) == 2234
    assert str(quotes["ts"].iloc[0]) == "2024-03-01 00:00:18.845898+00:00"
    assert str(quotes["ts"].iloc[-1]) == "2024-03-01 05:59:38.420291+00:00"
    assert int(quotes["ts"].dt.as_unit("us").astype("int64").sum()) == 3818491120495250115
    pinned = {
        "price": (12323.136362927642, 5.516248954945523, 5.529735685746557),
        "bid": (12320.198875958635, 5.514979238637238, 5.528603659052849),
        "ask": (12326.073849896651, 5.517518671253807, 5.530867712440265),
        "volume": (127219.9144778436, 33.90147825614725, 41.298225700862616),
    }
    for column, (total, at_1000, last) in pinned.items():
        values = quotes[column].to_numpy()
        assert np.nansum(values) == pytest.approx(total, rel=1e-12)
        assert values[1000] == pytest.approx(at_1000, rel=1e-12)
        assert values[-1] == pytest.approx(last, rel=1e-12)
    explicit = generate_quotes(
        TON, DAY, DAY + timedelta(hours=6), seed=3, config=GeneratorConfig(pattern="none")
    )
    pd.testing.assert_frame_equal(quotes, explicit, check_exact=True)


def test_momentum_at_strength_zero_is_the_plain_walk_bit_for_bit():
    """The pattern draws from its own generator: it adds drift and changes nothing else."""
    plain = generate_quotes(TON, DAY, DAY + timedelta(days=1), seed=5)
    silent = generate_quotes(
        TON, DAY, DAY + timedelta(days=1), seed=5, config=replace(MOMENTUM, pattern_strength=0.0)
    )
    pd.testing.assert_frame_equal(plain, silent, check_exact=True)
    patterned = generate_quotes(TON, DAY, DAY + timedelta(days=1), seed=5, config=MOMENTUM)
    assert patterned["ts"].equals(plain["ts"]) and patterned["volume"].equals(plain["volume"])
    assert not np.allclose(patterned["price"], plain["price"])


@pytest.mark.parametrize("market", ["binance:TONUSDT", "binance:BTCUSDT"])
def test_momentum_makes_the_trend_feature_predict_the_next_bar(market):
    """Three days of 1-minute bars: the next-bar return given the agent's trend feature differs."""
    end = DAY + timedelta(days=3)
    patterned = generate_quotes(Market.parse(market), DAY, end, config=MOMENTUM)
    plain = generate_quotes(Market.parse(market), DAY, end)
    assert trend_t_statistic(patterned, 1) > 5
    assert abs(trend_t_statistic(plain, 1)) < 3


def test_momentum_is_visible_on_the_demos_fifteen_minute_bars():
    quotes = generate_quotes(TON, DAY, DAY + timedelta(days=10), config=MOMENTUM)
    assert trend_t_statistic(quotes, 15) > 5


def test_unknown_patterns_and_bad_strengths_are_refused():
    with pytest.raises(ValueError, match="unknown pattern 'meanrev'; known: none, momentum"):
        GeneratorConfig(pattern="meanrev")
    with pytest.raises(ValueError, match="pattern_strength"):
        GeneratorConfig(pattern="momentum", pattern_strength=-1.0)
