"""Optimistic locking, written once: every row a writer may race on carries ``version``.

A writer passes the version it read as ``expected_version``:

* ``None`` - overwrite whatever is there (only where the table allows blind writes: a task's own
  worker reporting its progress); elsewhere the same as ``0``;
* ``0`` - create only: :class:`ConflictError` when the row exists;
* ``N`` - replace only while the row is still at version N: :class:`ConflictError` otherwise.

:func:`write_versioned` does it in one statement on PostgreSQL; :func:`planned_write` is the same
rule for a store without SQL (the in-memory fake). The conflict is raised after the breaker call, so
contention never opens the circuit.
"""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from rof_pipelines.adapters.state_store.values import SERVICE
from rof_pipelines.errors import ConflictError, DataValidationError

if TYPE_CHECKING:
    from rof_pipelines.adapters.state_store.store import StateStore

Write = Literal["insert", "update"]


def check_expected(expected_version: int | None) -> None:
    """``expected_version`` is None or a version number >= 0."""
    if expected_version is not None and (
        not isinstance(expected_version, int) or isinstance(expected_version, bool) or expected_version < 0
    ):
        raise DataValidationError(
            f"{SERVICE}: expected_version must be a version number >= 0, got {expected_version!r}"
        )


def conflict_error(
    table: str, key: Mapping[str, Any], expected: int | None, current: int | None
) -> ConflictError:
    """The error of a lost race on ``table`` (``schema.name``) at the row ``key``."""
    where = ", ".join(f"{name}={value!r}" for name, value in key.items())
    wanted = "absent (create)" if not expected else f"version {expected}"
    found = "absent" if current is None else f"version {current}"
    return ConflictError(
        f"{SERVICE}: optimistic-lock conflict on {table} {where}: expected {wanted}, "
        f"found {found}; re-read and retry"
    )


def planned_write(
    expected_version: int | None, current: int | None, *, blind_overwrite: bool
) -> Write | None:
    """What a write may do to a row now at version ``current`` (None: absent): insert it, update it,
    or nothing (None: a conflict)."""
    if expected_version is None and blind_overwrite:
        return "insert" if current is None else "update"
    if not expected_version:
        return "insert" if current is None else None
    return "update" if current == expected_version else None


def write_versioned(
    store: "StateStore",
    table: sa.Table,
    key: Mapping[str, Any],
    values: Mapping[str, Any],
    expected_version: int | None,
    *,
    blind_overwrite: bool = False,
    returning: Sequence[sa.ColumnElement[Any]] | None = None,
) -> sa.RowMapping:
    """Insert or update the row of ``table`` whose primary key is ``key`` with ``values`` under the
    rules above; an update bumps ``version`` and ``updated_at``. Returns the ``returning`` columns
    (default: all) of the row as written; ConflictError when the version did not match."""
    columns = list(returning) if returning is not None else list(table.c)
    key_columns = [table.c[name] for name in key]
    bump = {"version": table.c.version + 1, "updated_at": sa.func.now()}

    def run() -> tuple[sa.RowMapping | None, int | None]:
        """(row, None) when written, (None, the row's current version or None) on a conflict."""
        with store.engine.begin() as conn:
            if expected_version is None and blind_overwrite:
                stmt = (
                    pg_insert(table)
                    .values(**key, **values)
                    .on_conflict_do_update(index_elements=key_columns, set_={**values, **bump})
                    .returning(*columns)
                )
                return conn.execute(stmt).mappings().one(), None
            if not expected_version:
                stmt = (
                    pg_insert(table)
                    .values(**key, **values)
                    .on_conflict_do_nothing(index_elements=key_columns)
                    .returning(*columns)
                )
            else:
                stmt = (
                    sa.update(table)
                    .where(*(column == key[column.name] for column in key_columns))
                    .where(table.c.version == expected_version)
                    .values(**values, **bump)
                    .returning(*columns)
                )
            row = conn.execute(stmt).mappings().first()
            if row is not None:
                return row, None
            current = conn.execute(
                sa.select(table.c.version).where(*(column == key[column.name] for column in key_columns))
            ).scalar_one_or_none()
            return None, current

    row, current = store.guarded_call(run, operation="write")
    if row is None:
        raise conflict_error(f"{table.schema}.{table.name}", key, expected_version, current)
    return row
