"""`rof bench rl`: the C yardstick ships with the package and is compiled here, or the benchmark
stops with an error naming what is missing (never a ratio of null)."""

import shutil
import tomllib

import pytest

from rof_pipelines.bench import rl
from rof_pipelines.settings import PROJECT_ROOT


def test_the_yardstick_source_is_package_data():
    assert rl.REF_SOURCE.is_file() and rl.REF_SOURCE.parent == PROJECT_ROOT / "rof_pipelines" / "bench"
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert "bench/qlearn_ref.c" in pyproject["tool"]["setuptools"]["package-data"]["rof_pipelines"]


@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler on PATH")
def test_bench_rl_compiles_the_yardstick_and_reports_a_real_ratio(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    result = rl.bench_rl(20_000, 2)
    assert result["ref"]["steps_per_sec"] > 0
    assert isinstance(result["ratio"], float) and result["ratio"] > 0
    assert list((tmp_path / "rof_pipelines").glob("qlearn_ref-*"))  # cached for the next run
    assert rl.build_ref() == rl.build_ref()


def test_without_a_compiler_the_error_names_what_is_missing(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(rl.ReferenceUnavailable, match=r"no C compiler: neither `cc` nor `gcc` is on PATH"):
        rl.bench_rl(1_000, 1)
    monkeypatch.setenv("CC", "no-such-cc")
    with pytest.raises(rl.ReferenceUnavailable, match="CC='no-such-cc' is not an executable"):
        rl.build_ref()
