import uuid
from collections.abc import Iterator

import pytest

from rof_pipelines.adapters.resources import InMemoryStateStoreResource


@pytest.fixture
def memory_state_store(request) -> Iterator[InMemoryStateStoreResource]:
    """An in-memory state store of this test's own (no PostgreSQL), dropped afterwards."""
    resource = InMemoryStateStoreResource(space=f"{request.node.nodeid}:{uuid.uuid4().hex}")
    yield resource
    InMemoryStateStoreResource.drop(resource.space)
