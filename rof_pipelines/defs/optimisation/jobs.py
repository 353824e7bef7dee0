"""The optimisation domain's job: the nightly optimisation of one market and day.

Built from the settings read when the code location loads (its worker pool's run tags); its
partitions (date x market) come from the assets it selects, ``market_day_partitions``.
"""

from dagster import AssetSelection, define_asset_job

from rof_pipelines.defs.load_time import pool_tags
from rof_pipelines.settings import Settings


def build_nightly_optimisation_job(at_load: Settings):  # an asset job, whose class Dagster does not export
    return define_asset_job(
        "nightly_optimisation",
        selection=AssetSelection.all(),
        description="Everything for one market and day: quotes, indicators, agent, optimisation, A/B test. "
        "Run nightly for yesterday and on `tasks` messages.",
        tags=pool_tags(at_load, "ab_optimizer"),
    )
