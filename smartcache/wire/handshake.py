"""The greeting every connection sends, sync or asyncio: one function, one sequence."""

from __future__ import annotations

from typing import Any

from redis.credentials import UsernamePasswordCredentialProvider

from smartcache.wire.settings import ConnectionSettings

__all__ = ["credentials_of", "handshake_commands"]


def credentials_of(settings: ConnectionSettings) -> tuple[str, ...] | None:
    """What the handshake authenticates with: ``(password,)``, ``(username, password)``, or
    ``None`` for no AUTH at all.

    The rule is the installed redis-py's (``Connection.on_connect``): a credential provider
    is asked at every connect; otherwise a ``username`` or a non-empty ``password`` means
    AUTH, through redis-py's own ``UsernamePasswordCredentialProvider``, so a user name
    without a password (an ACL user with ``nopass``) sends ``AUTH <username> ""``.
    """
    provider = settings.credential_provider
    if provider is None:
        if not (settings.username or settings.password):
            return None
        provider = UsernamePasswordCredentialProvider(settings.username, settings.password)
    return tuple(provider.get_credentials())


def handshake_commands(settings: ConnectionSettings) -> list[tuple[Any, ...]]:
    """The commands that greet a node (HELLO/AUTH, CLIENT SETNAME, SELECT, READONLY).

    Both the sync :class:`~smartcache.wire.Connection` and the asyncio connection send
    exactly this sequence, pipelined in one write.
    """
    credentials = credentials_of(settings)
    commands: list[tuple[Any, ...]] = []
    if settings.resp_version == 3:
        hello: tuple[Any, ...] = ("HELLO", 3)
        if credentials:
            # a password alone authenticates the "default" user, as redis-py sends it
            user_and_password = ("default", *credentials) if len(credentials) == 1 else credentials
            hello += ("AUTH", *user_and_password)
        if settings.client_name:
            hello += ("SETNAME", settings.client_name)
        commands.append(hello)
    else:
        if credentials:
            commands.append(("AUTH", *credentials))
        if settings.client_name:
            commands.append(("CLIENT", "SETNAME", settings.client_name))
    if settings.db:
        commands.append(("SELECT", settings.db))
    if settings.readonly:
        commands.append(("READONLY",))
    return commands
