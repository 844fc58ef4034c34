"""Cache key construction: namespace + function identity + a stable digest of the arguments.

Pure. The digest is blake2b over a canonical, type-tagged encoding of the *bound* arguments
(``inspect.signature(...).bind`` + ``apply_defaults``), so ``f(1)``, ``f(x=1)`` and ``f()`` with
default ``x=1`` share a key, and keys are identical across processes and runs (``hash()`` is
salted per process and is never used). Templates such as ``"user:{user_id}"`` name the key
explicitly, so other code (and ``invalidate``) can find it.
"""

from __future__ import annotations

import hashlib
import inspect
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["KeyBuilder", "canonical_bytes", "compose_key", "template_fields"]

_SKIP_DEFAULT = ("self", "cls")


def canonical_bytes(value: Any) -> bytes:
    """A deterministic, type-tagged encoding of ``value`` (TypeError for unsupported types).

    Supported: None, bool, int, float, str, bytes, tuple/list, dict (sorted), set/frozenset
    (sorted), and objects with a ``__cache_key__()`` method returning a supported value.
    """
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: list[bytes]) -> None:
    # bool before int: True == 1 but must not share a key with it.
    if value is None:
        out.append(b"N")
    elif isinstance(value, bool):
        out.append(b"T" if value else b"F")
    elif isinstance(value, int):
        out.append(b"i%d;" % value)
    elif isinstance(value, float):
        out.append(b"f" + value.hex().encode() + b";")
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        out.append(b"s%d:" % len(data) + data)
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        out.append(b"b%d:" % len(data) + data)
    elif isinstance(value, list | tuple):
        out.append(b"l%d[" % len(value))
        for item in value:
            _encode(item, out)
        out.append(b"]")
    elif isinstance(value, Mapping):
        items = sorted((canonical_bytes(k), canonical_bytes(v)) for k, v in value.items())
        out.append(b"d%d{" % len(items))
        for k, v in items:
            out.append(k + v)
        out.append(b"}")
    elif isinstance(value, set | frozenset):
        members = sorted(canonical_bytes(v) for v in value)
        out.append(b"S%d{" % len(members) + b"".join(members) + b"}")
    elif hasattr(value, "__cache_key__"):
        out.append(b"o")
        _encode(value.__cache_key__(), out)
    else:
        raise TypeError(
            f"cannot build a cache key from {type(value).__qualname__}; give it a "
            "__cache_key__() method, or pass key='template:{arg}' to @cached"
        )


def template_fields(template: str) -> list[str]:
    """The argument names a key template refers to (``"user:{user_id}"`` -> ``["user_id"]``)."""
    fields = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            fields.append(name.split(".", 1)[0].split("[", 1)[0])
    return fields


def compose_key(namespace: str, version: int | str | None, body: str) -> str:
    """``namespace:v<version>:body`` (parts that are empty are left out)."""
    parts = [namespace] if namespace else []
    if version not in (None, "", 0):
        parts.append(f"v{version}")
    parts.append(body)
    return ":".join(parts)


class KeyBuilder:
    """Builds the cache key of one function's calls; all inspection happens at wrap time."""

    __slots__ = ("_digest_names", "_name_tags", "_positional", "_prefix", "_signature", "_template")

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        namespace: str = "sc",
        version: int | str | None = None,
        template: str | None = None,
        ignore: Iterable[str] = _SKIP_DEFAULT,
    ) -> None:
        self._signature = inspect.signature(func)
        params = self._signature.parameters
        self._template = template
        if template is not None:
            unknown = [f for f in template_fields(template) if f not in params]
            if unknown:
                raise ValueError(f"key template {template!r} names unknown arguments {unknown}")
            self._prefix = compose_key(namespace, version, "")
        else:
            identity = f"{func.__module__}.{func.__qualname__}"
            self._prefix = compose_key(namespace, version, identity) + ":"
        skip = set(ignore)
        self._digest_names = tuple(n for n in params if n not in skip)
        self._name_tags = tuple(canonical_bytes(n) for n in self._digest_names)
        # Calls that pass every parameter positionally skip Signature.bind (the common case).
        simple = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self._positional: tuple[str, ...] | None = (
            tuple(params) if all(p.kind in simple for p in params.values()) else None
        )

    def bound(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults applied."""
        names = self._positional
        if names is not None and not kwargs and len(args) == len(names):
            return dict(zip(names, args, strict=True))
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound.arguments

    def render(self, arguments: Mapping[str, Any]) -> str:
        """The key for already-bound ``arguments``."""
        if self._template is not None:
            return self._prefix + self._template.format_map(arguments)
        out: list[bytes] = []
        for name, tag in zip(self._digest_names, self._name_tags, strict=True):
            out.append(tag)
            _encode(arguments[name], out)
        encoded = b"".join(out)
        return self._prefix + hashlib.blake2b(encoded, digest_size=16).hexdigest()

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The key for a call ``f(*args, **kwargs)``."""
        return self.render(self.bound(args, kwargs))
