"""tests/test_core.py, rerun through the local Sentinel deployment (see conftest.py)."""

from tests.test_core import *  # noqa: F403 - the point: the same tests, another server
