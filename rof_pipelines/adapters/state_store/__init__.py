"""The state store: what the system learns, kept in PostgreSQL (config ``state_storage``).

One engine, one circuit breaker, and a small repository per concern, each an attribute of the store:

==========================  ===========================================================  ==============
``store.progress``          ``record``, ``get``, ``find`` - worker progress                 progress.py
``store.configs``           ``get_active``, ``set_active``, ``list_active``                 configs.py
``store.checkpoints``       ``save``, ``latest``, ``generations``, ``prune`` - GA resumes   checkpoints.py
``store.experiments``       ``record``, ``get``, ``recent``, ``promoting`` - A/B tests      experiments.py
``store.trials``            ``record``, ``stats`` - configurations scored per A/B task      trials.py
``store.knowledge``         ``add``, ``tasks``, ``prune`` - meta/transfer learning          knowledge.py
``store.alerts``            ``states``, ``apply``, ``claim_due``, ``mark_*`` - outbox       alerts.py
``store.islands``           ``save``, ``get``, ``epoch``, ``prune`` - island GA epochs      islands.py
``store.quote_gaps``        ``record``, ``find`` - ranges an exchange had no candles for    quote_gaps.py
==========================  ===========================================================  ==============

SQLAlchemy Core, no ORM; tables in :mod:`.tables` mirror the Alembic migrations at head. Driver
errors surface as :class:`StoreUnavailableError` (connection lost, timeout: retry later) or
:class:`PermanentError` (bad statement, constraint violated), through :data:`SQLALCHEMY_ERRORS`.
Rows written concurrently carry ``version`` (:mod:`.versioned`): a stale ``expected_version`` raises
:class:`ConflictError`. :class:`InMemoryStateStore` offers the same repositories without a database.
"""

from rof_pipelines.adapters.state_store.memory import InMemoryStateStore
from rof_pipelines.adapters.state_store.records import (
    ActiveConfig,
    ArmRecord,
    ExperimentRecord,
    GACheckpoint,
    IslandEpochRecord,
    QuoteGapRecord,
    WorkerProgress,
)
from rof_pipelines.adapters.state_store.store import (
    DEFAULT_CONNECT_TIMEOUT_S,
    SQLALCHEMY_ERRORS,
    StateStore,
    ensure_migrated,
)
from rof_pipelines.adapters.state_store.tables import (
    ARM_ROLES,
    CONFIG_SOURCES,
    PROGRESS_STATUSES,
    build_metadata,
    migration_schema,
)
from rof_pipelines.adapters.state_store.values import DEFAULT_UPDATED_BY, SERVICE, json_safe

# What assets and adapters take: either store offers the same repositories (method for method, held
# to it by test_state_store_contract.py).
StateRepositories = StateStore | InMemoryStateStore

__all__ = [
    "ARM_ROLES",
    "CONFIG_SOURCES",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_UPDATED_BY",
    "PROGRESS_STATUSES",
    "SERVICE",
    "SQLALCHEMY_ERRORS",
    "ActiveConfig",
    "ArmRecord",
    "ExperimentRecord",
    "GACheckpoint",
    "InMemoryStateStore",
    "IslandEpochRecord",
    "QuoteGapRecord",
    "StateRepositories",
    "StateStore",
    "WorkerProgress",
    "build_metadata",
    "ensure_migrated",
    "json_safe",
    "migration_schema",
]
