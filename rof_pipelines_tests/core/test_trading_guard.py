"""Nobody trades by accident: the order path refuses unless allowed, and even then has no live route."""

import pytest

from rof_pipelines.core.trading import Order, OrderGateway, place_order
from rof_pipelines.errors import NoLiveRouteError, PermanentError, TradingDisabledError
from rof_pipelines.settings import AIConfig

ORDER = Order(market="binance:TONUSDT", side="buy", fraction=0.1, reason="q-table signal")


def test_refuses_when_trading_is_disabled():
    with pytest.raises(TradingDisabledError, match=r"allow_trading is false.*paper-trades"):
        OrderGateway(allow_trading=False).place_order(ORDER)
    with pytest.raises(TradingDisabledError, match="binance:TONUSDT"):
        place_order(ORDER, AIConfig())  # the default config
    assert issubclass(TradingDisabledError, PermanentError)


def test_never_pretends_without_a_live_route():
    with pytest.raises(NoLiveRouteError, match="no live order route configured") as info:
        place_order(ORDER, AIConfig(allow_trading=True))
    assert isinstance(info.value, PermanentError)
    assert not isinstance(info.value, TradingDisabledError)


def test_simulated_fills_are_always_allowed():
    gateway = OrderGateway.from_settings(AIConfig(), fee=0.001, slippage=0.0005)
    buy = gateway.simulate(ORDER, reference_price=2.0)
    sell = gateway.simulate(Order("binance:TONUSDT", "sell", 0.1), reference_price=2.0)
    assert buy.simulated and buy.price == pytest.approx(2.001) and buy.fee == 0.001
    assert sell.price == pytest.approx(1.999)
    with pytest.raises(ValueError, match="side"):
        Order("binance:TONUSDT", "hold", 0.1)  # type: ignore[arg-type]
