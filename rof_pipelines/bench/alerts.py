"""Alerting benchmark: ``rof bench alerts``. One JSON line.

What one ``alerts_sensor`` tick spends on the rules, for ``markets`` markets: the ready-made rules
(defaults) plus ``custom`` custom rules of the kinds users write (``each: market`` comparisons, a
``global`` rule over the ``markets`` map), evaluated on a synthetic snapshot with every documented
market figure set, then :func:`~rof_pipelines.core.alerts.engine.transition` against the alert
states the previous evaluation left (a tenth of the markets firing), then the whole evaluation
(:func:`~rof_pipelines.adapters.alerts.outbox.enqueue`: states read, transition, outbox written) on
the in-memory state store. Each figure is the median of ``repeats`` runs; a sensor tick has 60 s.
"""

import random
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rof_pipelines.adapters.alerts.outbox import Outcome, enqueue
from rof_pipelines.adapters.state_store import InMemoryStateStore
from rof_pipelines.core.alerts.engine import evaluate, transition
from rof_pipelines.core.alerts.expressions import compile_rule
from rof_pipelines.core.alerts.figures import FIGURES
from rof_pipelines.core.alerts.model import RuleSpec, Snapshot
from rof_pipelines.settings import Settings

CUSTOM_TEMPLATES = (
    ("ga_best_fitness < {x}", "market"),
    ("data_manager_freshness_seconds > {x} * 60.0 && rl_agent_trades < 5.0", "market"),
    ("rl_agent_state_coverage < {x} / 10.0 || ga_cache_hit_ratio > 0.99", "market"),
    ("markets.exists(m, markets[m].ga_best_fitness < {x})", "global"),
)


def _snapshot(markets: int, now: datetime, rng: random.Random) -> Snapshot:
    entities: dict[str, dict[str, dict[str, Any]]] = {"market": {}, "pool": {}, "job": {}}
    labels: dict[str, dict[str, dict[str, str]]] = {"market": {}, "pool": {}, "job": {}}
    for i in range(markets):
        key = f"bench{i % 7}:PAIR{i:05d}"
        figures: dict[str, Any] = {}
        for name, (cel_type, _doc) in FIGURES["market"].items():
            if cel_type == "double":
                figures[name] = rng.random() * (3.0 if "fitness" in name else 1.0)
            elif cel_type == "string":
                figures[name] = key if name == "market" else key.split(":")[0]
        figures["rl_agent_active_max_drawdown"] = 0.3 if i % 10 == 0 else 0.05  # a tenth fire
        entities["market"][key] = figures
        labels["market"][key] = {"market": key}
        job = f"market_data|{key}"
        entities["job"][job] = {
            "job": "market_data",
            "pool": "task_worker",
            "market": key,
            "last_status": "FAILURE" if i % 10 == 0 else "SUCCESS",
            "last_run_id": f"run-{i}",
            "last_finished_seconds": now.timestamp(),
            "last_error": "",
            "failures_in_a_row": 1 if i % 10 == 0 else 0,
        }
        labels["job"][job] = {"job": "market_data", "pool": "task_worker", "market": key}
    for pool in ("task_worker", "ab_optimizer"):
        entities["pool"][pool] = {"pool": pool, "workerpool_oldest_queued_seconds": 0.0}
        labels["pool"][pool] = {"pool": pool}
    globals_ = {"now": now.timestamp(), "instance_up": 1.0, "state_store_up": 1.0, "config_refused": False}
    globals_ |= {"config_refused_error": "", "markets_known": markets}
    return Snapshot(now, globals_, entities, labels)


def _median_s(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_alerts(markets: int = 1000, custom: int = 8, repeats: int = 5) -> dict[str, Any]:
    rng = random.Random(7)
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    specs = Settings().alerting.rule_specs()
    for i in range(custom):
        expr, each = CUSTOM_TEMPLATES[i % len(CUSTOM_TEMPLATES)]
        specs.append(RuleSpec(name=f"custom_{i}", expr=expr.format(x=f"{0.1 + i / 100:.2f}"), each=each))
    rules = [compile_rule(spec) for spec in specs]
    by_name = {rule.spec.name: rule.spec for rule in rules}
    snapshot = _snapshot(markets, now, rng)

    evaluation = evaluate(rules, snapshot)
    first = transition({}, evaluation, by_name, now)
    states = {state.fingerprint: replace(state, version=1) for state in first.changed}  # as stored
    later = now + timedelta(seconds=30)

    evaluate_s = _median_s(lambda: evaluate(rules, snapshot), repeats)
    transition_s = _median_s(lambda: transition(states, evaluation, by_name, later), repeats)

    store = InMemoryStateStore()
    enqueue(store, rules, snapshot, [], ["log"], Outcome(), now)  # the first tick fires
    tick_s = _median_s(lambda: enqueue(store, rules, snapshot, [], ["log"], Outcome(), later), repeats)
    return {
        "benchmark": "alerts",
        "markets": markets,
        "rules": len(rules),
        "observations": len(evaluation.observations),
        "firing": sum(1 for s in first.changed if s.status == "firing"),
        "evaluate_s": round(evaluate_s, 4),
        "transition_s": round(transition_s, 4),
        "tick_in_memory_s": round(tick_s, 4),
        "observations_per_s": round(len(evaluation.observations) / evaluate_s),
        "tick_budget_s": 60,
    }
