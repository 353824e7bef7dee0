"""The paper-trading guard: signals and simulated fills always; live orders never by accident.

Every path that could send an order to an exchange goes through :meth:`OrderGateway.place_order`.
It refuses with :class:`~rof_pipelines.errors.TradingDisabledError` while ``ai_config.allow_trading``
is false (the default), and, because no live broker route exists yet, with :class:`NoLiveRouteError`
even when it is true: the system never pretends an order was placed.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NoReturn

from rof_pipelines.errors import NoLiveRouteError, TradingDisabledError

if TYPE_CHECKING:
    from rof_pipelines.settings import AIConfig

Side = Literal["buy", "sell"]


@dataclass(frozen=True)
class Order:
    market: str  # "exchange:PAIR"
    side: Side
    fraction: float  # of equity (e.g. the Kelly fraction)
    reason: str = ""

    def __post_init__(self) -> None:
        if self.side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', got {self.side!r}")
        if not 0 <= self.fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction}")


@dataclass(frozen=True)
class SimulatedFill:
    """A paper fill: ``price`` includes slippage against the order; ``fee`` is a fraction of notional."""

    order: Order
    reference_price: float
    price: float
    fee: float
    simulated: bool = True


class OrderGateway:
    """The one door to the market. ``simulate`` is always open; ``place_order`` is guarded."""

    def __init__(self, allow_trading: bool = False, *, fee: float = 0.001, slippage: float = 0.0005) -> None:
        self.allow_trading = bool(allow_trading)
        self.fee = fee
        self.slippage = slippage

    @classmethod
    def from_settings(
        cls, ai_config: "AIConfig", *, fee: float | None = None, slippage: float | None = None
    ) -> "OrderGateway":
        rl = ai_config.rl
        return cls(
            ai_config.allow_trading,
            fee=fee if fee is not None else getattr(rl, "fee", 0.001),
            slippage=slippage if slippage is not None else getattr(rl, "slippage", 0.0005),
        )

    def simulate(self, order: Order, reference_price: float) -> SimulatedFill:
        """A paper fill at the reference price moved against us by the slippage; always allowed."""
        if not reference_price > 0:
            raise ValueError(f"reference_price must be > 0, got {reference_price}")
        sign = 1.0 if order.side == "buy" else -1.0
        price = reference_price * (1.0 + sign * self.slippage)
        return SimulatedFill(order=order, reference_price=reference_price, price=price, fee=self.fee)

    def place_order(self, order: Order) -> NoReturn:
        """Send a live order. Refuses: see the module docstring."""
        if not self.allow_trading:
            raise TradingDisabledError(
                f"live order refused ({order.side} {order.market}): ai_config.allow_trading is false, so "
                "this system only paper-trades (signals and simulated fills). An operator must set "
                "ai_config.allow_trading: true explicitly, and a live order route must exist."
            )
        raise NoLiveRouteError(
            f"live order refused ({order.side} {order.market}): allow_trading is true but no live order "
            "route configured; nothing was sent. Use simulated fills until a broker adapter exists."
        )


def place_order(order: Order, ai_config: "AIConfig") -> NoReturn:
    """Module-level shortcut for callers holding only the config."""
    OrderGateway.from_settings(ai_config).place_order(order)
