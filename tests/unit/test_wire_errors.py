"""The wire layer's pure parts: error mapping, redirects, settings, packing. No server."""

from __future__ import annotations

import enum
import ssl
from typing import Any

import pytest
import redis
import redis.connection
import redis.exceptions as rx
from redis._parsers.base import BaseParser
from redis.connection import SSLConnection

from smartcache.exceptions import ConfigurationError, PoolExhaustedError, SmartConnectionError
from smartcache.sync._pool import ConnectionPool
from smartcache.wire import (
    ConnectionSettings,
    Redirect,
    pack_command,
    pack_commands,
    parse_error,
    parse_redirect,
    redirect_from_error,
)
from smartcache.wire.errors import ERROR_CLASSES
from smartcache.wire.handshake import handshake_commands
from smartcache.wire.packing import packer_for

pytestmark = pytest.mark.dropin

# -- parse_error ------------------------------------------------------------------------

PREFIXED = [
    ("OOM command not allowed when used memory > 'maxmemory'.", rx.OutOfMemoryError),
    ("WRONGPASS invalid username-password pair or user is disabled.", rx.AuthenticationError),
    ("EXECABORT Transaction discarded because of previous errors.", rx.ExecAbortError),
    ("LOADING Redis is loading the dataset in memory", rx.BusyLoadingError),
    ("NOSCRIPT No matching script. Please use EVAL.", rx.NoScriptError),
    ("READONLY You can't write against a read only replica.", rx.ReadOnlyError),
    ("NOAUTH Authentication required.", rx.AuthenticationError),
    ("NOPERM User alice has no permissions to run the 'get' command", rx.NoPermissionError),
    ("ASK 3999 127.0.0.1:6381", rx.AskError),
    ("TRYAGAIN Multiple keys request during rehashing of slot", rx.TryAgainError),
    ("MOVED 3999 127.0.0.1:6381", rx.MovedError),
    ("CLUSTERDOWN The cluster is down", rx.ClusterDownError),
    ("CROSSSLOT Keys in request don't hash to the same slot", rx.ClusterCrossSlotError),
    (
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        rx.MasterDownError,
    ),
]


@pytest.mark.parametrize(("message", "cls"), PREFIXED)
def test_prefix_selects_redis_py_class(message: str, cls: type[rx.RedisError]) -> None:
    error = parse_error(message)
    code, _, rest = message.partition(" ")
    assert type(error) is cls
    assert str(error) == rest  # prefix stripped, as redis-py does
    assert error.status_code == code


ERR_EXACT = [
    # redis-py 8.2 made this MaxClientsReachedError (a ConnectionError subclass)
    ("max number of clients reached", rx.ConnectionError),
    ("invalid password", rx.AuthenticationError),
    ("wrong number of arguments for 'auth' command", rx.AuthenticationWrongNumberOfArgsError),
    ("wrong number of arguments for 'AUTH' command", rx.AuthenticationWrongNumberOfArgsError),
    ("Error loading the extension. Please check the server logs.", rx.ModuleError),
    ("Error unloading module: no such module with that name", rx.ModuleError),
    ("Error unloading module: operation not possible.", rx.ModuleError),
    (
        "Error unloading module: the module exports one or more module-side data types, "
        "can't unload",
        rx.ModuleError,
    ),
    (
        "AUTH <password> called without any password configured for the default user. "
        "Are you sure your configuration is correct?",
        rx.AuthenticationError,
    ),
    ("Client sent AUTH, but no password is set", rx.AuthenticationError),
    ("problem with LDAP service", rx.ExternalAuthProviderError),
    ("no such fieldset", rx.NoSuchFieldsetError),
    ("unknown command 'FOO'", rx.ResponseError),
]


@pytest.mark.parametrize(("rest", "cls"), ERR_EXACT)
def test_err_messages(rest: str, cls: type[rx.RedisError]) -> None:
    error = parse_error(f"ERR {rest}")
    assert isinstance(error, cls)
    assert type(error) is type(BaseParser.parse_error(f"ERR {rest}"))
    assert str(error) == rest
    assert error.status_code == "ERR"


def test_unknown_prefix_keeps_whole_message() -> None:
    error = parse_error("WRONGTYPE Operation against a key holding the wrong kind of value")
    assert type(error) is rx.ResponseError
    assert str(error).startswith("WRONGTYPE Operation")
    assert type(parse_error("")) is rx.ResponseError


@pytest.mark.parametrize("message", ["MOVED", "MOVED abc", "ASK 1 nohostport", "MOVED x h:1"])
def test_malformed_redirect_is_still_an_error_value(message: str) -> None:
    error = parse_error(message)
    assert isinstance(error, rx.ResponseError)


def test_redirect_errors_carry_slot_and_node() -> None:
    error = parse_error("MOVED 3999 127.0.0.1:6381")
    assert isinstance(error, rx.MovedError)
    assert (error.slot_id, error.host, error.port) == (3999, "127.0.0.1", 6381)


DIFFERENTIAL = [
    *(message for message, _cls in PREFIXED),
    *(f"ERR {rest}" for rest, _cls in ERR_EXACT),
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "BUSY Redis is busy running a script.",
    "NOGROUP No such key 'k' or consumer group 'g'",
    "lowercase not a code",
    "ERR",
    "",
]


@pytest.mark.parametrize("message", DIFFERENTIAL)
def test_same_exception_as_installed_redis_py(message: str) -> None:
    """Class, text and status_code are whatever the installed redis-py's parser gives."""
    ours, theirs = parse_error(message), BaseParser.parse_error(message)
    assert (type(ours), str(ours), ours.args) == (type(theirs), str(theirs), theirs.args)
    assert getattr(ours, "status_code", None) == getattr(theirs, "status_code", None)
    assert ERROR_CLASSES is BaseParser.EXCEPTION_CLASSES


# -- redirects --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("MOVED 3999 127.0.0.1:6381", Redirect("MOVED", 3999, "127.0.0.1", 6381)),
        ("ASK 3999 127.0.0.1:6381", Redirect("ASK", 3999, "127.0.0.1", 6381)),
        ("MOVED 3999 :6381", Redirect("MOVED", 3999, "", 6381)),
        ("MOVED 3999 ?:6381", Redirect("MOVED", 3999, "", 6381)),
        ("MOVED 1 ::1:7000", Redirect("MOVED", 1, "::1", 7000)),
        ("MOVED 1 [::1]:7000", Redirect("MOVED", 1, "::1", 7000)),
        (
            "ASK 16383 redis-node-3.example.com:7002",
            Redirect("ASK", 16383, "redis-node-3.example.com", 7002),
        ),
        ("MOVED 0 fe80::1:2:3:4:6379", Redirect("MOVED", 0, "fe80::1:2:3:4", 6379)),
    ],
)
def test_parse_redirect(message: str, expected: Redirect) -> None:
    redirect = parse_redirect(message)
    assert redirect == expected
    kind, slot, host, port = expected  # unpacks as a plain tuple
    assert redirect is not None
    assert (redirect.kind, redirect.slot, redirect.host, redirect.port) == (kind, slot, host, port)


def test_parse_redirect_not_a_redirect() -> None:
    assert parse_redirect("ERR something") is None
    assert parse_redirect("TRYAGAIN later") is None


@pytest.mark.parametrize(
    "message",
    [
        "MOVED",
        "MOVED 1",
        "MOVED 16384 h:1",
        "MOVED -1 h:1",
        "ASK x h:1",
        "MOVED 1 host",
        "MOVED 1 h:0",
        "MOVED 1 h:99999",
        "MOVED 1 h:1 extra",
    ],
)
def test_parse_redirect_malformed(message: str) -> None:
    with pytest.raises(ValueError):
        parse_redirect(message)


def test_redirect_from_error() -> None:
    assert redirect_from_error(parse_error("MOVED 5 :6381")) == Redirect("MOVED", 5, "", 6381)
    assert redirect_from_error(parse_error("ASK 5 10.0.0.1:7000")) == Redirect(
        "ASK", 5, "10.0.0.1", 7000
    )
    assert redirect_from_error(parse_error("ERR nope")) is None
    assert redirect_from_error(ValueError("x")) is None


# -- settings ---------------------------------------------------------------------------


def test_repr_hides_secrets() -> None:
    settings = ConnectionSettings(
        host="h", port=1, username="alice", password="hunter2", ssl_password="keypass"
    )
    text = repr(settings)
    assert "hunter2" not in text and "keypass" not in text
    assert "password=***" in text and "ssl_password=***" in text
    assert "username='alice'" in text
    assert "password" not in repr(ConnectionSettings())
    pool = ConnectionPool(settings)
    assert "hunter2" not in repr(pool)
    assert pool.connection_kwargs["password"] == "hunter2"  # introspection, like redis-py


def test_with_address_keeps_everything_else() -> None:
    settings = ConnectionSettings(host="a", port=1, password="pw", db=2, ssl=True)
    other = settings.with_address("b", 2)
    assert (other.host, other.port, other.password, other.db, other.ssl) == ("b", 2, "pw", 2, True)
    assert settings.host == "a"
    assert other.address == "b:2"


def test_defaults_follow_redis_py() -> None:
    settings = ConnectionSettings()
    assert settings.protocol is None and settings.resp_version == 3
    assert settings.socket_timeout == 5.0 and settings.socket_keepalive is True
    assert ConnectionSettings(protocol=2).resp_version == 2
    assert ConnectionSettings(protocol="3").protocol == 3  # type: ignore[arg-type]


def test_from_redis_kwargs() -> None:
    settings = ConnectionSettings.from_redis_kwargs(
        host="h",
        port=7000,
        db=1,
        password="pw",
        decode_responses=True,
        retry=object(),
        retry_on_timeout=True,
        single_connection_client=False,
        lib_name="x",
        lib_version="1",
        max_connections=10,
        auto_close_connection_pool=True,
        connection_class=SSLConnection,
        socket_keepalive_options={1: 2},
        cache=None,
    )
    assert (settings.host, settings.port, settings.db, settings.decode_responses) == (
        "h",
        7000,
        1,
        True,
    )
    assert settings.ssl is True
    assert settings.socket_keepalive_options == ((1, 2),)


def test_from_redis_kwargs_refuses_unknown_and_unsupported() -> None:
    with pytest.raises(ConfigurationError, match="'hots'"):
        ConnectionSettings.from_redis_kwargs(hots="h")
    with pytest.raises(ConfigurationError, match="redis_connect_func"):
        ConnectionSettings.from_redis_kwargs(redis_connect_func=lambda c: None)
    with pytest.raises(ConfigurationError, match="ssl_validate_ocsp"):
        ConnectionSettings.from_redis_kwargs(ssl_validate_ocsp=True)
    with pytest.raises(ConfigurationError, match="connection_class"):
        ConnectionSettings.from_redis_kwargs(connection_class=dict)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"protocol": 4},
        {"protocol": "x"},
        {"port": 70000},
        {"port": True},
        {"db": -1},
        {"socket_timeout": 0},
        {"ssl_cert_reqs": "sometimes"},
        {"encoding": "no-such-codec"},
    ],
)
def test_invalid_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        ConnectionSettings(**kwargs)  # type: ignore[arg-type]


def test_from_url() -> None:
    settings = ConnectionSettings.from_url("rediss://alice:pw@cache.example:6380/3?protocol=2")
    assert (settings.host, settings.port, settings.db, settings.protocol) == (
        "cache.example",
        6380,
        3,
        2,
    )
    assert settings.ssl and settings.username == "alice" and settings.password == "pw"
    assert "pw" not in repr(settings).replace("password", "")
    unix = ConnectionSettings.from_url("unix:///tmp/redis.sock?db=2")
    assert unix.unix_socket_path == "/tmp/redis.sock" and unix.address == "/tmp/redis.sock"
    with pytest.raises(ConfigurationError):
        ConnectionSettings.from_url("http://nope")


def test_verify_mode() -> None:
    assert ConnectionSettings(ssl_cert_reqs="none").verify_mode == ssl.CERT_NONE
    assert ConnectionSettings(ssl_cert_reqs=None).verify_mode == ssl.CERT_NONE
    assert ConnectionSettings(ssl_cert_reqs=ssl.CERT_OPTIONAL).verify_mode == ssl.CERT_OPTIONAL
    assert ConnectionSettings().verify_mode == ssl.CERT_REQUIRED


# -- packing and pool arguments ---------------------------------------------------------


def test_pack_command_accepts_what_redis_py_accepts() -> None:
    packed = pack_command(["SET", b"k", memoryview(b"v"), 1, 1.5])
    assert packed == b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$1\r\n1\r\n$3\r\n1.5\r\n"
    assert pack_commands([("PING",), ("PING",)]) == b"*1\r\n$4\r\nPING\r\n" * 2


class _Color(enum.IntEnum):
    RED = 1


def _packed_or_error(pack: Any, *args: Any) -> Any:
    try:
        return pack(*args)
    except rx.RedisError as exc:
        return type(exc), str(exc)


@pytest.mark.parametrize(
    "value",
    [True, None, bytearray(b"x"), memoryview(b"m"), [1], {"a": 1}, _Color.RED, "é", 2**70, -0.0],
)
def test_pack_command_packs_or_refuses_like_installed_redis_py(value: object) -> None:
    """Whatever the installed redis-py sends or raises for an argument, so do we."""
    reference = redis.connection.Connection()
    theirs = _packed_or_error(lambda *a: b"".join(reference.pack_command(*a)), "SET", "k", value)
    assert _packed_or_error(lambda *a: pack_command(a), "SET", "k", value) == theirs


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_non_utf8_encoding_packs_like_installed_redis_py(encoding: str) -> None:
    settings = ConnectionSettings(encoding=encoding)
    reference = redis.connection.Connection(encoding=encoding)
    args = ("SET", "clé", "été", 1, b"raw")
    assert packer_for(settings)(args) == b"".join(reference.pack_command(*args))


def test_pool_arguments() -> None:
    with pytest.raises(ConfigurationError):
        ConnectionPool(ConnectionSettings(), max_connections=0)
    with pytest.raises(ConfigurationError):
        ConnectionPool(ConnectionSettings(), timeout=-1)
    pool = ConnectionPool.from_redis_kwargs(host="h", max_connections=3, timeout=0.5, retry=None)
    assert (pool.max_connections, pool.timeout, pool.settings.host) == (3, 0.5, "h")
    assert issubclass(PoolExhaustedError, SmartConnectionError)
    assert issubclass(PoolExhaustedError, rx.ConnectionError)


@pytest.mark.parametrize(
    ("kwargs", "first"),
    [
        # what the installed redis-py's Connection.on_connect sends first, for the same kwargs
        ({"username": "alice"}, ("HELLO", 3, "AUTH", "alice", "")),
        ({"username": "alice", "protocol": 2}, ("AUTH", "alice", "")),
        ({"password": ""}, ("HELLO", 3)),
        ({"password": "pw"}, ("HELLO", 3, "AUTH", "default", "pw")),
        ({"password": "pw", "protocol": 2}, ("AUTH", "pw")),
        ({"username": "u", "password": "p"}, ("HELLO", 3, "AUTH", "u", "p")),
        ({}, ("HELLO", 3)),
    ],
)
def test_handshake_authenticates_as_redis_py(
    kwargs: dict[str, Any], first: tuple[Any, ...]
) -> None:
    assert handshake_commands(ConnectionSettings(**kwargs))[0] == first


def test_handshake_with_credential_provider() -> None:
    provider = redis.UsernamePasswordCredentialProvider("bob", "pw")
    assert handshake_commands(ConnectionSettings(credential_provider=provider, protocol=2)) == [
        ("AUTH", "bob", "pw")
    ]
