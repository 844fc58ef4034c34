from __future__ import annotations

import subprocess
import sys

import pytest

from smartcache.cache._keys import KeyBuilder, canonical_bytes, compose_key, template_fields


def load_user(user_id: int, fields: tuple[str, ...] = ("name",), *, active: bool = True) -> None:
    return None


def test_defaults_and_keywords_share_a_key() -> None:
    kb = KeyBuilder(load_user)
    assert kb((1,), {}) == kb((), {"user_id": 1}) == kb((1, ("name",)), {"active": True})
    assert kb((1,), {}) != kb((2,), {})
    assert kb((1,), {}).startswith("sc:tests.unit.test_cache_keys.load_user:")


def test_type_tags_keep_equal_looking_values_apart() -> None:
    values = [1, True, 1.0, "1", b"1", [1], (1,), None, {"1": 1}, {1}]
    encodings = {canonical_bytes(v) for v in values}
    assert len(encodings) == len(values) - 1  # list and tuple encode alike on purpose


def test_dict_and_set_order_do_not_matter() -> None:
    assert canonical_bytes({"a": 1, "b": 2}) == canonical_bytes({"b": 2, "a": 1})
    assert canonical_bytes({3, 1, 2}) == canonical_bytes({2, 3, 1})


def test_unsupported_type_says_what_to_do() -> None:
    with pytest.raises(TypeError, match="__cache_key__"):
        canonical_bytes(object())

    class Point:
        def __cache_key__(self) -> tuple[int, int]:
            return (1, 2)

    assert canonical_bytes(Point()) == b"o" + canonical_bytes((1, 2))


def test_key_is_stable_across_processes() -> None:
    code = (
        "from smartcache.cache._keys import KeyBuilder\n"
        "def f(a, b=2): pass\n"
        "f.__module__ = 'm'\n"
        "print(KeyBuilder(f)(('x', {'k': [1.5, None]}), {}))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(runs) == 1


def test_template_namespace_and_version() -> None:
    kb = KeyBuilder(load_user, template="user:{user_id}")
    assert kb((1000,), {}) == "sc:user:1000"
    assert KeyBuilder(load_user, template="user:{user_id}", version=2)((7,), {}) == "sc:v2:user:7"
    assert KeyBuilder(load_user, template="u:{user_id}", namespace="")((7,), {}) == "u:7"
    assert template_fields("a:{x}:{y.z}:{w[0]}") == ["x", "y", "w"]
    with pytest.raises(ValueError, match="unknown arguments"):
        KeyBuilder(load_user, template="user:{uid}")


def test_version_changes_default_keys() -> None:
    assert KeyBuilder(load_user, version=1)((1,), {}) != KeyBuilder(load_user, version=2)((1,), {})
    assert compose_key("ns", None, "b") == "ns:b"


def test_self_is_ignored_for_methods() -> None:
    class Repo:
        def get(self, item_id: int) -> None:
            return None

    kb = KeyBuilder(Repo.get)
    assert kb((Repo(), 1), {}) == kb((Repo(), 1), {})
