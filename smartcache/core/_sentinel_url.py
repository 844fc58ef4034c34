"""``redis+sentinel://`` URLs: the sentinels, the service, the db and the credentials.

Pure: parsing only. Errors are :class:`~smartcache.exceptions.ConfigurationError` naming
what is wrong, with any password masked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

from smartcache.core._sentinel_common import Address, as_port
from smartcache.exceptions import ConfigurationError

__all__ = ["SentinelURL", "parse_sentinel_url"]


def _flag(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on", "y"):
        return True
    if text in ("0", "false", "no", "off", "n", ""):
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


#: How query options are read (as redis-py's ``parse_url``); others stay strings.
_QUERY_TYPES: Final[dict[str, Any]] = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "socket_keepalive": _flag,
    "health_check_interval": float,
    "max_connections": int,
    "timeout": float,
    "protocol": int,
    "decode_responses": _flag,
    "ssl_check_hostname": _flag,
}

_DEFAULT_SENTINEL_PORT: Final = 26379
_SCHEMES: Final = {"redis+sentinel": False, "rediss+sentinel": True}


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL.

    The user and password of the URL are the data nodes' credentials; the sentinels' own
    come from the ``sentinel_username`` / ``sentinel_password`` query options. Other query
    options are in ``options`` (typed as redis-py's URL parser types them).
    """

    sentinels: tuple[Address, ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    ssl: bool = False
    options: tuple[tuple[str, Any], ...] = ()

    def connection_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments for the data nodes (``db``, credentials, options)."""
        kwargs: dict[str, Any] = {"db": self.db, **dict(self.options)}
        if self.username is not None:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password
        if self.ssl:
            kwargs["ssl"] = True
        return kwargs

    def sentinel_kwargs(self) -> dict[str, Any]:
        """redis-py keyword arguments for the sentinels (their credentials, TLS)."""
        kwargs: dict[str, Any] = {}
        if self.sentinel_username is not None:
            kwargs["username"] = self.sentinel_username
        if self.sentinel_password is not None:
            kwargs["password"] = self.sentinel_password
        if self.ssl:
            kwargs["ssl"] = True
        return kwargs


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse ``redis+sentinel://[user:pass@]h1:26379,h2:26380/service[/db][?opts]``.

    ``rediss+sentinel://`` turns TLS on. A host without a port means 26379. Raises
    :class:`~smartcache.exceptions.ConfigurationError` saying what is wrong.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ConfigurationError(
            f"not a Sentinel URL: {_redact(url)!r} (expected redis+sentinel://host:port,"
            "host:port/service_name[/db])"
        )
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        # A user name alone is an ACL user with ``nopass`` (as redis-py's URLs allow).
        password = unquote(secret) if colon else None
    sentinels = _parse_hosts(hosts, url)
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts:
        raise ConfigurationError(
            f"Sentinel URL {_redact(url)!r} names no service: add /service_name after the hosts"
        )
    if len(parts) > 2:
        raise ConfigurationError(
            f"Sentinel URL {_redact(url)!r}: the path must be /service_name[/db]"
        )
    db = _parse_db(parts[1], url) if len(parts) == 2 else 0
    options: dict[str, Any] = {}
    sentinel_user = sentinel_password = None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "sentinel_username":
            sentinel_user = value or None
        elif key == "sentinel_password":
            sentinel_password = value
        elif key == "db":
            db = _parse_db(value, url)
        else:
            options[key] = _typed_option(key, value, url)
    return SentinelURL(
        sentinels=sentinels,
        service_name=parts[0],
        db=db,
        username=username,
        password=password,
        sentinel_username=sentinel_user,
        sentinel_password=sentinel_password,
        ssl=_SCHEMES[scheme.lower()],
        options=tuple(options.items()),
    )


def _parse_hosts(hosts: str, url: str) -> tuple[Address, ...]:
    found: dict[Address, None] = {}
    for raw in hosts.split(","):
        item = raw.strip()
        if not item:
            raise ConfigurationError(
                f"Sentinel URL {_redact(url)!r} has an empty host in its host list"
            )
        if item.startswith("["):
            host, bracket, tail = item[1:].partition("]")
            if not bracket or (tail and not tail.startswith(":")):
                raise ConfigurationError(f"Sentinel URL {_redact(url)!r}: bad host {item!r}")
            port_text = tail[1:]
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise ConfigurationError(f"Sentinel URL {_redact(url)!r}: bad host {item!r}")
        try:
            port = as_port(port_text) if port_text else _DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ConfigurationError(
                f"Sentinel URL {_redact(url)!r}: bad port in {item!r}"
            ) from None
        found.setdefault((host, port))
    return tuple(found)


def _parse_db(text: str, url: str) -> int:
    if not text.isdigit():
        raise ConfigurationError(
            f"Sentinel URL {_redact(url)!r}: db must be a non-negative integer, got {text!r}"
        )
    return int(text)


def _typed_option(key: str, value: str, url: str) -> Any:
    convert = _QUERY_TYPES.get(key)
    if convert is None:
        return value
    try:
        return convert(value)
    except ValueError:
        raise ConfigurationError(
            f"Sentinel URL {_redact(url)!r}: invalid value {value!r} for {key}"
        ) from None


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    head, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hosts}" if ":" in userinfo else f"***@{hosts}"
    tail = re.sub(r"(sentinel_password=)[^&#]*", r"\1***", tail)
    return f"{head}{sep}{netloc}{slash}{tail}"
