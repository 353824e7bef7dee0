"""``rof demo``: the main job end to end on two synthetic markets, one with a planted pattern the
optimiser can find and one pure random walk, on whatever store the config names (Parquet by default).

The demo runs with its own configuration file: config.yaml plus ``DEMO_BARS`` for the demo markets
and ``DEMO_CHANGES`` (held-out share, short selling, GA validation), written next to the demo's data
so the user can read it, and named by ``ROF_CONFIG`` while the demo's runs execute.
"""

import contextlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from dagster import AssetKey, DagsterInstance

from rof_pipelines.adapters.quote_stores import open_quote_store
from rof_pipelines.adapters.windows import window_start
from rof_pipelines.core.indicators import IndicatorWindows
from rof_pipelines.core.market import Market
from rof_pipelines.core.quotes import GeneratorConfig, generate_quotes
from rof_pipelines.core.window_frame import warmup_bars
from rof_pipelines.partitions import day_bounds, market_day_key, markets_partitions
from rof_pipelines.settings import CONFIG_PATH_ENV, Settings, load_settings

DEMO_JOB = "all_market_day_assets"
# What runs without a state store: the agent reads its active config there, the optimiser and the
# A/B test record what they did there.
STORE_FREE_ASSETS = ("quote_snapshots", "indicator_frame")


@dataclass(frozen=True)
class DemoMarket:
    """A demo market and the pattern its generated quotes carry (core.quotes.PATTERNS)."""

    key: str
    pattern: str = "none"

    @property
    def market(self) -> Market:
        return Market.parse(self.key)

    @property
    def label(self) -> str:
        return "random walk" if self.pattern == "none" else f"{self.pattern} (planted)"


DEMO_MARKETS = (DemoMarket("binance:SOLUSDT", "momentum"), DemoMarket("binance:BTCUSDT", "none"))

# The demo's changes to config.yaml. One-minute bars and a one-day window leave the A/B test 432
# held-out bars, seven hours: too little to tell an edge from luck after crypto costs. Fifteen-minute
# bars over two weeks, half of it held out, give it 672 bars over a week.
DEMO_BARS = {"bar_interval": "15m", "data_period": "14d"}
DEMO_CHANGES: dict[str, Any] = {
    "ai_config": {"rl": {"allow_short": True}},  # as on a futures venue: down-trends count too
    "ab_tests": {
        "train_fraction": 0.5,
        "experiment": {
            "ga": {  # every genome scored on the whole training part, validated on its second half
                "full_window_from_generation": 0,
                "sample_fraction": 1.0,
                "validation_fraction": 0.5,
            }
        },
    },
}


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
    labels: dict[str, str] = field(default_factory=dict)  # market -> where its quotes came from
    notes: list[str] = field(default_factory=list)  # header lines: demo config, state store

    @property
    def runs(self) -> int:
        return len(self.outcomes)

    @property
    def failed(self) -> list[PartitionOutcome]:
        return [o for o in self.outcomes if not o.success]

    def render(self) -> str:
        lines = [f"quote store: {self.store}", *self.notes]
        for market, rows in self.generated.items():
            lines.append(
                f"generated {rows} snapshots for {market} ({self.labels.get(market, 'random walk')})"
            )
        width = max([len(label) for label in self.labels.values()] + [6])
        header = (
            f"{'market':<18} {'quotes':<{width}} {'date':<10} {'status':<7} {'bars':>5} {'close':>11} "
            f"{'agent':>8} {'b&h':>8}  {'agent config':<14} {'A/B decision':<24} {'Holm p':>7}  checks"
        )
        lines += ["", header, "-" * len(header)]
        for o in self.outcomes:
            close = o.facts.get("last_close")
            p_value = o.facts.get("p_value")
            lines.append(
                f"{o.market:<18} {self.labels.get(o.market, '-'):<{width}} {o.day:<10} "
                f"{'ok' if o.success else 'FAILED':<7} {o.facts.get('bars', '-')!s:>5} "
                f"{(f'{close:.6g}' if isinstance(close, float) else '-'):>11} "
                f"{_percent(o.facts.get('agent_return')):>8} {_percent(o.facts.get('bh_return')):>8}  "
                f"{o.facts.get('agent_config', '-')!s:<14} {o.facts.get('decision', '-')!s:<24} "
                f"{(f'{p_value:.3g}' if isinstance(p_value, float) else '-'):>7}  "
                + (("warn/failed: " + ", ".join(o.failed_checks)) if o.failed_checks else "all passed")
            )
            if o.facts.get("state_store"):
                lines.append(f"{'':<18} {o.facts['state_store']}")
        return "\n".join(lines)


def _percent(value: object) -> str:
    return f"{value:+.2%}" if isinstance(value, float) else "-"


def demo_days(days: int, today: date | None = None) -> list[date]:
    """The last ``days`` complete UTC days."""
    today = today or datetime.now(UTC).date()
    return [today - timedelta(days=offset) for offset in range(days, 0, -1)]


def write_demo_config(settings: Settings, markets: Sequence[DemoMarket], path: Path) -> None:
    """config.yaml (the file ``settings`` came from) with ``DEMO_CHANGES`` and ``DEMO_BARS`` for
    each demo market, written to ``path``, owner-only since it carries the file's passwords. Its
    header lists the changed keys."""
    base: dict[str, Any] = {}
    if settings.source_path is not None:
        base = yaml.safe_load(settings.source_path.read_text()) or {}
    changes = {**DEMO_CHANGES, "storage": {"market_overrides": {m.market.key: DEMO_BARS for m in markets}}}
    source = settings.source_path or "the built-in defaults"
    header = f"# Written by `rof demo`: {source} with these keys changed:\n"
    header += "".join(f"#   {key}: {json.dumps(value)}\n" for key, value in _leaves(changes))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(header + yaml.safe_dump(_merge(base, changes), sort_keys=False))


def demo_changes_text(markets: Sequence[DemoMarket]) -> str:
    """The demo's changes to config.yaml in a sentence."""
    ga = DEMO_CHANGES["ab_tests"]["experiment"]["ga"]
    return (
        f"{', '.join(m.key for m in markets)} on {DEMO_BARS['bar_interval']} bars over a "
        f"{DEMO_BARS['data_period']} window, the last {1 - DEMO_CHANGES['ab_tests']['train_fraction']:.0%} "
        f"held out; short selling allowed; GA genomes validated on the last "
        f"{ga['validation_fraction']:.0%} of the training part"
    )


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _leaves(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


@contextlib.contextmanager
def using_config(path: Path) -> Iterator[None]:
    """Every run in this process reads ``path`` (resources resolve ``ROF_CONFIG`` per run)."""
    before = os.environ.get(CONFIG_PATH_ENV)
    os.environ[CONFIG_PATH_ENV] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CONFIG_PATH_ENV, None)
        else:
            os.environ[CONFIG_PATH_ENV] = before


def generation_range(settings: Settings, market: Market, days: Sequence[date]) -> tuple[datetime, datetime]:
    """Whole UTC days covering the first day's window, its indicator warm-up and one day more, so
    even the first reported day sees warm indicators; up to the end of the last day."""
    profile = settings.market_profile(market)
    first_window = window_start(profile, day_bounds(days[0])[1])
    warm = profile.calendar.start_for_bars(
        first_window, warmup_bars(IndicatorWindows()), profile.bar_interval
    )
    start = datetime.combine(warm.date(), datetime.min.time(), tzinfo=UTC) - timedelta(days=1)
    return start, day_bounds(days[-1])[1]


def state_store_note(config_path: Path) -> str | None:
    """None when the state store answers; else why not, in a sentence for the summary."""
    from rof_pipelines.adapters.resources import PostgresStateStoreResource, RofSettings
    from rof_pipelines.errors import RofError

    try:
        store = PostgresStateStoreResource(settings=RofSettings(config_path=str(config_path))).open()
        try:
            store.ping()
        finally:
            store.dispose()
    except (RofError, OSError) as exc:
        first_line = (str(exc).splitlines() or [""])[0]
        return f"{type(exc).__name__}: {first_line[:200]}"
    return None


def run_demo(
    settings: Settings,
    days: int = 3,
    seed: int = 0,
    instance: DagsterInstance | None = None,
    markets: Sequence[DemoMarket] = DEMO_MARKETS,
) -> DemoSummary:
    """Generate the demo markets' quotes where the store lacks them (with their patterns), then run
    every asset for each market and day with the demo configuration."""
    day_list = demo_days(days)
    demo_dir = settings.storage.resolved_data_dir() / "demo"
    config_path = demo_dir / "config.yaml"
    write_demo_config(settings, markets, config_path)
    demo_settings = load_settings(config_path)
    provenance_path = demo_dir / "quotes.json"
    provenance = json.loads(provenance_path.read_text()) if provenance_path.exists() else {}
    generated: dict[str, int] = {}
    labels: dict[str, str] = {}
    with open_quote_store(demo_settings) as store:
        store.ensure_schema()
        described = store.describe()
        for item in markets:
            market = item.market
            start, end = generation_range(demo_settings, market, day_list)
            held = store.time_range(market)
            if held is None or held[0] > start + timedelta(hours=1) or held[1] < end - timedelta(hours=1):
                quotes = generate_quotes(
                    market, start, end, seed=seed, config=GeneratorConfig(pattern=item.pattern)
                )
                generated[market.key] = store.write(market, quotes)
                provenance[market.key] = {
                    "pattern": item.pattern,
                    "seed": seed,
                    "start": str(start),
                    "end": str(end),
                }
                labels[market.key] = item.label
            else:
                known = provenance.get(market.key)
                made = DemoMarket(market.key, known["pattern"]).label if known else None
                labels[market.key] = made or "stored quotes"
    provenance_path.write_text(json.dumps(provenance, indent=2))

    notes = [f"demo config: {config_path} (config.yaml with {demo_changes_text(markets)})"]
    unavailable = state_store_note(config_path)
    selection = None
    if unavailable is None:
        notes.append(f"state store: {demo_settings.state_storage.describe()}")
    else:
        notes.append(
            f"state store UNAVAILABLE ({unavailable}): only {', '.join(STORE_FREE_ASSETS)} ran; no "
            "agent, optimisation, A/B test or promotion was run or stored. Start it (state_storage.*) "
            "and rerun"
        )
        selection = [AssetKey(name) for name in STORE_FREE_ASSETS]
    with using_config(config_path):
        outcomes = run_market_days(
            [m.market for m in markets],
            day_list,
            instance or DagsterInstance.get(),
            asset_selection=selection,
        )
    if unavailable is not None:
        for outcome in outcomes:
            outcome.facts.setdefault("decision", "not run (no state store)")
    return DemoSummary(described, generated, outcomes, labels, notes)


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
    asset_selection: list[AssetKey] | None = None,
) -> list[PartitionOutcome]:
    """Materialise ``job_name`` (or only ``asset_selection`` of it) for every market and day through
    Dagster, in this process, day by day, recorded in ``instance`` (the UI shows the runs afterwards)."""
    from rof_pipelines.definitions import defs

    register_markets(instance, markets)
    job = defs().resolve_job_def(job_name)
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
                asset_selection=asset_selection,
            )
            outcomes.append(_outcome(market, day, result))
    return outcomes


_P_VALUE = re.compile(r"p = ([0-9.eE+-]+)")
_STORE_DOWN = ("state store unavailable", "state store is unavailable", "not stored", "not attempted")


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
            outcome.facts["agent_config"] = _config_label(str(meta.get("params_source", "")))
        elif name == "ga_population":
            _note_store(outcome, str(meta.get("checkpointing", "")), "GA checkpoints")
        elif name == "ab_report":
            outcome.facts["decision"] = _decision_label(str(meta.get("decision", "-")))
            found = _P_VALUE.search(str(meta.get("reason", "")))
            if found:
                outcome.facts["p_value"] = float(found.group(1).rstrip("."))
            _note_store(outcome, str(meta.get("promotion", "")), "A/B result")
    if result.success and not result.get_asset_materialization_events():
        outcome.facts["decision"] = "skipped: market closed"
    for event in result.all_events:
        if event.is_step_failure:
            failure = event.step_failure_data
            described = failure.user_failure_data.description if failure.user_failure_data else None
            text = " ".join(
                part for part in (failure.error.message if failure.error else "", described) if part
            )
            _note_store(outcome, text, f"step {event.step_key}")
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            outcome.failed_checks.append(evaluation.check_name)
    return outcome


def _config_label(params_source: str) -> str:
    """``active config v3 from ab_test`` -> ``active v3``; the config defaults -> ``defaults``."""
    found = re.match(r"active config (v\d+)", params_source)
    if found:
        return f"active {found.group(1)}"
    if "unavailable" in params_source:
        return "defaults (no store)"
    return "defaults" if params_source else "-"


def _decision_label(decision: str) -> str:
    """``promoted ga_champion as active config v1`` -> ``promoted v1``; keeps are ``keep active``."""
    found = re.match(r"promoted (\S+)(?: as active config (v\d+))?", decision)
    if found:
        return f"promoted {found.group(2) or found.group(1)}"
    if "keep active" in decision:
        return "keep active"
    return decision[:24]


def _note_store(outcome: PartitionOutcome, text: str, what: str) -> None:
    if any(marker in text.lower() for marker in _STORE_DOWN):
        outcome.facts["state_store"] = f"state store unavailable: {what} not stored ({text[:120]})"
