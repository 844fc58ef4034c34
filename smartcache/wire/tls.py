"""Client-side TLS contexts built from :class:`~smartcache.wire.settings.ConnectionSettings`.

Building an ``ssl.SSLContext`` (loading CA files, a client certificate) costs far more
than a connect, so one context is built per distinct set of TLS options and shared by
every connection using it, across all nodes of a topology. Options mirror redis-py's
``SSLConnection``.
"""

from __future__ import annotations

import ssl
import threading

from smartcache.exceptions import ConfigurationError
from smartcache.wire.settings import ConnectionSettings

__all__ = ["client_ssl_context"]

_TlsKey = tuple[object, ...]
_cache: dict[_TlsKey, ssl.SSLContext] = {}
_cache_lock = threading.Lock()


def _key(settings: ConnectionSettings) -> _TlsKey:
    return (
        settings.ssl_ca_certs,
        settings.ssl_ca_path,
        settings.ssl_ca_data,
        settings.ssl_certfile,
        settings.ssl_keyfile,
        settings.ssl_password,
        settings.verify_mode,
        settings.ssl_check_hostname,
        settings.ssl_include_verify_flags,
        settings.ssl_exclude_verify_flags,
        settings.ssl_min_version,
        settings.ssl_ciphers,
    )


def client_ssl_context(settings: ConnectionSettings) -> ssl.SSLContext:
    """Return the (shared) client ``SSLContext`` for ``settings``.

    ``settings.ssl_context`` wins when given. Otherwise the context starts from
    ``ssl.create_default_context()`` and applies ``ssl_cert_reqs``,
    ``ssl_check_hostname`` (forced off when certificates are not required, as redis-py
    does), CA locations, the client certificate, verify flags, minimum version and
    ciphers. Bad files raise :class:`~smartcache.exceptions.ConfigurationError`.
    """
    if settings.ssl_context is not None:
        return settings.ssl_context
    key = _key(settings)
    context = _cache.get(key)
    if context is not None:
        return context
    context = _build(settings)
    with _cache_lock:
        return _cache.setdefault(key, context)


def _build(settings: ConnectionSettings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    verify_mode = settings.verify_mode
    # check_hostname must be switched off before verify_mode may become CERT_NONE.
    context.check_hostname = settings.ssl_check_hostname and verify_mode != ssl.CERT_NONE
    context.verify_mode = verify_mode
    for flag in settings.ssl_include_verify_flags:
        context.verify_flags |= flag
    for flag in settings.ssl_exclude_verify_flags:
        context.verify_flags &= ~flag
    try:
        if settings.ssl_certfile or settings.ssl_keyfile:
            context.load_cert_chain(
                certfile=settings.ssl_certfile or "",
                keyfile=settings.ssl_keyfile,
                password=settings.ssl_password,
            )
        if settings.ssl_ca_certs or settings.ssl_ca_path or settings.ssl_ca_data:
            context.load_verify_locations(
                cafile=settings.ssl_ca_certs,
                capath=settings.ssl_ca_path,
                cadata=settings.ssl_ca_data,
            )
        if settings.ssl_min_version is not None:
            context.minimum_version = settings.ssl_min_version
        if settings.ssl_ciphers:
            context.set_ciphers(settings.ssl_ciphers)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot set up TLS: {exc}") from None
    return context
