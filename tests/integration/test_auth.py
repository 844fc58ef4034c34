"""Authentication as redis-py does it: ``username=`` alone (ACL ``nopass`` users), ``auth()``,
``requirepass`` set at run time; refusals raise ``AuthenticationError`` at once.

Every scenario runs on SmartClient and AsyncSmartClient and on the redis-py client each
stands in for (``redis.Redis`` / ``redis.asyncio.Redis``), on the same private server, and
their outcomes are compared. The redis-py reference gets one retry without backoff so its
own retry loop (which re-sends after an ``AuthenticationError``, a ``ConnectionError``
subclass) does not slow the run; its outcomes are the same with the default retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio.retry
import redis.exceptions as rx
import redis.retry
from redis.backoff import NoBackoff

from smartcache.testing import Standalone

pytestmark = pytest.mark.dropin

PASSWORD = "temp_pass"
#: seconds within which a refused command must fail (the retry budget is 10 s)
FAST = 1.0


def _retry(kind: str) -> Any:
    if kind == "sync":
        return redis.retry.Retry(NoBackoff(), 1)
    return redis.asyncio.retry.Retry(NoBackoff(), 1)


class Run:
    """Outcomes of one client's run, and how long each refused step took."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, Any]] = []
        self.slow: list[tuple[str, float]] = []

    def step(self, label: str, fn: Callable[[], Any]) -> Any:
        start = time.monotonic()
        try:
            value = fn()
        except rx.RedisError as exc:
            elapsed = time.monotonic() - start
            if elapsed > FAST:
                self.slow.append((label, elapsed))
            # The class is the contract; messages carry the node's address for us.
            self.outcomes.append((label, type(exc).__name__))
            return None
        self.outcomes.append((label, value))
        return value


@pytest.fixture
def server(redis_topologies: Any) -> Iterator[Standalone]:
    """A private server: these tests set ``requirepass`` and ACL users on it."""
    yield redis_topologies.standalone()


def _admin(server: Standalone) -> redis.Redis:
    """A redis-py client that authenticates whatever ``requirepass`` is now."""
    once = redis.retry.Retry(NoBackoff(), 0)
    plain = redis.Redis(host="127.0.0.1", port=server.port, retry=once)
    try:
        plain.ping()
        return plain
    except rx.AuthenticationError:
        plain.close()
        return redis.Redis(host="127.0.0.1", port=server.port, password=PASSWORD, retry=once)


def _reset(server: Standalone) -> None:
    admin = _admin(server)
    try:
        admin.config_set("requirepass", "")
        for user in admin.acl_users():
            if user not in (b"default", "default"):
                admin.acl_deluser(user)
        admin.acl_log_reset()
    finally:
        admin.close()


def _auth_flow(make: Callable[..., Any], server: Standalone) -> Run:
    """redis-py's own ``test_auth``: AUTH before a password exists, requirepass set at run
    time, AUTH as default and as an ACL user, a wrong password, then a lost connection."""
    run = Run()
    r = make(host="127.0.0.1", port=server.port)
    try:
        run.step("auth without password set", lambda: r.auth("some_password"))
        run.step("auth user without password set", lambda: r.auth("some_password", "some_user"))
        run.step("requirepass", lambda: r.config_set("requirepass", PASSWORD))
        run.step("auth default by name", lambda: r.auth(PASSWORD, "default"))
        run.step("auth default", lambda: r.auth(PASSWORD))
        run.step(
            "setuser",
            lambda: r.acl_setuser(
                "redis-py-auth", enabled=True, passwords=["+strong_password"], commands=["+acl"]
            ),
        )
        run.step("auth user", lambda: r.auth(username="redis-py-auth", password="strong_password"))
        run.step("whoami", r.acl_whoami)
        run.step("auth wrong password", lambda: r.auth(username="redis-py-auth", password="wrong"))
        # AUTH is not remembered: a connection opened after the old one is lost has no
        # credentials, and the server refuses it.
        admin = _admin(server)
        admin.client_kill_filter(_type="normal", skipme=True)
        admin.close()
        run.step("ping on a new connection", r.ping)
        run.step("pipeline on a new connection", lambda: r.pipeline().ping().execute())
    finally:
        with_suppressed_close(r)
        _reset(server)
    return run


def with_suppressed_close(client: Any) -> None:
    try:
        if hasattr(client, "aclose"):
            client.aclose()
        else:
            client.close()
    except rx.RedisError:
        pass


def _refused_clients(
    make: Callable[..., Any], server: Standalone, protocol: int, *, lazy: bool = False
) -> Run:
    """With requirepass set: no password, a wrong password, the right one. ``lazy``: also
    check that making a client with a wrong password raises nothing (the first command
    does), as with redis-py (the async harness initialises its clients as it makes them)."""
    run = Run()
    admin = _admin(server)
    admin.config_set("requirepass", PASSWORD)
    admin.close()
    base = {"host": "127.0.0.1", "port": server.port, "protocol": protocol}
    try:
        run.step("no password", lambda: make(**base).ping())
        run.step("wrong password", lambda: make(**base, password="wrong").ping())
        if lazy:  # as redis-py: making it connects to nothing; the first command is refused
            made: dict[str, Any] = {}
            run.step(
                "wrong password, made",
                lambda: bool(made.setdefault("c", make(**base, password="wrong"))),
            )
            run.step("wrong password, first command", lambda: made["c"].ping())  # noqa: PLW0108
        run.step("right password", lambda: make(**base, password=PASSWORD).ping())
        run.step(
            "right password as default",
            lambda: make(**base, username="default", password=PASSWORD).ping(),
        )
    finally:
        _reset(server)
    return run


def _nopass_user(make: Callable[..., Any], server: Standalone, protocol: int) -> Run:
    """``username=`` without a password: an ACL ``nopass`` user, CLIENT KILL USER, ACL LOG."""
    run = Run()
    admin = _admin(server)
    admin.acl_setuser("np", enabled=True, nopass=True, commands=["+@all"], keys=["*"])
    admin.acl_setuser("np_limited", enabled=True, nopass=True, commands=["+@all", "-get"])
    admin.acl_log_reset()
    base = {"host": "127.0.0.1", "port": server.port, "protocol": protocol}
    try:
        r = make(**base, username="np")
        run.step("whoami", r.acl_whoami)
        run.step("set", lambda: r.set("k", "v"))
        run.step("kill user", lambda: admin.client_kill_filter(user="np") >= 1)
        limited = make(**base, username="np_limited")
        run.step("refused command", lambda: limited.get("k"))
        run.step(
            "acl log names the user",
            lambda: [(e["username"], e["object"]) for e in admin.acl_log()],
        )
        run.step("reconnects as the user", r.acl_whoami)
    finally:
        admin.close()
        _reset(server)
    return run


def _compare(smart: Run, reference: Run) -> None:
    assert smart.outcomes == reference.outcomes
    assert not smart.slow, f"refusals must surface at once: {smart.slow}"


def test_auth_flow_as_redis_py(
    server: Standalone, client_factory: Any, redis_py_factory: Any
) -> None:
    reference = _auth_flow(
        lambda **kw: redis_py_factory(retry=_retry(redis_py_factory.kind), **kw), server
    )
    smart = _auth_flow(client_factory, server)
    _compare(smart, reference)
    assert dict(smart.outcomes)["auth wrong password"] == "AuthenticationError"
    assert dict(smart.outcomes)["ping on a new connection"] == "AuthenticationError"


@pytest.mark.parametrize("protocol", [2, 3])
def test_requirepass_refuses_fast(
    server: Standalone, client_factory: Any, redis_py_factory: Any, protocol: int
) -> None:
    lazy = client_factory.kind == "sync"
    reference = _refused_clients(
        lambda **kw: redis_py_factory(retry=_retry(redis_py_factory.kind), **kw),
        server,
        protocol,
        lazy=lazy,
    )
    smart = _refused_clients(client_factory, server, protocol, lazy=lazy)
    _compare(smart, reference)
    assert dict(smart.outcomes)["no password"] == "AuthenticationError"
    assert dict(smart.outcomes)["wrong password"] == "AuthenticationError"


@pytest.mark.parametrize("protocol", [2, 3])
def test_username_without_password(
    server: Standalone, client_factory: Any, redis_py_factory: Any, protocol: int
) -> None:
    reference = _nopass_user(redis_py_factory, server, protocol)
    smart = _nopass_user(client_factory, server, protocol)
    _compare(smart, reference)
    assert dict(smart.outcomes)["whoami"] in (b"np", "np")
    assert dict(smart.outcomes)["refused command"] == "NoPermissionError"
