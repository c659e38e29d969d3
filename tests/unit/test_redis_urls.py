"""The Sentinel URL: what it names, the errors a bad one gets, and how every client reads it."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from imagegen.redis.connection import broker_tls, broker_transport_options, broker_url, connect
from imagegen.redis.failover import (
    BlockingSentinelConnectionPool,
    FailoverConnection,
    stop_following,
)
from imagegen.redis.urls import RedisUrlError, SentinelUrl, parse_sentinel_url
from imagegen.settings import Settings
from worker.app import make_app
from worker.transport import GatedSentinelChannel


def settings_with(url: str) -> Settings:
    return Settings(redis_url=url, _env_file=None)  # type: ignore[call-arg]


def test_a_sentinel_url_names_the_sentinels_the_primary_the_database_and_the_password() -> None:
    parsed = parse_sentinel_url("redis+sentinel://:s%40cret@sa:26379,sb:26380,[::1]/mymaster/3")
    assert parsed == SentinelUrl(
        sentinels=(("sa", 26379), ("sb", 26380), ("::1", 26379)),
        master_name="mymaster",
        db=3,
        username=None,
        password="s@cret",
        tls=False,
    )


def test_tls_a_username_and_the_default_database() -> None:
    parsed = parse_sentinel_url("rediss+sentinel://svc:pw@sentinel.internal/primary")
    assert parsed.tls
    assert (parsed.username, parsed.password, parsed.db) == ("svc", "pw", 0)
    assert parsed.sentinels == (("sentinel.internal", 26379),)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis+sentinel://h:26379", "the primary's name"),
        ("redis+sentinel://h:26379/", "the primary's name"),
        ("redis+sentinel://h:26379,h:x/m/0", "'h:x' has the port 'x'"),
        ("redis+sentinel://h:70000/m", "'h:70000' has the port '70000'"),
        ("redis+sentinel://h:26379,,h2/m", "a Sentinel address is empty"),
        ("redis+sentinel://:26379/m", "':26379' has no host"),
        ("redis+sentinel://h/m/zero", "the database 'zero'"),
        ("redis+sentinel://secret@h/m", "need a ':' before the password"),
        ("redis+sentinel://h/m?timeout=1", "no query"),
        ("redis+sentinel://[::1/m", "is not [ipv6]:port"),
    ],
)
def test_a_bad_sentinel_url_gets_an_error_naming_the_bad_part(url: str, named: str) -> None:
    with pytest.raises(RedisUrlError, match=named.replace("[", r"\[").replace("?", r"\?")):
        parse_sentinel_url(url)


def test_the_setting_is_refused_naming_the_field_and_never_showing_the_password() -> None:
    with pytest.raises(ValidationError) as raised:
        settings_with("redis+sentinel://:hunter2-secret@h:bad/mymaster")
    text = str(raised.value)
    assert "redis_url" in text
    assert "'h:bad' has the port 'bad'" in text
    assert "hunter2" not in text


def test_an_unknown_scheme_is_refused_naming_the_schemes_known() -> None:
    with pytest.raises(ValidationError, match=r"the scheme 'sentinel://' is not one of redis://"):
        settings_with("sentinel://h:26379")


def test_plain_urls_are_taken_as_before() -> None:
    for url in ("redis://h:6379/0", "rediss://:pw@h:6380/1", "unix:///run/redis.sock"):
        assert settings_with(url).redis_url == url


def test_the_one_connection_factory_finds_the_primary_through_the_sentinels() -> None:
    client = connect(settings_with("redis+sentinel://:pw@sa:26379,sb:26380/mymaster/2"))
    pool = client.connection_pool
    assert isinstance(pool, BlockingSentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert [
        s.connection_pool.connection_kwargs["port"] for s in pool.sentinel_manager.sentinels
    ] == [
        26379,
        26380,
    ]
    assert pool.connection_class is FailoverConnection
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["password"] == "pw"


def test_celery_reaches_the_broker_through_kombus_sentinel_transport() -> None:
    settings = settings_with("rediss+sentinel://:p%3Bw@sa:26379,sb:26380/mymaster/2")
    assert broker_url(settings) == ("sentinel://:p%3Bw@sa:26379/2;sentinel://:p%3Bw@sb:26380/2")
    options = broker_transport_options(settings)
    assert options["master_name"] == "mymaster"
    assert options["sentinel_kwargs"]["ssl"] is True
    assert broker_tls(settings) is not None

    app = make_app(settings)
    assert app.conf.broker_transport == "worker.transport:GatedSentinelTransport"
    assert app.conf.broker_transport_options["master_name"] == "mymaster"
    with app.connection_for_write() as connection:
        assert [url.split("@")[1] for url in connection.alt] == ["sa:26379/2", "sb:26380/2"]
        assert connection.transport_cls == "worker.transport:GatedSentinelTransport"


def test_the_worker_keeps_the_gated_transport_when_it_reconnects() -> None:
    """kombu takes a switched-to URL's transport from its scheme: switching to the next
    Sentinel's URL would leave the worker on kombu's own transport, without the gate."""
    app = make_app(settings_with("redis+sentinel://sa:26379,sb:26380,sc:26381/mymaster/2"))
    with app.connection_for_read() as connection:
        json.dumps(connection.info())  # in what `inspect stats` (Flower) answers
        for _ in range(4):  # what kombu does after each failed try to connect
            connection.maybe_switch_next()
        assert connection.transport_cls == "worker.transport:GatedSentinelTransport"
        assert connection.as_uri().endswith("@sa:26379/2")


def test_a_plain_url_keeps_the_plain_gated_transport() -> None:
    app = make_app(settings_with("redis://h:6379/4"))
    assert app.conf.broker_transport == "worker.transport:GatedTransport"
    assert "master_name" not in app.conf.broker_transport_options


def test_a_closed_broker_connection_still_builds_its_pool_from_the_sentinels() -> None:
    """A reconnect closes the channel (kombu sets its connection's client to None) and then
    opens a pool to put the unacknowledged messages back: that pool is built from what the
    connection was while open, with its password and database, not an AttributeError that
    ended the worker."""
    app = make_app(settings_with("redis+sentinel://:pw@sa:26379,sb:26380/mymaster/2"))
    with app.connection_for_read() as connection:
        transport = connection.transport
        channel = object.__new__(GatedSentinelChannel)  # its __init__ would connect
        channel.connection = transport
        channel.master_name = "mymaster"
        pools = [channel._sentinel_managed_pool()]
        transport.client = None  # what closing the connection does
        try:
            pools.append(channel._sentinel_managed_pool())
        finally:
            transport.client = connection
            for pool in pools:
                stop_following(pool)
    reopened = pools[-1]
    assert reopened.connection_kwargs["password"] == "pw"
    assert reopened.connection_kwargs["db"] == 2
    sentinels = reopened.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["host"] for s in sentinels] == ["sa", "sb"]
