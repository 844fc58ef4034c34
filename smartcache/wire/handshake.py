"""The greeting every connection sends, sync or asyncio: one function, one sequence."""

from __future__ import annotations

from typing import Any

from smartcache.wire.settings import ConnectionSettings

__all__ = ["handshake_commands"]


def handshake_commands(settings: ConnectionSettings) -> list[tuple[Any, ...]]:
    """The commands that greet a node (HELLO/AUTH, CLIENT SETNAME, SELECT, READONLY).

    Both the sync :class:`~smartcache.wire.Connection` and the asyncio connection send
    exactly this sequence, pipelined in one write.
    """
    username, password = settings.username, settings.password
    if settings.credential_provider is not None:
        credentials = tuple(settings.credential_provider.get_credentials())
        username, password = (None, credentials[0]) if len(credentials) == 1 else credentials
    commands: list[tuple[Any, ...]] = []
    if settings.resp_version == 3:
        hello: tuple[Any, ...] = ("HELLO", 3)
        if password is not None:
            hello += ("AUTH", username or "default", password)
        if settings.client_name:
            hello += ("SETNAME", settings.client_name)
        commands.append(hello)
    else:
        if password is not None:
            commands.append(("AUTH", username, password) if username else ("AUTH", password))
        if settings.client_name:
            commands.append(("CLIENT", "SETNAME", settings.client_name))
    if settings.db:
        commands.append(("SELECT", settings.db))
    if settings.readonly:
        commands.append(("READONLY",))
    return commands
