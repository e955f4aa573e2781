"""Test-wide settings and the shared local Ray."""

import pytest
from hypothesis import settings

# property tests draw the same examples on every run, so CI is repeatable
settings.register_profile("repeatable", derandomize=True, database=None)
settings.load_profile("repeatable")


@pytest.fixture(scope="session")
def ray_workers():
    """One local Ray (127.0.0.1) with 2 workers for the whole session; each search borrows it."""
    from search.executor import RayExecutor

    with RayExecutor(workers=2) as executor:
        yield executor
