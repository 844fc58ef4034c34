"""Opening sockets to a node: TCP (or Unix), socket options, TLS, kernel-level timeouts.

Knows nothing of RESP; :mod:`smartcache.sync._connection` runs the protocol on top.
"""

from __future__ import annotations

import socket
import ssl
import struct
from typing import Final

from smartcache.wire.settings import ConnectionSettings
from smartcache.wire.tls import client_ssl_context

__all__ = ["open_socket", "set_timeout", "tune_socket"]

#: redis-py's default TCP keepalive tuning (``redis._defaults``), applied when
#: ``socket_keepalive`` is on and no ``socket_keepalive_options`` are given.
_DEFAULT_KEEPALIVE: Final[tuple[tuple[int, int], ...]] = tuple(
    (opt, val)
    for opt, val in (
        (getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None)), 30),
        (getattr(socket, "TCP_KEEPINTVL", None), 5),
        (getattr(socket, "TCP_KEEPCNT", None), 3),
    )
    if isinstance(opt, int)
)


def open_socket(settings: ConnectionSettings) -> socket.socket:
    """Connect (TCP or Unix socket, then TLS if configured) and apply the read timeout.

    Raises ``OSError`` (``TimeoutError`` for the connect timeout); the caller names the node.
    """
    if settings.unix_socket_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(settings.socket_connect_timeout)
            sock.connect(settings.unix_socket_path)
        except BaseException:
            sock.close()
            raise
    else:
        sock = _open_tcp(settings)
    if settings.ssl:
        try:
            context = client_ssl_context(settings)
            server_hostname = settings.host if context.check_hostname else None
            sock = context.wrap_socket(sock, server_hostname=server_hostname)
        except BaseException:
            sock.close()
            raise
    set_timeout(sock, settings.socket_timeout)
    return sock


def _open_tcp(settings: ConnectionSettings) -> socket.socket:
    error: OSError | None = None
    for family, kind, proto, _name, sockaddr in socket.getaddrinfo(
        settings.host, settings.port, 0, socket.SOCK_STREAM
    ):
        sock = socket.socket(family, kind, proto)
        try:
            tune_socket(sock, settings)
            sock.settimeout(settings.socket_connect_timeout)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise error or OSError(f"no address found for {settings.host}")


def tune_socket(sock: socket.socket | None, settings: ConnectionSettings) -> None:
    """``TCP_NODELAY``, and keepalive as redis-py sets it, on a TCP socket (the sync
    connections before connecting, the asyncio ones on their transport's socket); nothing
    on a Unix socket or ``None``."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if settings.socket_keepalive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        options = settings.socket_keepalive_options
        for opt, val in _DEFAULT_KEEPALIVE if options is None else options:
            sock.setsockopt(socket.IPPROTO_TCP, opt, val)


def set_timeout(sock: socket.socket, timeout: float | None) -> None:
    """Apply the read/write timeout of a connected socket.

    Plain TCP and Unix sockets stay in blocking mode with the timeout set in the kernel
    (``SO_RCVTIMEO``/``SO_SNDTIMEO``), so a read is one ``recv`` system call; Python's own
    timeout mode would add a failed ``recv`` and a ``poll`` to every reply that is not
    already there (measured: ~1.5 us per round trip here). An expired kernel timeout
    surfaces as ``BlockingIOError``. TLS sockets keep Python's timeout mode: OpenSSL would
    retry a kernel-timed-out read forever on a blocking socket.
    """
    if isinstance(sock, ssl.SSLSocket):
        sock.settimeout(timeout)
        return
    sock.settimeout(None)
    if timeout is None:
        seconds = micros = 0  # a zero timeval means "wait forever"
    else:
        seconds = int(timeout)
        micros = max(int((timeout - seconds) * 1_000_000), 1 if seconds == 0 else 0)
    timeval = struct.pack("@ll", seconds, micros)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
