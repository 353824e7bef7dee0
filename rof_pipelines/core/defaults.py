"""The defaults and limits of every knob that both config.yaml and the core's plain dataclasses have.

The core's dataclasses (``GASettings``, ``RLParams``, ``KellyParams``, ``DecisionRule``)
take their field defaults from here, and ``rof_pipelines.settings`` takes each pydantic ``Field``'s
default and bounds from here, so changing a default or a limit is one edit in this file. Plain Python
(no numpy, no pydantic): loading the config imports it and must stay cheap.

A :class:`Knob`'s bounds are the ones config.yaml is held to. The core's dataclasses check the GA's
knobs with the same bounds; the agent's and the sizing's dataclasses keep their own, wider checks
(tests and the optimiser build them outside config.yaml's ranges).
"""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Knob:
    """A default and its bounds, spelt as pydantic's ``Field`` keywords (None: unbounded)."""

    default: Any
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    @property
    def bounds(self) -> dict[str, float]:
        """The set bounds, ready for ``Field(**knob.bounds)``."""
        pairs = (("ge", self.ge), ("gt", self.gt), ("le", self.le), ("lt", self.lt))
        return {name: bound for name, bound in pairs if bound is not None}

    def problem(self, name: str, value: Any) -> str | None:
        """Why ``value`` is out of bounds (None: it is within them)."""
        checks = (
            (self.ge, ">=", lambda bound: value >= bound),
            (self.gt, ">", lambda bound: value > bound),
            (self.le, "<=", lambda bound: value <= bound),
            (self.lt, "<", lambda bound: value < bound),
        )
        for bound, sign, ok in checks:
            if bound is not None and not ok(bound):
                return f"{name} must be {sign} {bound:g}, got {value}"
        return None


# --- the genetic optimiser: ab_tests.experiment.ga (+ ab_tests.state_management.checkpoint_interval) --

GA: dict[str, Knob] = {
    "generations": Knob(20, ge=1),
    "population_size": Knob(50, ge=4),
    "mutation_rate": Knob(0.15, ge=0, le=1),
    "mutation_rate_min": Knob(0.02, ge=0, le=1),
    "mutation_rate_max": Knob(0.5, ge=0, le=1),
    "min_population": Knob(20, ge=4),
    "max_population": Knob(100, ge=4),
    "elitism": Knob(2, ge=0),
    "diversity_low": Knob(0.1, ge=0, le=1),
    "diversity_high": Knob(0.3, ge=0, le=1),
    "resize_step": Knob(5, ge=1),
    "patience": Knob(5, ge=1),
    "min_delta": Knob(1e-4, ge=0),
    "sample_fraction": Knob(0.5, gt=0, le=1),
    "full_window_from_generation": Knob(5, ge=0),
    "validation_fraction": Knob(0.3, gt=0, lt=1),
    "seed": Knob(0, ge=0),
    "checkpoint_interval": Knob(5, ge=1),
    # The island model (core/ga/islands.py): 1 island is the single population of old.
    "islands": Knob(1, ge=1, le=64),
    "migration_interval": Knob(5, ge=1),  # generations between migrations
    "migrants": Knob(2, ge=0),  # best genomes each island sends to the next one per migration
    "island_workers": Knob(1, ge=1),  # evaluation processes inside one island step
}
ISLAND_KNOBS = ("islands", "migration_interval", "migrants", "island_workers")


def island_sizes(population_size: int, islands: int) -> list[int]:
    """How the population splits over the islands: round robin, sizes differ by at most one."""
    return [len(range(i, population_size, islands)) for i in range(islands)]


def island_min_population(ga: Any) -> int:
    """The fewest genomes an island may shrink to: its share of ``min_population``, at least what
    elitism and the NSGA-II operators need, at most the smallest island's starting size."""
    share = -(-ga.min_population // ga.islands)
    return min(min(island_sizes(ga.population_size, ga.islands)), max(share, ga.elitism + 2, 4))


def _islands_problem(ga: Any) -> str | None:
    if getattr(ga, "islands", 1) <= 1:
        return None
    smallest = min(island_sizes(ga.population_size, ga.islands))
    needed = max(4, ga.elitism + 2)
    if smallest < needed:
        return (
            f"islands ({ga.islands}) split population_size ({ga.population_size}) into islands of "
            f"{smallest} genomes; each island needs at least {needed} (4, and elitism + 2)"
        )
    floor = island_min_population(ga)
    if ga.migrants >= floor:
        return (
            f"migrants ({ga.migrants}) must be below the smallest island population ({floor}: "
            f"population_size {ga.population_size} / islands {ga.islands}, min_population "
            f"{ga.min_population} / islands)"
        )
    return None


def ga_problem(ga: Any) -> str | None:
    """The first rule across the GA's knobs that ``ga`` (any object with their names) breaks."""
    for name, knob in GA.items():
        problem = knob.problem(name, getattr(ga, name)) if hasattr(ga, name) else None
        if problem:
            return problem
    if not ga.min_population <= ga.population_size <= ga.max_population:
        return (
            f"need min_population ({ga.min_population}) <= population_size ({ga.population_size}) "
            f"<= max_population ({ga.max_population})"
        )
    if not ga.mutation_rate_min <= ga.mutation_rate <= ga.mutation_rate_max:
        return (
            f"need mutation_rate_min ({ga.mutation_rate_min}) <= mutation_rate ({ga.mutation_rate}) "
            f"<= mutation_rate_max ({ga.mutation_rate_max})"
        )
    if not ga.diversity_low < ga.diversity_high:
        return "diversity_low must be below diversity_high"
    if ga.elitism > ga.min_population - 2:
        return f"elitism ({ga.elitism}) must leave two offspring in min_population"
    return _islands_problem(ga)


# --- the Q-learning agent: ai_config.rl ------------------------------------------------------------

RL: dict[str, Knob] = {
    "alpha": Knob(0.2, gt=0, le=1),
    "gamma": Knob(0.85, ge=0, lt=1),
    "epsilon": Knob(0.3, ge=0, le=1),
    "epsilon_decay": Knob(0.95, gt=0, le=1),
    "epsilon_min": Knob(0.01, ge=0, le=1),
    "alpha_decay": Knob(0.001, ge=0),
    "episodes": Knob(20, ge=1, le=100_000),
    "fee": Knob(0.001, ge=0, lt=0.5),
    "slippage": Knob(0.0005, ge=0, lt=0.5),
    "allow_short": Knob(False),
    "risk_aversion": Knob(0.0, ge=0),
    "seed": Knob(0, ge=0),
}

# --- Kelly sizing: ai_config.kelly ------------------------------------------------------------------

KELLY: dict[str, Knob] = {
    "use_kelly": Knob(True),
    "window_trades": Knob(200, ge=1),  # config.yaml spells it window_size: "200"
    "max_fraction": Knob(0.25, gt=0, le=1),
    "min_trades": Knob(20, ge=1),
    "warmup_fraction": Knob(0.05, ge=0, le=1),
}

# --- the A/B decision rule: ab_tests ----------------------------------------------------------------

DECISION: dict[str, Knob] = {
    "alpha": Knob(0.05, gt=0, lt=1),
    "min_effect": Knob(0.5, ge=0),
    "min_periods": Knob(30, ge=3),
    "tests": Knob(("welch", "bootstrap")),
    "use_dsr": Knob(True),
    "n_boot": Knob(2000, ge=100, le=100_000),
}
