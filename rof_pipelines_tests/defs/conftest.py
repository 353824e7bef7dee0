import uuid
from collections.abc import Iterator

import pytest

from rof_pipelines.adapters.resources import InMemoryStateStoreResource


@pytest.fixture
def state_storage(pg_database) -> dict:
    """state_storage settings pointing at this test's fresh PostgreSQL database."""
    return {
        "db_host": pg_database["db_host"],
        "db_user": pg_database["db_user"],
        "db_name": pg_database["db_name"],
        "db_password": "",
        "schema": "rof_state",
    }


@pytest.fixture
def memory_state_store(request) -> Iterator[InMemoryStateStoreResource]:
    """An in-memory state store of this test's own (no PostgreSQL), dropped afterwards."""
    resource = InMemoryStateStoreResource(space=f"{request.node.nodeid}:{uuid.uuid4().hex}")
    yield resource
    InMemoryStateStoreResource.drop(resource.space)
