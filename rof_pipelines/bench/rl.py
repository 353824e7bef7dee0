"""RL kernel benchmark: steps per second of :func:`rof_pipelines.core.rl.train` against the C yardstick
``qlearn_ref.c`` (next to this file: the same per-step work as a tight C loop), measured in the same
run and reported as a ratio.

The C source ships with the package. It is compiled with the system C compiler (``cc``, else
``gcc``, from PATH; ``$CC`` wins when set) into a cache directory (``$XDG_CACHE_HOME/rof_pipelines``
or ``~/.cache/rof_pipelines``, else the temp directory), once per source and compiler. Without a
compiler the benchmark stops with an error naming what is missing; it never reports a ratio of null.

    python -m rof_pipelines.bench.rl [BARS] [EPISODES] [--repeats N]   -> one JSON line per repeat
"""

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np

from rof_pipelines.core.rl.agent import RLParams, train
from rof_pipelines.core.rl.env import EnvArrays, FeatureBins, StateSpace
from rof_pipelines.errors import ReferenceUnavailable

REF_SOURCE = Path(__file__).resolve().with_name("qlearn_ref.c")
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


def find_compiler() -> list[str]:
    """The C compiler command: ``$CC`` when set, else ``cc`` or ``gcc`` from PATH."""
    if os.environ.get("CC"):
        command = shlex.split(os.environ["CC"])
        if shutil.which(command[0]):
            return command
        raise ReferenceUnavailable(f"CC={os.environ['CC']!r} is not an executable on PATH")
    for name in ("cc", "gcc"):
        found = shutil.which(name)
        if found:
            return [found]
    raise ReferenceUnavailable(
        "no C compiler: neither `cc` nor `gcc` is on PATH (install one, e.g. `apt-get install gcc`, "
        "or set CC); `rof bench rl` needs it to build its yardstick qlearn_ref.c"
    )


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    for candidate in (Path(base) / "rof_pipelines", Path(tempfile.gettempdir()) / "rof_pipelines"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    raise ReferenceUnavailable(f"no writable cache directory for the compiled yardstick (tried {base})")


def build_ref(source: Path = REF_SOURCE, compiler: list[str] | None = None) -> Path:
    """Compile the C yardstick (cached per source and compiler) and return the executable."""
    if not source.is_file():
        raise ReferenceUnavailable(f"the yardstick's C source is missing: {source}")
    compiler = compiler or find_compiler()
    digest = hashlib.sha256(source.read_bytes() + " ".join(compiler).encode()).hexdigest()[:16]
    binary = cache_dir() / f"qlearn_ref-{digest}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
    errors = []
    # -march=native as the yardstick intends; some compilers or targets refuse it, so try without.
    for flags in (["-O2", "-march=native"], ["-O2"]):
        done = subprocess.run(
            [*compiler, *flags, "-o", str(partial), str(source), "-lm"], capture_output=True, text=True
        )
        if done.returncode == 0:
            partial.replace(binary)
            return binary
        errors.append(f"{' '.join([*compiler, *flags])}: {done.stderr.strip()[-500:]}")
    partial.unlink(missing_ok=True)
    raise ReferenceUnavailable(f"compiling {source.name} failed: {' | '.join(errors)}")


def run_ref(bars: int, episodes: int, path: Path | None = None) -> dict[str, float]:
    """Run the C yardstick (built by :func:`build_ref` unless ``path`` is given)."""
    path = path or build_ref()
    out = subprocess.run([str(path), str(bars), str(episodes)], capture_output=True, text=True)
    if out.returncode != 0:
        raise ReferenceUnavailable(f"{path} exited with {out.returncode}: {out.stderr.strip()[-500:]}")
    fields = dict(re.findall(r"(\w+)=([-\d.eE+]+)", out.stdout))
    if "steps_per_sec" not in fields:
        raise ReferenceUnavailable(f"unexpected output from {path}: {out.stdout!r}")
    return {key: float(value) for key, value in fields.items()}


def bench_rl(bars: int, episodes: int) -> dict[str, Any]:
    """Compile (timed apart), time one training run, then the C yardstick right after."""
    if bars < 3 or episodes < 1:
        raise ValueError("need bars >= 3 and episodes >= 1")
    ref_binary = build_ref()  # first: without a compiler, fail before the long training run
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

    ref = run_ref(bars, episodes, ref_binary)
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
        "ratio": round(ours / ref["steps_per_sec"], 3),
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
