"""Checks and JSON rules every state-store implementation applies before it stores anything, so the
PostgreSQL store and the in-memory one refuse the same input with the same message."""

import json
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from rof_pipelines.errors import DataValidationError
from rof_pipelines.settings import normalise_market

SERVICE = "state_store"
DEFAULT_UPDATED_BY = "rof_pipelines"


def json_safe(value: Any) -> Any:
    """Nested JSON with non-finite floats as None (jsonb refuses NaN/Infinity) and numpy scalars as
    Python ones: decisions and metrics carry inf (a Sortino without downside) legitimately."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, str | bytes):
        value = item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    """numpy scalars (GA output) and datetimes; anything else is a caller bug and fails loudly."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_dumps(value: Any) -> str:
    """The text a jsonb column receives."""
    # allow_nan=False: PostgreSQL jsonb refuses NaN/Infinity; fail here with a clear message instead.
    return json.dumps(value, allow_nan=False, default=_json_default)


def utc(moment: datetime | None) -> datetime | None:
    """A timestamptz as the store keeps and returns it: aware UTC (naive means UTC)."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        raise DataValidationError(f"{SERVICE}: expected a datetime, got {type(moment).__name__}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def market_key(market: Any) -> str:
    """``exchange:SYMBOL`` in its one spelling (DataValidationError when it is not a market)."""
    try:
        return normalise_market(str(market))
    except ValueError as exc:
        raise DataValidationError(f"{SERVICE}: market: {exc}") from None


def check_choice(field: str, value: str, allowed: tuple[str, ...]) -> str:
    """``value`` when it is one of ``allowed`` (the values a CHECK constraint admits)."""
    if value not in allowed:
        raise DataValidationError(f"{SERVICE}: {field} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def as_object(field: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON object column's value (None is the empty object)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DataValidationError(
            f"{SERVICE}: {field} must be a mapping (JSON object), got {type(value).__name__}"
        )
    return dict(value)
