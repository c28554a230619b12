"""tests/test_unique.py, rerun on the local cluster (see conftest.py)."""

from tests.test_unique import *  # noqa: F403 - the point: the same tests, another server
