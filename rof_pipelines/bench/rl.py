"""RL kernel benchmark: steps per second of :func:`rof_pipelines.core.rl.train` against the C yardstick
``shared/bench/ref-rl`` (same per-step work), measured in the same run and reported as a ratio.

    python -m rof_pipelines.bench.rl [BARS] [EPISODES] [--repeats N]   -> one JSON line per repeat
"""

import argparse
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np

from rof_pipelines.core.rl.agent import RLParams, train
from rof_pipelines.core.rl.env import EnvArrays, FeatureBins, StateSpace

REF_RL = Path(__file__).resolve().parents[2].parent / "shared/bench/ref-rl"
N_MARKET_STATES = 256  # as in qlearn_ref.c


def synthetic_env(bars: int, seed: int = 7) -> EnvArrays:
    """Like the C program: uniform returns in +-0.1 % and uniformly random market states."""
    rng = np.random.default_rng(seed)
    space = StateSpace((FeatureBins("rsi", tuple(float(e) for e in range(1, N_MARKET_STATES))),))
    mstate = rng.integers(0, N_MARKET_STATES, bars).astype(np.int32)
    step_ret = (rng.random(bars - 1) - 0.5) * 0.002
    return EnvArrays.from_arrays(mstate, step_ret, space)


def ref_params(episodes: int) -> RLParams:
    # The C program's constants: alpha 0.2, gamma 0.85, epsilon 0.3 * 0.95 per episode, fee 0.1 %.
    return RLParams(
        alpha=0.2,
        gamma=0.85,
        epsilon=0.3,
        epsilon_decay=0.95,
        epsilon_min=0.0,
        alpha_decay=0.001,
        episodes=episodes,
        fee=0.001,
        slippage=0.0,
        seed=88172645463325252,
    )


def run_ref(bars: int, episodes: int, path: Path = REF_RL) -> dict[str, float] | None:
    """Run the C yardstick; None when it is not there."""
    if not path.exists():
        return None
    out = subprocess.run([str(path), str(bars), str(episodes)], capture_output=True, text=True, check=True)
    fields = dict(re.findall(r"(\w+)=([-\d.eE+]+)", out.stdout))
    if "steps_per_sec" not in fields:
        raise RuntimeError(f"unexpected output from {path}: {out.stdout!r}")
    return {key: float(value) for key, value in fields.items()}


def bench_rl(bars: int, episodes: int) -> dict[str, Any]:
    """Compile (timed apart), time one training run, then the C yardstick right after."""
    if bars < 3 or episodes < 1:
        raise ValueError("need bars >= 3 and episodes >= 1")
    started = time.perf_counter()
    train(synthetic_env(16), ref_params(1))
    compile_seconds = time.perf_counter() - started

    env = synthetic_env(bars)
    params = ref_params(episodes)
    started = time.perf_counter()
    agent = train(env, params)
    seconds = time.perf_counter() - started
    steps = episodes * (bars - 1)
    ours = steps / seconds

    ref = run_ref(bars, episodes)
    return {
        "bench": "rl",
        "bars": bars,
        "episodes": episodes,
        "steps": steps,
        "compile_seconds": round(compile_seconds, 4),
        "train_seconds": round(seconds, 4),
        "steps_per_sec": round(ours),
        "checksum": float(agent.episode_equity.sum()),
        "state_coverage": agent.state_coverage,
        "ref": ref,
        "ratio": round(ours / ref["steps_per_sec"], 3) if ref else None,
        "numba": numba.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bars", type=int, nargs="?", default=1_000_000)
    parser.add_argument("episodes", type=int, nargs="?", default=20)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    for _ in range(args.repeats):
        print(json.dumps(bench_rl(args.bars, args.episodes)), flush=True)


if __name__ == "__main__":
    main()
