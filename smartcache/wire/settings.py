"""How to reach and greet one node: an immutable value shared by every connection to it.

:class:`ConnectionSettings` holds what the wire layer needs (address, credentials, TLS,
timeouts, RESP version, decoding) and translates redis-py's ``Redis(...)`` /
``ConnectionPool(...)`` keyword arguments into itself, refusing the ones it cannot honour
instead of silently dropping them. It never opens a socket and never shows a secret:
``password`` and ``ssl_password`` print as ``***``.
"""

from __future__ import annotations

import codecs
import dataclasses
import ssl as _ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

from smartcache.exceptions import ConfigurationError

__all__ = ["ConnectionSettings", "short_timeouts"]

#: redis-py keyword arguments we accept and ignore: they tune redis-py's own machinery
#: (its retry loop, its connection classes, its driver banner), which smartcache replaces.
_IGNORED_KWARGS = frozenset(
    {
        "retry",
        "retry_on_error",
        "retry_on_timeout",
        "single_connection_client",
        "lib_name",
        "lib_version",
        "driver_info",
        "auto_close_connection_pool",
        "parser_class",
        "command_packer",
        "socket_type",
        "event_dispatcher",
        "maint_notifications_config",
        "oss_cluster_maint_notifications_handler",
        "maint_notifications_pool_handler",
        "cache_factory",
    }
)

#: Pool-level keyword arguments: not part of a connection, read by ConnectionPool.from_redis_kwargs.
POOL_KWARGS = frozenset({"max_connections", "timeout"})

#: Accepted only at their "off" value; anything else would change behaviour we do not have.
_REFUSED_UNLESS_OFF: dict[str, str] = {
    "connection_pool": "pass settings to smartcache instead of a redis-py ConnectionPool",
    "redis_connect_func": "smartcache runs its own handshake; use client_name/db/protocol",
    "cache": "client-side caching is not implemented by the smartcache wire layer",
    "cache_config": "client-side caching is not implemented by the smartcache wire layer",
    "ssl_validate_ocsp": "OCSP validation is not implemented",
    "ssl_validate_ocsp_stapled": "OCSP validation is not implemented",
    "ssl_ocsp_context": "OCSP validation is not implemented",
    "ssl_ocsp_expected_cert": "OCSP validation is not implemented",
    "himport_registry": "HIMPORT field sets are not implemented",
}

_CERT_REQS = {
    "none": _ssl.CERT_NONE,
    "optional": _ssl.CERT_OPTIONAL,
    "required": _ssl.CERT_REQUIRED,
}


@dataclass(frozen=True, repr=False)
class ConnectionSettings:
    """Immutable description of one node and how to talk to it.

    Defaults follow redis-py 8.1's ``Redis()``: 5 s socket and connect timeouts, TCP
    keepalive on, ``protocol=None`` meaning "redis-py's default" (RESP3 on the wire,
    with ``legacy_responses=True`` selecting redis-py's RESP2-shaped Python replies).
    Use :attr:`resp_version` for the wire protocol actually spoken.
    """

    host: str = "localhost"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: a redis-py ``CredentialProvider``; asked for credentials at every connect
    credential_provider: Any = field(default=None, repr=False)
    #: connect over a Unix socket at this path instead of host:port
    unix_socket_path: str | None = None
    socket_timeout: float | None = 5.0
    socket_connect_timeout: float | None = 5.0
    socket_keepalive: bool = True
    #: ((option, value), ...) for ``IPPROTO_TCP``; ``None`` = redis-py's defaults
    socket_keepalive_options: tuple[tuple[int, int | bytes], ...] | None = None
    socket_read_size: int = 65536
    ssl: bool = False
    ssl_ca_certs: str | None = None
    ssl_ca_path: str | None = None
    ssl_ca_data: str | bytes | None = field(default=None, repr=False)
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = field(default=None, repr=False)
    ssl_cert_reqs: str | _ssl.VerifyMode | None = "required"
    ssl_check_hostname: bool = True
    ssl_include_verify_flags: tuple[_ssl.VerifyFlags, ...] = ()
    ssl_exclude_verify_flags: tuple[_ssl.VerifyFlags, ...] = ()
    ssl_min_version: _ssl.TLSVersion | None = None
    ssl_ciphers: str | None = None
    #: a ready ``ssl.SSLContext``; when given, the other ``ssl_*`` options are not used
    ssl_context: _ssl.SSLContext | None = field(default=None, compare=False)
    #: 2, 3 or ``None`` (redis-py's default: RESP3); see :attr:`resp_version`
    protocol: int | None = None
    legacy_responses: bool = True
    client_name: str | None = None
    encoding: str = "utf-8"
    encoding_errors: str = "strict"
    decode_responses: bool = False
    #: seconds a pooled connection may sit idle before a PING on reuse; 0 = never
    health_check_interval: float = 0
    #: send ``READONLY`` after the handshake (cluster replica connections serving reads)
    readonly: bool = False

    _SECRET_FIELDS: ClassVar[frozenset[str]] = frozenset({"password", "ssl_password"})

    def __post_init__(self) -> None:
        if self.protocol is not None:
            try:
                proto = int(self.protocol)
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"protocol must be 2 or 3, got {self.protocol!r}"
                ) from None
            if proto not in (2, 3):
                raise ConfigurationError(f"protocol must be 2 or 3, got {self.protocol!r}")
            object.__setattr__(self, "protocol", proto)
        port, db = _as_int("port", self.port), _as_int("db", self.db)
        if not 0 <= port < 65536:
            raise ConfigurationError(f"port must be in 0..65535, got {port!r}")
        if db < 0:
            raise ConfigurationError(f"db must be a non-negative integer, got {db!r}")
        object.__setattr__(self, "port", port)
        object.__setattr__(self, "db", db)
        for name in ("socket_timeout", "socket_connect_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"{name} must be positive or None, got {value!r}")
        if self.health_check_interval < 0:
            raise ConfigurationError("health_check_interval must be >= 0")
        if self.socket_read_size < 1024:
            raise ConfigurationError("socket_read_size must be at least 1024 bytes")
        if isinstance(self.ssl_cert_reqs, str) and self.ssl_cert_reqs not in _CERT_REQS:
            raise ConfigurationError(
                f"ssl_cert_reqs must be one of none/optional/required, got {self.ssl_cert_reqs!r}"
            )
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ConfigurationError(f"unknown encoding {self.encoding!r}") from None

    # -- derived values --------------------------------------------------------------

    @property
    def resp_version(self) -> int:
        """The RESP version spoken on the wire: ``protocol``, or 3 when it is ``None``."""
        return 3 if self.protocol is None else self.protocol

    @property
    def address(self) -> str:
        """``host:port`` (or the Unix socket path): how errors and logs name this node."""
        if self.unix_socket_path is not None:
            return self.unix_socket_path
        return f"{self.host}:{self.port}"

    @property
    def verify_mode(self) -> _ssl.VerifyMode:
        """``ssl_cert_reqs`` as an ``ssl.VerifyMode`` (``None`` means ``CERT_NONE``)."""
        reqs = self.ssl_cert_reqs
        if reqs is None:
            return _ssl.CERT_NONE
        if isinstance(reqs, str):
            return _CERT_REQS[reqs]
        return reqs

    def with_address(self, host: str, port: int) -> ConnectionSettings:
        """Return a copy for another node (same credentials, TLS and options)."""
        return dataclasses.replace(self, host=host, port=port, unix_socket_path=None)

    def replace(self, **changes: Any) -> ConnectionSettings:
        """Return a copy with ``changes`` applied (validated like the constructor)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self._SECRET_FIELDS:
                if value is not None:
                    parts.append(f"{f.name}=***")
            elif f.repr and value != f.default:
                parts.append(f"{f.name}={value!r}")
        return f"ConnectionSettings({', '.join(parts)})"

    def to_redis_kwargs(self) -> dict[str, Any]:
        """Return redis-py style connection kwargs (as ``ConnectionPool.connection_kwargs``).

        Holds the password, like redis-py's; it is for introspection, never for logging.
        """
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "socket_keepalive_options" and value is not None:
                value = dict(value)
            kwargs[f.name] = value
        return kwargs

    # -- construction from redis-py arguments -------------------------------------------

    @classmethod
    def from_redis_kwargs(cls, **kwargs: Any) -> ConnectionSettings:
        """Build settings from redis-py ``Redis(...)`` / ``ConnectionPool(...)`` kwargs.

        * Arguments smartcache implements map to the fields of the same name (``path``,
          as redis-py's URL parser spells it, is ``unix_socket_path``; a
          ``connection_class`` of ``SSLConnection`` implies ``ssl=True``).
        * Arguments that only tune redis-py's own machinery (``retry``,
          ``retry_on_error``, ``retry_on_timeout``, ``single_connection_client``,
          ``lib_name``, ``lib_version``, ``driver_info``, ``auto_close_connection_pool``,
          ``parser_class``, ...) are accepted and ignored: smartcache has its own retry
          policy.
        * Pool arguments (``max_connections``, ``timeout``) are ignored here; use
          :meth:`smartcache.wire.ConnectionPool.from_redis_kwargs` to honour them.
        * Arguments for features smartcache lacks (``cache``, ``redis_connect_func``,
          OCSP, ``connection_pool``) are accepted only when off; otherwise, and for any
          unknown name, :class:`~smartcache.exceptions.ConfigurationError` names the
          argument.
        """
        own = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name, value in kwargs.items():
            if name in own:
                values[name] = value
            elif name == "path":
                values["unix_socket_path"] = value
            elif name == "connection_class":
                _apply_connection_class(value, values)
            elif name in _IGNORED_KWARGS or name in POOL_KWARGS:
                continue
            elif name in _REFUSED_UNLESS_OFF:
                if value not in (None, False) and not _empty_registry(name, value):
                    raise ConfigurationError(
                        f"{name}={value!r} is not supported: {_REFUSED_UNLESS_OFF[name]}"
                    )
            else:
                raise ConfigurationError(f"unknown connection argument {name!r}")
        return cls._coerce(values)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ConnectionSettings:
        """Build settings from a ``redis://``, ``rediss://`` or ``unix://`` URL.

        Parsed by redis-py's own URL parser, so query options read the same; explicit
        ``kwargs`` win over the URL, as in ``redis.Redis.from_url``.
        """
        try:
            parsed: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            raise ConfigurationError(f"invalid URL: {exc}") from None
        parsed.update(kwargs)
        return cls.from_redis_kwargs(**parsed)

    @classmethod
    def _coerce(cls, values: dict[str, Any]) -> ConnectionSettings:
        options = values.get("socket_keepalive_options")
        if isinstance(options, Mapping):
            values["socket_keepalive_options"] = tuple(options.items())
        for name in ("ssl_include_verify_flags", "ssl_exclude_verify_flags"):
            if name in values:
                values[name] = tuple(values[name] or ())
        if "socket_keepalive" in values and values["socket_keepalive"] is None:
            values["socket_keepalive"] = False  # redis-py treats None as off
        try:
            return cls(**values)
        except TypeError as exc:  # a wrongly typed value that dataclass could not take
            raise ConfigurationError(str(exc)) from None


_REDIS_CONN = "redis.connection"


def _empty_registry(name: str, value: object) -> bool:
    # redis-py 8.1 pools always carry an HIMPORT registry; an empty one asks for nothing.
    return name == "himport_registry" and not getattr(value, "_fieldsets", True)


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigurationError(f"{name} must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {value!r}") from None


def _apply_connection_class(value: Any, values: dict[str, Any]) -> None:
    if value is None or not isinstance(value, type):
        raise ConfigurationError(f"connection_class must be a class, got {value!r}")
    if issubclass(value, SSLConnection):
        values.setdefault("ssl", True)
    elif not issubclass(value, UnixDomainSocketConnection) and value.__module__ != _REDIS_CONN:
        raise ConfigurationError(
            f"connection_class={value.__name__} is not supported: smartcache uses its own "
            "connections (use ssl=True or unix_socket_path instead)"
        )


def short_timeouts(settings: ConnectionSettings, connect: float, read: float) -> ConnectionSettings:
    """``settings`` with connect/read timeouts capped at ``connect`` / ``read`` seconds."""
    return settings.replace(
        socket_timeout=_capped(settings.socket_timeout, read),
        socket_connect_timeout=_capped(settings.socket_connect_timeout, connect),
    )


def _capped(value: float | None, limit: float) -> float:
    return limit if value is None else min(value, limit)
