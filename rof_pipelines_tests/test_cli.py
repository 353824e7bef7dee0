"""The `rof` command's read-only views against a real state store: experiments listed by partition
date, and an experiment's lineage (decision, promotion, GA task, input partitions, Dagster run)
shown from its id or from the active config it promoted."""

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from typer.testing import CliRunner

from rof_pipelines.adapters.experiments import finish_experiment
from rof_pipelines.adapters.state_store import ArmRecord, ExperimentRecord, StateStore
from rof_pipelines.cli import app
from rof_pipelines.core.abtest import DecisionRule, decide

MARKET = "binance:TONUSDT"
DAY_END = datetime(2026, 11, 20, tzinfo=UTC)  # the 2026-11-19 partition's window ends at the next midnight
RUN_ID = "1a2b3c4d-0000-4000-8000-00000000abcd"
TASK_ID = "ga:binance:TONUSDT:nightly:2026-11-13T00:00:00+00:00/2026-11-20T00:00:00+00:00:abc:def"
TEST_ID = f"nightly:{MARKET}:2026-11-19:{RUN_ID[:8]}"


@pytest.fixture
def cli_env(pg_database) -> dict[str, str]:
    """Environment that points the CLI's state store at the test database."""
    return {
        "STATE_STORAGE_DB_HOST": pg_database["db_host"],
        "STATE_STORAGE_DB_USER": pg_database["db_user"],
        "STATE_STORAGE_DB_NAME": pg_database["db_name"],
        "STATE_STORAGE_DB_PASSWORD": "",
        "STATE_STORAGE_SCHEMA": "rof_state",
    }


@pytest.fixture
def store(make_settings, pg_database):
    settings = make_settings(
        {
            "state_storage": {
                "db_host": pg_database["db_host"],
                "db_user": pg_database["db_user"],
                "db_name": pg_database["db_name"],
                "db_password": "",
                "schema": "rof_state",
            }
        }
    )
    with StateStore(settings.state_storage) as s:
        s.upgrade("head")
        yield s


def _invoke(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result


def _experiment(
    experiment_id: str, active_version: int | None, details: dict, winner: str = "ga_champion"
) -> ExperimentRecord:
    """A decided experiment as the A/B asset records it: the rule's decision on held-out returns in
    which ``winner`` clearly beats the active config, one row per arm with its p-values."""
    rng = np.random.default_rng(5)
    active = rng.normal(0, 0.01, 400)
    edge, noise = active * 0.5 + rng.normal(0.002, 0.005, 400), rng.normal(0, 0.01, 400)
    loser = "buy_and_hold" if winner == "ga_champion" else "ga_champion"
    arms = {winner: edge, loser: noise}
    decision = decide(
        active, arms, DecisionRule(n_boot=300), bars_per_year=8766, n_trials={"ga_champion": 40}
    )
    assert decision.winner == winner
    rows = [ArmRecord("active", "active", {"rl": {"alpha": 0.2}}, {"sharpe": decision.active_sharpe}, {})]
    for name, report in decision.arms.items():
        p_values = {
            "welch": report.p_welch,
            "mann_whitney": report.p_mann_whitney,
            "bootstrap": report.p_bootstrap,
            "dsr": report.dsr,
            "p_value": report.p_value,
            "p_adjusted": report.p_adjusted,
        }
        role = "baseline" if name == "buy_and_hold" else "challenger"
        rows.append(ArmRecord(name, role, {"rl": {"alpha": 0.3}}, {"sharpe": report.sharpe}, p_values))
    return ExperimentRecord(
        experiment_id=experiment_id,
        market=MARKET,
        label="nightly",
        window_start=DAY_END - timedelta(days=7),
        window_end=DAY_END,
        decision=decision.to_dict(),
        winner=decision.winner,
        promoted=False,
        active_version=active_version,
        promoted_version=None,
        conflict=None,
        details=details,
        arms=tuple(rows),
    )


def _record_ga_task(store: StateStore) -> None:
    """The GA task's last progress report and its two newest checkpoints, as the optimiser writes them."""
    window = {"window_start": DAY_END - timedelta(days=7), "window_end": DAY_END}
    store.progress.record(
        TASK_ID,
        MARKET,
        12,
        12,
        1.4,
        0.0,
        "completed",
        {"evaluations": 480},
        experiment_id="nightly",
        **window,
    )
    key = {"task_id": TASK_ID, "market": MARKET, "experiment_id": "nightly", **window}
    key |= {"data_fingerprint": "abc", "config_fingerprint": "def"}
    for generation in (10, 11, 12):
        store.checkpoints.save(key, generation, b"{}", final=generation == 12)


def test_experiments_list_on_an_empty_and_a_migrated_store(cli_env, store):
    head = store.head_revision()
    upgraded = _invoke(cli_env, "db", "upgrade")
    assert f"schema=rof_state: at {head}" in upgraded.output
    assert "no experiments recorded yet" in _invoke(cli_env, "experiments", "list").output


def test_experiments_list_shows_the_partition_date_and_a_buy_and_hold_win_as_a_warning(cli_env, store):
    promoted = _experiment(TEST_ID, None, {"ga_task_id": TASK_ID})
    finish_experiment(store, promoted, {"rl": {"alpha": 0.3}})
    yardstick = _experiment("nightly:binance:TONUSDT:2026-11-18:99999999", 1, {}, winner="buy_and_hold")
    yardstick = ExperimentRecord(**{**vars(yardstick), "window_end": DAY_END - timedelta(days=1)})
    finish_experiment(store, yardstick, None)  # buy-and-hold has no params to promote

    lines = _invoke(cli_env, "experiments", "list").output.splitlines()
    by_day = {line.split()[3]: line for line in lines}
    assert set(by_day) == {"2026-11-19", "2026-11-18"}  # the partitions, not the days after
    assert "promoted ga_champion as active config v1" in by_day["2026-11-19"]
    assert (
        "buy-and-hold beat every config: keep active (a yardstick is never promoted)" in by_day["2026-11-18"]
    )
    assert "not promoted" not in by_day["2026-11-18"] and "promote buy_and_hold" not in by_day["2026-11-18"]
    rows = [
        json.loads(line) for line in _invoke(cli_env, "experiments", "list", "--json").output.splitlines()
    ]
    assert {row["partition_date"] for row in rows} == {"2026-11-19", "2026-11-18"}
    assert {row["window_end"][:10] for row in rows} == {"2026-11-20", "2026-11-19"}


def test_experiments_show_prints_the_lineage_of_a_promotion(cli_env, store):
    store.configs.set_active(MARKET, {"rl": {"alpha": 0.2}}, "default")
    _record_ga_task(store)
    details = {
        "ga_task_id": TASK_ID,
        "run_id": RUN_ID,
        "partition_key": f"2026-11-19|{MARKET}",
        "partition_date": "2026-11-19",
        "upstream_runs": {"quote_snapshots": "run-q", "indicator_frame": "run-i", "ga_population": RUN_ID},
        "ga_generations": {"first": 0, "last": 12, "total": 12, "resumed_from": None},
    }
    record = _experiment(TEST_ID, 1, details)
    final, promotion = finish_experiment(store, record, {"rl": {"alpha": 0.3}})
    assert promotion.promoted and promotion.version == 2

    out = _invoke(cli_env, "experiments", "show", TEST_ID).output
    champion = {arm.arm: arm for arm in final.arms}["ga_champion"].p_values
    expected = [
        f"experiment   {TEST_ID} (nightly",
        f"market       {MARKET}",
        f"partition    2026-11-19 (key 2026-11-19|{MARKET})",
        "window       2026-11-13 00:00 .. 2026-11-20 00:00 UTC (400 held-out periods)",
        "decision     promoted ga_champion as active config v2",
        "reason       promote ga_champion: better: Holm-adjusted p",
        "rule         promote only if welch, bootstrap and the deflated Sharpe ratio",
        f"p {champion['welch']:.4g} {champion['mann_whitney']:.4g} {champion['bootstrap']:.4g} "
        f"{1 - champion['dsr']:.4g} -> {champion['p_adjusted']:.4g}",
        "promotion    read active config v1, wrote v2: still in force",
        f"GA task      {TASK_ID}",
        "completed, generations 0..12 of 12; checkpoints kept: 11, 12 (final)",
        f"inputs       quote_snapshots and indicator_frame of {MARKET}: 7 day partition(s) "
        "2026-11-13 .. 2026-11-19, 7 open",
        "quote_snapshots: run run-q",
        f"dagster run  {RUN_ID}",
    ]
    for piece in expected:
        assert piece in out, f"{piece!r} missing from:\n{out}"
    assert "active             active" in out and "the config in force" in out
    assert "not recorded" not in out

    # The way back: from the market's active config to the experiment that promoted it.
    back = _invoke(cli_env, "experiments", "show", "--active", MARKET).output
    assert back == out
    lineage = json.loads(_invoke(cli_env, "experiments", "show", TEST_ID, "--json").output)
    assert lineage["partition_date"] == "2026-11-19" and lineage["dagster_run_id"] == RUN_ID
    assert lineage["promotion"]["in_force"] and lineage["ga"]["generations"]["last"] == 12

    # A manual replacement: the experiment's promotion is no longer in force, and the active config
    # was not set by an experiment.
    store.configs.set_active(MARKET, {"rl": {"alpha": 0.25}}, "manual", expected_version=2)
    later = _invoke(cli_env, "experiments", "show", TEST_ID).output
    assert "wrote v2: since replaced: now v3 (manual, experiment -)" in later
    manual = _invoke(cli_env, "experiments", "show", "--active", MARKET).output
    assert "active config v3 was set by source 'manual'" in manual and "not by an experiment" in manual


def test_experiments_show_names_the_lineage_a_record_lacks(cli_env, store):
    _invoke(cli_env, "db", "upgrade")
    older = _experiment(TEST_ID, None, {})  # an older record: no lineage details
    finish_experiment(store, older, {"rl": {"alpha": 0.3}}, auto_promote=False)
    out = _invoke(cli_env, "experiments", "show", TEST_ID).output
    assert "partition    2026-11-19" in out  # from the window's end, the day before it
    assert "GA task      not recorded" in out
    assert (
        f"dagster run  not recorded (the experiment id ends with the run id's first 8 characters: {RUN_ID[:8]})"
        in out
    )
    assert (
        "not recorded details.run_id, details.partition_key, details.partition_date, details.upstream_runs, "
        "details.ga_task_id, details.ga_generations"
    ) in out
    assert "ga_champion won, not promoted: winner found, auto-promotion is off" in out


def test_experiments_show_refuses_unclear_or_unknown_requests(cli_env, store):
    runner = CliRunner()
    for args in (["experiments", "show"], ["experiments", "show", TEST_ID, "--active", MARKET]):
        refused = runner.invoke(app, args, env=cli_env)
        assert refused.exit_code == 2 and "one of them" in refused.output
    unknown = runner.invoke(app, ["experiments", "show", "nope"], env=cli_env)
    assert unknown.exit_code == 2 and "no experiment 'nope' recorded" in unknown.output
    no_config = runner.invoke(app, ["experiments", "show", "--active", MARKET], env=cli_env)
    assert no_config.exit_code == 2 and "no active config recorded" in no_config.output
