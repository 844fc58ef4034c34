"""Every python example in docs/caching.md runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from smartcache.cache import configure
from smartcache.testing import Standalone

DOC = Path(__file__).resolve().parents[2] / "docs" / "caching.md"


def test_caching_doc_examples_run(redis_standalone: Standalone) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 3
    namespace: dict[str, Any] = {
        "url": redis_standalone.url,
        "db_get_user": lambda user_id: {"id": user_id},
    }
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    finally:
        if "client" in namespace:
            namespace["client"].close()
        configure(client=None)
