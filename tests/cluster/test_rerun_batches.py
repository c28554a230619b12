"""tests/test_batches.py, rerun on the local cluster (see conftest.py)."""

from tests.test_batches import *  # noqa: F403 - the point: the same tests, another server
