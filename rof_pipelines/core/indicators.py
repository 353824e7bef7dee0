"""The indicator frame: OHLCV bars plus RSI, MACD, ATR, Bollinger Bands (from ``ta``) and the
volatility, trend and signal features the RL agent turns into states.

Column contract (the RL agent and later assets rely on these names): open, high, low, close, volume,
n_ticks, log_return, rsi, macd, macd_signal, macd_hist, atr, atr_pct, bb_high, bb_mid, bb_low,
bb_pband, bb_width, volatility, ema_fast, ema_slow, trend, adx, signal.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from ta.momentum import RSIIndicator
from ta.trend import MACD, ADXIndicator, EMAIndicator
from ta.volatility import AverageTrueRange, BollingerBands

INDICATOR_COLUMNS: tuple[str, ...] = (
    "log_return",
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "atr",
    "atr_pct",
    "bb_high",
    "bb_mid",
    "bb_low",
    "bb_pband",
    "bb_width",
    "volatility",
    "ema_fast",
    "ema_slow",
    "trend",
    "adx",
    "signal",
)


@dataclass(frozen=True)
class IndicatorWindows:
    rsi: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    atr: int = 14
    bollinger: int = 20
    bollinger_dev: float = 2.0
    volatility: int = 30
    adx: int = 14

    @property
    def warmup_bars(self) -> int:
        """Bars before every indicator is defined (ADX needs about twice its window)."""
        return max(self.macd_slow + self.macd_signal, self.bollinger, self.volatility, 2 * self.adx, self.rsi)


def build_indicator_frame(bars: pd.DataFrame, windows: IndicatorWindows | None = None) -> pd.DataFrame:
    """Add the indicator columns to OHLCV bars (index: bar open time). The first
    ``windows.warmup_bars`` rows can hold NaN; callers that have earlier bars should pass them in
    and trim afterwards."""
    windows = windows or IndicatorWindows()
    frame = bars.copy()
    close, high, low = frame["close"], frame["high"], frame["low"]
    n = len(frame)

    frame["log_return"] = np.log(close).diff()
    if n == 0:
        for column in INDICATOR_COLUMNS:
            frame[column] = pd.Series(dtype="float64")
        return frame

    frame["rsi"] = RSIIndicator(close, window=windows.rsi).rsi()
    macd = MACD(
        close,
        window_slow=windows.macd_slow,
        window_fast=windows.macd_fast,
        window_sign=windows.macd_signal,
    )
    frame["macd"] = macd.macd()
    frame["macd_signal"] = macd.macd_signal()
    frame["macd_hist"] = macd.macd_diff()
    # ta's ATR/ADX index past the end on frames shorter than their window; leave those NaN.
    frame["atr"] = (
        AverageTrueRange(high, low, close, window=windows.atr).average_true_range().replace(0.0, np.nan)
        if n > windows.atr
        else np.nan
    )
    frame["atr_pct"] = frame["atr"] / close
    bands = BollingerBands(close, window=windows.bollinger, window_dev=windows.bollinger_dev)
    frame["bb_high"] = bands.bollinger_hband()
    frame["bb_mid"] = bands.bollinger_mavg()
    frame["bb_low"] = bands.bollinger_lband()
    band_range = (frame["bb_high"] - frame["bb_low"]).replace(0.0, np.nan)
    frame["bb_pband"] = (close - frame["bb_low"]) / band_range
    frame["bb_width"] = band_range / frame["bb_mid"]
    frame["volatility"] = frame["log_return"].rolling(windows.volatility).std()
    frame["ema_fast"] = EMAIndicator(close, window=windows.macd_fast).ema_indicator()
    frame["ema_slow"] = EMAIndicator(close, window=windows.macd_slow).ema_indicator()
    frame["trend"] = frame["ema_fast"] / frame["ema_slow"] - 1.0
    frame["adx"] = (
        ADXIndicator(high, low, close, window=windows.adx).adx().replace(0.0, np.nan)
        if n > 2 * windows.adx
        else np.nan
    )
    frame["signal"] = composite_signal(frame)
    return frame


def composite_signal(frame: pd.DataFrame) -> pd.Series:
    """A simple vote of three classic rules (RSI extremes, MACD histogram sign, Bollinger breakout):
    +1 / -1 when at least two agree, else 0. A feature for the agent, not a strategy by itself."""
    rsi_vote = np.where(frame["rsi"] < 30, 1, np.where(frame["rsi"] > 70, -1, 0))
    macd_vote = np.sign(frame["macd_hist"].fillna(0.0).to_numpy())
    band_vote = np.where(frame["bb_pband"] < 0, 1, np.where(frame["bb_pband"] > 1, -1, 0))
    total = rsi_vote + macd_vote + band_vote
    signal = np.where(total >= 2, 1.0, np.where(total <= -2, -1.0, 0.0))
    defined = frame[["rsi", "macd_hist", "bb_pband"]].notna().all(axis=1).to_numpy()
    return pd.Series(np.where(defined, signal, np.nan), index=frame.index)
