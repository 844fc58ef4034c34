"""Scripts that also work inside smartcache pipelines.

redis-py's ``Script.__call__`` preloads a script only for its *own* pipeline class; inside
another pipeline an ``EVALSHA`` of a script the server has not seen fails with NOSCRIPT. These
subclasses register themselves with smartcache pipelines too, which load missing scripts
(``SCRIPT EXISTS``, then ``SCRIPT LOAD`` — on every primary of a cluster) before executing.
"""

from __future__ import annotations

from typing import Any

from redis.commands.core import AsyncScript, Script

__all__ = ["PipelineAwareAsyncScript", "PipelineAwareScript", "missing_scripts"]


class PipelineAwareScript(Script):
    """``redis.commands.core.Script`` that smartcache pipelines preload."""

    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        target = self.registered_client if client is None else client
        scripts = getattr(target, "scripts", None)
        if isinstance(scripts, set):
            scripts.add(self)
        return super().__call__(keys, args, client)


class PipelineAwareAsyncScript(AsyncScript):
    """``redis.commands.core.AsyncScript`` that smartcache async pipelines preload."""

    async def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        target = self.registered_client if client is None else client
        scripts = getattr(target, "scripts", None)
        if isinstance(scripts, set):
            scripts.add(self)
            # Queue the EVALSHA; a pipeline's execute_command returns the pipeline.
            return target.evalsha(self.sha, len(keys or []), *(list(keys or []) + list(args or [])))
        return await super().__call__(keys, args, client)


def missing_scripts(scripts: list[Any], exists: list[Any]) -> list[Any]:
    """The scripts whose ``SCRIPT EXISTS`` answer was false."""
    return [script for script, there in zip(scripts, exists, strict=True) if not there]
