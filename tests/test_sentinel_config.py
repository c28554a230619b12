"""Sentinel URLs and clients are read without a server: what they name, and clear errors."""

from __future__ import annotations

import pytest
from redis.asyncio.sentinel import Sentinel

import queue_async as qa

pytestmark = pytest.mark.anyio


async def test_a_sentinel_url_names_the_sentinels_the_service_the_db_and_the_credentials() -> None:
    url = "redis+sentinel://app:secret@10.0.0.1:26380,sentinel-b,[::1]:26381/orders/3"
    async with qa.Queue(url, name="q") as q:
        recipe = q._broker.connections.sentinel
        assert recipe is not None
        assert recipe.sentinels == (("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381))
        assert recipe.service == "orders"
        assert {k: recipe.settings.get(k) for k in ("db", "username", "password")} == {
            "db": 3,
            "username": "app",
            "password": "secret",
        }
        assert q._broker.connections.server[0] == "sentinel"


async def test_a_tls_sentinel_url_uses_tls_to_the_sentinels_and_the_master() -> None:
    async with qa.Queue("rediss+sentinel://10.0.0.1:26379/orders", name="q") as q:
        recipe = q._broker.connections.sentinel
        assert recipe is not None
        assert "SSL" in recipe.connection_class.__name__
        assert "SSL" in recipe.sentinel_class.__name__


@pytest.mark.parametrize(
    ("url", "said"),
    [
        pytest.param("redis+sentinel://10.0.0.1:26379", "names no service", id="no-service"),
        pytest.param("redis+sentinel://10.0.0.1:26379/", "names no service", id="empty-service"),
        pytest.param("redis+sentinel:///orders", "names no sentinel host", id="no-host"),
        pytest.param("redis+sentinel://:26379/orders", "names no sentinel host", id="no-name"),
        pytest.param("redis+sentinel://a:1,,b:2/orders", "names no sentinel host", id="empty"),
        pytest.param("redis+sentinel://10.0.0.1:abc/orders", "no valid port", id="port-word"),
        pytest.param("redis+sentinel://10.0.0.1:70000/orders", "no valid port", id="port-big"),
        pytest.param("redis+sentinel://10.0.0.1:0/orders", "no valid port", id="port-zero"),
        pytest.param("redis+sentinel://10.0.0.1/orders/x", "is not a number", id="bad-db"),
        pytest.param(
            "redis+sentinel://10.0.0.1/orders?socket_timeout=soon", "socket_timeout", id="query"
        ),
    ],
)
def test_a_bad_sentinel_url_says_what_is_wrong_and_the_form_to_use(url: str, said: str) -> None:
    with pytest.raises(qa.ConfigurationError, match=said) as caught:
        qa.Queue(url, name="q")
    assert "redis+sentinel://[user:password@]host:port[,host:port...]/<service_name>" in str(
        caught.value
    )


def test_a_bad_sentinel_url_keeps_its_password_out_of_the_error() -> None:
    with pytest.raises(qa.ConfigurationError) as caught:
        qa.Queue("redis+sentinel://app:hunter2@10.0.0.1:26379", name="q")
    assert "hunter2" not in str(caught.value)
    assert "app:***@" in str(caught.value)


async def test_a_replica_client_is_refused_with_the_fix() -> None:
    sentinel = Sentinel([("10.0.0.1", 26379)])
    with pytest.raises(qa.ConfigurationError, match=r"master_for\(service_name\)"):
        qa.Queue(sentinel.slave_for("orders"), name="q")


async def test_a_sentinel_client_with_decoded_responses_is_refused() -> None:
    sentinel = Sentinel([("10.0.0.1", 26379)])
    with pytest.raises(qa.ConfigurationError, match="decode_responses=False"):
        qa.Queue(sentinel.master_for("orders", decode_responses=True), name="q")


async def test_a_master_for_client_lends_its_sentinels_and_settings() -> None:
    sentinel = Sentinel(
        [("10.0.0.1", 26379), ("10.0.0.2", 26380)],
        sentinel_kwargs={"password": "for-sentinels"},
        password="for-servers",
        db=2,
    )
    async with qa.Queue(sentinel.master_for("orders"), name="q") as q:
        recipe = q._broker.connections.sentinel
        assert recipe is not None
        assert recipe.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
        assert recipe.sentinel_settings["password"] == "for-sentinels"
        assert (recipe.settings["password"], recipe.settings["db"]) == ("for-servers", 2)
        # Its pools are the queue's own, on the same sentinels (no connection opened yet).
        sentinels = q._broker.connections._sentinels
        assert sentinels is not None and sentinels is not sentinel
        assert [s.connection_pool.connection_kwargs["password"] for s in sentinels.sentinels] == [
            "for-sentinels",
            "for-sentinels",
        ]
