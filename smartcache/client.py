"""``from smartcache.client import SmartClient`` keeps working: the class lives in
:mod:`smartcache.sync.client` (import it from :mod:`smartcache`)."""

from __future__ import annotations

from smartcache.sync.client import SmartClient

__all__ = ["SmartClient"]
