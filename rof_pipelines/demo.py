"""``rof demo``: the main job, end to end, on whatever store the config names (Parquet by default)."""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from dagster import DagsterInstance

from rof_pipelines.adapters.quote_stores import open_quote_store
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import generate_quotes
from rof_pipelines.partitions import market_day_key, markets_partitions
from rof_pipelines.settings import Settings

DEMO_JOB = "all_market_day_assets"


@dataclass
class PartitionOutcome:
    market: str
    day: str
    success: bool
    run_id: str
    facts: dict[str, object] = field(default_factory=dict)
    failed_checks: list[str] = field(default_factory=list)


@dataclass
class DemoSummary:
    store: str
    generated: dict[str, int]
    outcomes: list[PartitionOutcome]

    @property
    def runs(self) -> int:
        return len(self.outcomes)

    @property
    def failed(self) -> list[PartitionOutcome]:
        return [o for o in self.outcomes if not o.success]

    def render(self) -> str:
        lines = [f"quote store: {self.store}"]
        for market, rows in self.generated.items():
            lines.append(f"generated {rows} snapshots for {market}")
        header = (
            f"{'market':<18} {'date':<10} {'status':<7} {'snapshots':>9} {'bars':>5} {'close':>12} "
            f"{'rsi':>6} {'agent':>8} {'b&h':>8}  {'A/B decision':<28} checks"
        )
        lines += ["", header, "-" * len(header)]
        for o in self.outcomes:
            close = o.facts.get("last_close")
            rsi = o.facts.get("last_rsi")
            lines.append(
                f"{o.market:<18} {o.day:<10} {'ok' if o.success else 'FAILED':<7} "
                f"{o.facts.get('snapshots', '-'):>9} {o.facts.get('bars', '-'):>5} "
                f"{(f'{close:.6g}' if isinstance(close, float) else '-'):>12} "
                f"{(f'{rsi:.1f}' if isinstance(rsi, float) else '-'):>6} "
                f"{_percent(o.facts.get('agent_return')):>8} {_percent(o.facts.get('bh_return')):>8}  "
                f"{o.facts.get('decision', '-')!s:<28} "
                + (("warn/failed: " + ", ".join(o.failed_checks)) if o.failed_checks else "all passed")
            )
        return "\n".join(lines)


def _percent(value: object) -> str:
    return f"{value:+.2%}" if isinstance(value, float) else "-"


def demo_days(days: int, today: date | None = None) -> list[date]:
    """The last ``days`` complete UTC days."""
    today = today or datetime.now(UTC).date()
    return [today - timedelta(days=offset) for offset in range(days, 0, -1)]


def run_demo(
    settings: Settings, days: int = 3, seed: int = 0, instance: DagsterInstance | None = None
) -> DemoSummary:
    day_list = demo_days(days)
    start = datetime.combine(day_list[0], datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(day_list[-1], datetime.min.time(), tzinfo=UTC) + timedelta(days=1)
    markets = [Market.parse(key) for key in settings.storage.markets]
    generated: dict[str, int] = {}
    with open_quote_store(settings) as store:
        store.ensure_schema()
        described = store.describe()
        for market in markets:
            held = store.time_range(market)
            if held is None or held[0] > start + timedelta(hours=1) or held[1] < end - timedelta(hours=1):
                generated[market.key] = store.write(market, generate_quotes(market, start, end, seed=seed))

    outcomes = run_market_days(markets, day_list, instance or DagsterInstance.get())
    return DemoSummary(described, generated, outcomes)


def register_markets(instance: DagsterInstance, markets: list[Market]) -> list[str]:
    """Add markets the instance does not know yet to the `markets` partitions; returns the new ones."""
    known = set(instance.get_dynamic_partitions(markets_partitions.name))
    missing = [m.key for m in markets if m.key not in known]
    if missing:
        instance.add_dynamic_partitions(markets_partitions.name, missing)
    return missing


def run_market_days(
    markets: list[Market],
    days: list[date],
    instance: DagsterInstance,
    *,
    job_name: str = DEMO_JOB,
    run_config: dict | None = None,
    log_level: str = "WARNING",
) -> list[PartitionOutcome]:
    """Materialise ``job_name`` for every market and day through Dagster, in this process, day by
    day, recorded in ``instance`` (the UI shows the runs afterwards)."""
    from rof_pipelines.definitions import defs

    register_markets(instance, markets)
    job = defs.resolve_job_def(job_name)
    config = {"loggers": {"console": {"config": {"log_level": log_level}}}, **(run_config or {})}
    outcomes = []
    for day in days:
        for market in markets:
            result = job.execute_in_process(
                partition_key=market_day_key(market, day),
                instance=instance,
                raise_on_error=False,
                run_config=config,
                tags={"rof/trigger": "demo", "rof/market": market.key, "rof/date": day.isoformat()},
            )
            outcomes.append(_outcome(market, day, result))
    return outcomes


def _outcome(market: Market, day: date, result) -> PartitionOutcome:  # type: ignore[no-untyped-def]
    outcome = PartitionOutcome(market.key, day.isoformat(), result.success, result.run_id)
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        meta = {k: v.value for k, v in materialization.metadata.items()}
        name = materialization.asset_key.to_user_string()
        if name == "quote_snapshots":
            outcome.facts["snapshots"] = meta.get("dagster/row_count")
        elif name == "indicator_frame":
            outcome.facts["bars"] = meta.get("dagster/row_count")
            outcome.facts["last_close"] = meta.get("last_close")
            outcome.facts["last_rsi"] = meta.get("last_rsi")
        elif name == "q_table":
            outcome.facts["agent_return"] = meta.get("test/total_return")
            outcome.facts["bh_return"] = meta.get("test/bh_total_return")
        elif name == "ab_report":
            outcome.facts["decision"] = meta.get("decision")
    if result.success and not result.get_asset_materialization_events():
        outcome.facts["decision"] = "skipped: market closed"
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            outcome.failed_checks.append(evaluation.check_name)
    return outcome
