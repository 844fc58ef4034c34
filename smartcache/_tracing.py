"""OpenTelemetry spans (``smartcache[otel]``; off unless ``tracer_provider=`` is given).

One span per command (kind CLIENT, named by the operation, ``GET``) and one per pipeline
(``PIPELINE`` / ``MULTI``), with the attributes of the database conventions
(``db.system.name``, ``db.operation.name``, ``db.namespace``, ``server.address``,
``server.port``; on failure ``error.type``, ``db.response.status_code`` and an error
status). The redirects and retries a command rode through are events on its span
(``smartcache.redirect``: kind, target node, slot; ``smartcache.retry``: reason, back-off),
added by the retry flows' one counting hook. ``db.query.text`` only with
``trace_statements=True``, and then as the command name with every argument replaced by
``?``: values, keys and passwords never reach a span.
"""

from __future__ import annotations

import time
from typing import Any

from smartcache._metrics import Timed, peer_attributes, provider_from
from smartcache._otel import _error_type, _operation, _status_code
from smartcache.core.retry import Action, Decision
from smartcache.core.stats import retry_reason

__all__ = ["Tracing", "tracer_from"]


def tracer_from(tracer_provider: Any) -> Any:
    """The tracer provider a client was given (``True``: the global one), or ``None``."""
    return provider_from(
        tracer_provider, argument="tracer_provider", method="get_tracer", kind="TracerProvider"
    )


class Tracing(Timed):
    """The spans of one client."""

    def __init__(
        self,
        provider: Any,
        *,
        server_address: str,
        server_port: int,
        namespace: str,
        statements: bool,
    ) -> None:
        from opentelemetry import context, trace  # noqa: PLC0415  # only when on
        from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: PLC0415

        from smartcache import __version__  # noqa: PLC0415  # the package imports this module

        self._tracer = provider.get_tracer("smartcache", __version__)
        self._attach, self._detach = context.attach, context.detach
        self._in_context = trace.set_span_in_context
        self._current = trace.get_current_span
        self._client_kind = SpanKind.CLIENT
        self._status, self._error_code = Status, StatusCode.ERROR
        self._statements = statements
        self._base = {
            "db.system.name": "redis",
            "db.namespace": namespace,
            "server.address": server_address,
            "server.port": server_port,
        }

    def _attributes(self, name: str, args: tuple[Any, ...] | None) -> dict[str, Any]:
        attrs = {**self._base, "db.operation.name": name}
        if self._statements and args is not None:
            attrs["db.query.text"] = " ".join([name, *("?" * (len(args) - 1))])
        return attrs

    def begin(self, args: tuple[Any, ...]) -> Any:
        """Start the command's span and make it current (its redirects and retries are
        added to it)."""
        name = _operation(args[0])
        span = self._tracer.start_span(
            name, kind=self._client_kind, attributes=self._attributes(name, args)
        )
        return span, self._attach(self._in_context(span))

    def finish(
        self,
        handle: Any,
        name: Any,
        peer: str | None,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        """End the command's span (with the node that served it, and its error)."""
        span, token = handle
        try:
            if peer is not None:
                span.set_attributes(peer_attributes(peer))
            if error is not None:
                self._failed(span, error)
            span.end()
        finally:
            self._detach(token)

    def record(
        self, name: Any, seconds: float, error: BaseException | None, peer: str | None = None
    ) -> None:
        """Unused: commands go through :meth:`begin` / :meth:`finish`."""

    def record_batch(
        self, transaction: bool, size: int, seconds: float, error: BaseException | None
    ) -> None:
        """A pipeline's span, from its measured start to now."""
        name = "MULTI" if transaction else "PIPELINE"
        attrs = self._attributes(name, None)
        if size >= 2:
            attrs["db.operation.batch.size"] = size
        end = time.time_ns()
        span = self._tracer.start_span(
            name, kind=self._client_kind, attributes=attrs, start_time=end - int(seconds * 1e9)
        )
        if error is not None:
            self._failed(span, error)
        span.end(end_time=end)

    def _failed(self, span: Any, error: BaseException) -> None:
        span.set_attribute("error.type", _error_type(error))
        code = _status_code(error)
        if code is not None:
            span.set_attribute("db.response.status_code", code)
        span.set_status(self._status(self._error_code, type(error).__name__))  # no data

    def decided(self, decision: Decision, error: BaseException) -> None:
        """A retry flow's decision, as an event of the current command's span."""
        span = self._current()
        if not span.is_recording():
            return
        action = decision.action
        if action is Action.MOVED or action is Action.ASK:
            span.add_event(
                "smartcache.redirect",
                {
                    "smartcache.redirect.kind": action.value,
                    "smartcache.redirect.target": decision.target or "",
                    "smartcache.redirect.slot": -1 if decision.slot is None else decision.slot,
                },
            )
        elif action is Action.RETRY:
            span.add_event(
                "smartcache.retry",
                {
                    "smartcache.retry.reason": retry_reason(error),
                    "smartcache.retry.delay_s": decision.delay,
                },
            )
