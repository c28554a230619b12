"""tests/test_multi_queue.py, rerun on the local cluster (see conftest.py)."""

from tests.test_multi_queue import *  # noqa: F403 - the point: the same tests, another server
