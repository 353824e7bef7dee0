"""Per-run profiling: the run tag ``rof/profile`` makes every market-day step write a profile and put
its top functions (cpu) or allocation sites (memory) into the materialisation's metadata; without the
tag the steps are unchanged (test_wiring_in_memory.py and test_q_table.py run them untagged).

The CPU case is the issue's acceptance: a GA step's profile (workers=1, so the fitness work is in the
step's process) shows the RL kernel among its top frames."""

import inspect
import tracemalloc
from datetime import date
from pathlib import Path

import pytest
import yaml
from dagster import instance_for_test, materialize

from rof_pipelines.core.market import Market
from rof_pipelines.defs.indicators.assets import indicator_frame
from rof_pipelines.defs.optimisation.assets import ga_population
from rof_pipelines.defs.profiling import PROFILE_TAG, profiled_step
from rof_pipelines.defs.quotes.assets import quote_snapshots
from rof_pipelines.partitions import market_day_key, markets_partitions
from rof_pipelines_tests.defs.support import asset_metadata, fill_quotes, resources_for
from rof_pipelines_tests.defs.test_ga_population import NO_SERVER, write_config

TON = Market.parse("binance:TONUSDT")
DAY = date(2026, 11, 20)
SMALL_GA = {"ops": {"ga_population": {"config": {"generations": 4, "population_size": 12, "workers": 1}}}}
RL_KERNEL = {"train", "train_kernel", "evaluate", "evaluate_kernel", "TrainedAgent.evaluate"}


def run_tagged(tmp_path: Path, state_store, tags: dict[str, str], assets=None):
    config_path = write_config(tmp_path, NO_SERVER)
    config = yaml.safe_load(config_path.read_text())
    config["ai_config"]["rl"]["episodes"] = 60  # enough training for the kernel to show beside the plots
    config_path.write_text(yaml.safe_dump(config))
    fill_quotes(config_path, TON, DAY)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(markets_partitions.name, [TON.key])
        assets = assets or [quote_snapshots, indicator_frame, ga_population]
        result = materialize(
            assets,
            partition_key=market_day_key(TON, DAY),
            instance=instance,
            run_config=SMALL_GA if ga_population in assets else None,
            resources=resources_for(config_path, state_store),
            tags=tags,
        )
        assert result.success
        logs = " ".join(str(record.user_message) for record in instance.all_logs(result.run_id))
        return result, tmp_path / "data" / "profiles" / result.run_id, logs


def test_a_cpu_profile_of_a_ga_step_shows_the_rl_kernel(tmp_path, memory_state_store):
    result, profiles, logs = run_tagged(tmp_path, memory_state_store, {PROFILE_TAG: "cpu"})
    meta = asset_metadata(result, "ga_population")
    assert meta["profile/mode"] == "cpu" and meta["profile/wall_seconds"] > 0
    top = meta["profile/top_functions"]
    assert len(top) == 10
    kernel = [row for row in top if row["function"] in RL_KERNEL and "core/rl/" in row["location"]]
    assert kernel, f"no RL kernel frame among the top 10: {[(r['function'], r['location']) for r in top]}"
    assert kernel[0]["function"] in meta["profile/top"]  # the markdown table names it too
    assert len(meta["profile/top_frames"]) == 10  # and the raw self-time view beside it
    path = Path(meta["profile/path"])
    assert path == profiles / "ga_population.html" and path.stat().st_size > 10_000
    assert f"ga_population: cpu profile of {meta['profile/wall_seconds']:.2f} s written to {path}" in logs
    # Every market-day step of the run was profiled, each next to the others.
    assert {p.name for p in profiles.iterdir()} == {
        "quote_snapshots.html",
        "indicator_frame.html",
        "ga_population.html",
    }
    assert asset_metadata(result, "quote_snapshots")["profile/path"].endswith("quote_snapshots.html")
    # The profile did not change what the step computed and reported.
    assert meta["generations_run"] == 4 and meta["workers"] == 1


def test_a_memory_profile_lists_allocation_sites(tmp_path, memory_state_store):
    result, profiles, logs = run_tagged(
        tmp_path, memory_state_store, {PROFILE_TAG: "memory"}, [quote_snapshots, indicator_frame]
    )
    meta = asset_metadata(result, "indicator_frame")
    assert meta["profile/mode"] == "memory"
    rows = meta["profile/top_functions"]
    assert rows and all(row["size_diff_kib"] > 0 and ":" in row["location"] for row in rows)
    assert "peak traced memory" in meta["profile/top"]
    text = (profiles / "indicator_frame.txt").read_text()
    assert f"memory profile of {meta['profile/wall_seconds']:.2f} s written to" in logs
    assert rows[0]["location"] in text
    assert not tracemalloc.is_tracing()  # started for the step and stopped after


def test_without_the_tag_nothing_is_profiled(tmp_path, memory_state_store):
    result, profiles, logs = run_tagged(tmp_path, memory_state_store, {}, [quote_snapshots])
    assert not any(key.startswith("profile/") for key in asset_metadata(result, "quote_snapshots"))
    assert not profiles.exists() and "profile of" not in logs


def test_an_unknown_mode_is_ignored_with_a_warning(tmp_path, memory_state_store):
    result, profiles, logs = run_tagged(tmp_path, memory_state_store, {PROFILE_TAG: "gpu"}, [quote_snapshots])
    assert not any(key.startswith("profile/") for key in asset_metadata(result, "quote_snapshots"))
    assert "rof/profile='gpu' ignored" in logs
    assert not profiles.exists()


def test_the_wrapper_keeps_what_dagster_inspects():
    def body(context, config: int, settings: str):
        """doc"""
        yield 1

    wrapped = profiled_step(body)
    assert inspect.signature(wrapped) == inspect.signature(body)
    assert inspect.isgeneratorfunction(wrapped) and wrapped.__name__ == "body" and wrapped.__doc__ == "doc"
    # Dagster sees the asset's own parameters: context, config and the three resources.
    assert set(ga_population.required_resource_keys) >= {"settings", "quote_store", "state_store"}
    assert ga_population.op.config_schema is not None

    def plain(context):
        return 7

    assert not inspect.isgeneratorfunction(profiled_step(plain)) and profiled_step(plain)(None) == 7


class StepContext:
    """What the wrapper reads of a step's context: the run's tags and id, the log, the instance."""

    def __init__(self, tags: dict[str, str], storage: Path) -> None:
        self.run = type("Run", (), {"tags": tags, "run_id": "r1"})()
        self.instance = type("Instance", (), {"storage_directory": lambda _self: str(storage)})()
        self.retry_number = 0
        self.messages: list[str] = []
        self.log = type("Log", (), {"info": self.messages.append, "warning": self.messages.append})()


def test_a_failing_body_keeps_its_error_and_still_leaves_its_profile(tmp_path):
    def failing(context):
        yield from ()
        sum(i * i for i in range(200_000))
        raise ValueError("the body's own error")

    context = StepContext({PROFILE_TAG: "memory"}, tmp_path)
    with pytest.raises(ValueError, match="the body's own error"):
        list(profiled_step(failing)(context))
    assert (tmp_path / "profiles" / "r1" / "failing.txt").exists()
    assert not tracemalloc.is_tracing()

    context = StepContext({PROFILE_TAG: "cpu"}, tmp_path)
    context.retry_number = 1
    with pytest.raises(ValueError, match="the body's own error"):
        list(profiled_step(failing)(context))
    assert (tmp_path / "profiles" / "r1" / "failing.retry1.html").exists()
    assert any("cpu profile of" in message for message in context.messages)


def test_a_plain_function_body_gets_its_output_metadata(tmp_path):
    def plain(context):
        return 41 + 1

    output = profiled_step(plain)(StepContext({PROFILE_TAG: "cpu"}, tmp_path))
    assert output.value == 42 and output.metadata["profile/mode"].value == "cpu"
