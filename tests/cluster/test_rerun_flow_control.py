"""tests/test_flow_control.py, rerun on the local cluster (see conftest.py)."""

from tests.test_flow_control import *  # noqa: F403 - the point: the same tests, another server
