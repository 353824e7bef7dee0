"""The asset jobs take their partitions from the assets they select (``define_asset_job``'s
``partitions_def`` is deprecated), and still launch partitioned runs: date x market."""

import subprocess
import sys

import pytest

from rof_pipelines.definitions import defs as load_definitions
from rof_pipelines.partitions import market_day_partitions
from rof_pipelines.settings import PROJECT_ROOT

JOBS = ["market_data", "all_market_day_assets", "nightly_optimisation"]
# "Parameter `partitions_def` of function `define_asset_job` is deprecated ..." as an error
DEPRECATED_PARTITIONS_DEF = "error:Parameter `partitions_def`:DeprecationWarning"
defs = load_definitions()
# The jobs are built when the code location loads the definitions, not when a module is imported.
BUILD_THE_JOBS = "from rof_pipelines.definitions import defs; defs()"


@pytest.mark.parametrize("name", JOBS)
def test_each_asset_job_resolves_to_the_market_day_partitions(name):
    job = defs.resolve_job_def(name)
    assert job.partitions_def == market_day_partitions
    assert job.tags["rof/pool"] in ("task_worker", "ab_optimizer")


def test_defining_the_jobs_raises_no_deprecation_warning():
    done = subprocess.run(
        [sys.executable, "-W", DEPRECATED_PARTITIONS_DEF, "-c", BUILD_THE_JOBS],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
