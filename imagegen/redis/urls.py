"""Redis URLs: a plain server (``redis://``, ``rediss://``, ``unix://``) or a primary that Redis
Sentinel manages (``redis+sentinel://``, ``rediss+sentinel://`` for TLS)::

    redis+sentinel://[[username]:password@]host:26379[,host:26380...]/mymaster[/db]

The hosts are the Sentinels (port 26379 when left out); ``mymaster`` is the name they monitor
the primary under; the username and password are the Redis servers' (a Sentinel's own password
is ``IMAGEGEN_REDIS_SENTINEL_PASSWORD``). Every client finds the primary through the Sentinels
and follows it when they promote a replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "SENTINEL_SCHEMES",
    "RedisUrlError",
    "SentinelUrl",
    "check_redis_url",
    "is_sentinel_url",
    "parse_sentinel_url",
]

DEFAULT_SENTINEL_PORT = 26379
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
_PLAIN_SCHEMES = ("redis", "rediss", "unix")
_FORM = "redis+sentinel://[:password@]host:26379,host:26380/mymaster/0"
_MAX_PORT = 65_535


class RedisUrlError(ValueError):
    """A Redis URL that cannot be used; the message names the part that is wrong."""


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int
    username: str | None
    password: str | None
    tls: bool


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SENTINEL_SCHEMES


def check_redis_url(url: str) -> None:
    """Raise ``RedisUrlError`` unless ``url`` is a Redis URL of a form the service connects to."""
    scheme, sep, _ = url.partition("://")
    if is_sentinel_url(url):
        parse_sentinel_url(url)
    elif not sep or scheme.lower() not in _PLAIN_SCHEMES:
        known = ", ".join(f"{name}://" for name in (*_PLAIN_SCHEMES, *SENTINEL_SCHEMES))
        msg = f"the scheme {scheme + sep!r} is not one of {known}"
        raise RedisUrlError(msg)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The Sentinels, primary name, database and credentials of a ``redis+sentinel://`` URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        msg = f"the scheme {scheme!r} is not redis+sentinel:// or rediss+sentinel:// ({_FORM})"
        raise RedisUrlError(msg)
    if "?" in rest or "#" in rest:
        msg = "a Sentinel URL takes no query or fragment (its options are settings)"
        raise RedisUrlError(msg)
    netloc, _, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    username, password = _credentials(credentials) if at else (None, None)
    sentinels = tuple(_sentinel(part) for part in hosts.split(","))
    master_name, db = _path(path)
    return SentinelUrl(sentinels, master_name, db, username, password, SENTINEL_SCHEMES[scheme])


def _credentials(text: str) -> tuple[str | None, str | None]:
    user, colon, password = text.partition(":")
    if not colon:
        msg = f"the credentials before '@' need a ':' before the password ({_FORM})"
        raise RedisUrlError(msg)
    return (unquote(user) or None), (unquote(password) or None)


def _sentinel(part: str) -> tuple[str, int]:
    if not part:
        msg = f"a Sentinel address is empty: list them as host:port,host:port ({_FORM})"
        raise RedisUrlError(msg)
    if part.startswith("["):  # [IPv6]:port
        host, bracket, port_text = part[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            msg = f"the Sentinel address {part!r} is not [ipv6]:port"
            raise RedisUrlError(msg)
        port_text = port_text[1:]
    else:
        host, _, port_text = part.partition(":")
    if not host:
        msg = f"the Sentinel address {part!r} has no host"
        raise RedisUrlError(msg)
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) <= _MAX_PORT:
        msg = f"the Sentinel address {part!r} has the port {port_text!r}, not 1-{_MAX_PORT}"
        raise RedisUrlError(msg)
    return host, int(port_text)


def _path(path: str) -> tuple[str, int]:
    name, _, db_text = path.partition("/")
    name = unquote(name)
    if not name:
        msg = (
            f"the primary's name (what the Sentinels monitor) is missing after the hosts ({_FORM})"
        )
        raise RedisUrlError(msg)
    db_text = db_text.rstrip("/")
    if not db_text:
        return name, 0
    if not db_text.isdigit():
        msg = f"the database {db_text!r} after the primary's name {name!r} is not a number"
        raise RedisUrlError(msg)
    return name, int(db_text)
