"""Every python example in the caching docs runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from smartcache.cache import configure
from smartcache.testing import Standalone

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize(
    ("page", "at_least"), [("caching.md", 3), ("write-through.md", 1), ("write-behind.md", 1)]
)
def test_caching_doc_examples_run(redis_standalone: Standalone, page: str, at_least: int) -> None:
    doc = DOCS / page
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    assert len(blocks) >= at_least
    namespace: dict[str, Any] = {
        "url": redis_standalone.url,
        "db_get_user": lambda user_id: {"id": user_id},
    }
    try:
        for block in blocks:
            exec(compile(block, str(doc), "exec"), namespace)
    finally:
        if "client" in namespace:
            namespace["client"].close()
        configure(client=None)
