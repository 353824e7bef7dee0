"""The indicator frame: OHLCV bars plus RSI, MACD, ATR, Bollinger Bands (from ``ta``) and the
volatility, trend and signal columns the RL agent's state features read.

Column contract (the RL agent and later assets rely on these names): the bars' open, high, low,
close, volume, n_ticks, plus :data:`INDICATOR_COLUMNS`. Which columns become states, and how, is
``core.features``.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit
from ta.momentum import RSIIndicator
from ta.trend import MACD, EMAIndicator
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
    frame["atr"] = atr(high, low, close, windows.atr) if n > windows.atr else np.nan
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
    frame["adx"] = adx(high, low, close, windows.adx) if n > 2 * windows.adx else np.nan
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


# ta computes ATR and ADX with Python loops (about 6 s and 14 s per million bars); these are the same
# recursions, step for step, compiled. Tests hold them equal to ta's own output.


def atr(high: pd.Series, low: pd.Series, close: pd.Series, window: int) -> pd.Series:
    """ta's AverageTrueRange (Wilder smoothing), with the warm-up rows NaN instead of 0."""
    ranges = AverageTrueRange._true_range(high, low, close.shift(1)).to_numpy(dtype="float64")
    values = _wilder_atr(ranges, window)
    values[: window - 1] = np.nan
    return pd.Series(values, index=close.index)


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """ta's ``AverageTrueRange._true_range`` (NaN-skipping max of the three ranges) on arrays."""
    prev = np.empty_like(close)
    prev[0] = np.nan
    prev[1:] = close[:-1]
    return np.fmax(np.fmax(high - low, np.abs(high - prev)), np.abs(low - prev))


@njit(cache=True)
def _wilder_atr(true_range: np.ndarray, window: int) -> np.ndarray:  # pragma: no cover - compiled
    out = np.zeros(len(true_range))
    out[window - 1] = true_range[:window].mean()
    for i in range(window, len(true_range)):
        out[i] = (out[i - 1] * (window - 1) + true_range[i]) / float(window)
    return out


def rsi_values(close: np.ndarray, window: int) -> np.ndarray:
    """ta's ``RSIIndicator(close, window).rsi()`` on an array: the genetic optimiser recomputes RSI for
    every window it tries, and ta's pandas version costs ~1.3 ms per 7,000 bars against ~0.1 here.
    Equal to ta's within 1e-13 (the last bit of a division can differ); a test holds them equal."""
    return _ta_rsi(np.ascontiguousarray(close, dtype=np.float64), int(window))


@njit(cache=True)
def _ewm_unadjusted(values: np.ndarray, alpha: float, min_periods: int) -> np.ndarray:  # pragma: no cover
    """pandas' ``ewm(alpha=alpha, adjust=False, min_periods=...).mean()`` for NaN-free input, with
    pandas' own operation order (its weights are renormalised every step)."""
    n = values.shape[0]
    out = np.empty(n)
    weighted = values[0]
    out[0] = weighted if min_periods <= 1 else np.nan
    for i in range(1, n):
        old_wt = 1.0 - alpha
        cur = values[i]
        if weighted != cur:
            weighted = (old_wt * weighted + alpha * cur) / (old_wt + alpha)
        out[i] = weighted if i + 1 >= min_periods else np.nan
    return out


@njit(cache=True)
def _ta_rsi(close: np.ndarray, window: int) -> np.ndarray:  # pragma: no cover - compiled
    n = close.shape[0]
    up = np.zeros(n)
    down = np.zeros(n)
    for i in range(1, n):
        change = close[i] - close[i - 1]
        if change > 0:
            up[i] = change
        elif change < 0:
            down[i] = -change
    alpha = 1.0 / window
    gain = _ewm_unadjusted(up, alpha, window)
    loss = _ewm_unadjusted(down, alpha, window)
    out = np.empty(n)
    for i in range(n):
        if loss[i] == 0.0:
            out[i] = 100.0
        else:
            out[i] = 100.0 - 100.0 / (1.0 + gain[i] / loss[i])
    return out


def adx(high: pd.Series, low: pd.Series, close: pd.Series, window: int) -> pd.Series:
    """ta's ADXIndicator.adx(), with the warm-up rows NaN instead of 0."""
    values = _ta_adx(
        high.to_numpy(dtype="float64"), low.to_numpy(dtype="float64"), close.to_numpy(dtype="float64"), window
    )
    values[: 2 * window - 1] = np.nan
    return pd.Series(values, index=close.index)


@njit(cache=True)
def _wilder_sum(values: np.ndarray, window: int, length: int) -> np.ndarray:  # pragma: no cover
    out = np.zeros(length)
    out[0] = values[1 : window + 1].sum()
    for i in range(1, length - 1):  # ta leaves the last element 0; so do we
        out[i] = out[i - 1] - (out[i - 1] / float(window)) + values[window + i]
    return out


@njit(cache=True)
def _ta_adx(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int
) -> np.ndarray:  # pragma: no cover
    n = len(close)
    length = n - (window - 1)
    movement = np.full(n, np.nan)
    up = np.full(n, np.nan)
    down = np.full(n, np.nan)
    for i in range(1, n):
        movement[i] = max(high[i], close[i - 1]) - min(low[i], close[i - 1])
        diff_up = high[i] - high[i - 1]
        diff_down = low[i - 1] - low[i]
        up[i] = diff_up if (diff_up > diff_down and diff_up > 0) else 0.0
        down[i] = diff_down if (diff_down > diff_up and diff_down > 0) else 0.0
    trs = _wilder_sum(movement, window, length)
    dip = _wilder_sum(up, window, length)
    din = _wilder_sum(down, window, length)
    directional = np.zeros(length)
    for i in range(length):
        plus = 100 * (dip[i] / trs[i]) if trs[i] != 0 else 0.0
        minus = 100 * (din[i] / trs[i]) if trs[i] != 0 else 0.0
        directional[i] = 100 * np.abs((plus - minus) / (plus + minus)) if plus + minus != 0 else 0.0
    smoothed = np.zeros(length)
    smoothed[window] = directional[:window].mean()
    for i in range(window + 1, length):
        smoothed[i] = ((smoothed[i - 1] * (window - 1)) + directional[i - 1]) / float(window)
    out = np.zeros(n)
    out[window - 1 :] = smoothed
    return out
