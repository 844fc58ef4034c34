"""SmartClient's shell: the synchronous twin of :mod:`smartcache.asyncio`, module for module.

``client`` (SmartClient), ``_cluster`` (slot routing over a cluster), ``_sentinel`` and
``_sentinel_*`` (Sentinel discovery and failover), ``_pipeline``, ``_pubsub``,
``_monitor``, ``_pool`` and ``_connection`` (sockets + hiredis). Every decision they carry
out is made in :mod:`smartcache.core`; what the two shells share lives at the package top
(``smartcache._client_common``, ``smartcache._slot_routing``...) and in
:mod:`smartcache.wire`.
"""

from __future__ import annotations

from smartcache.sync.client import SmartClient

__all__ = ["SmartClient"]
