import pytest


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
