"""tests/test_core.py, rerun on the local cluster (see conftest.py)."""

from tests.test_core import *  # noqa: F403 - the point: the same tests, another server
