"""Subprocess for the cross-process stampede test.

``python -m tests.integration._cache_worker KIND URL DB NAMESPACE GO_KEY CALLERS`` prints
``ready``, blocks on BLPOP GO_KEY (the parent's start signal), then has CALLERS callers
(threads for KIND ``sync``, tasks of an AsyncSmartClient's loop for ``async``: see
tests/integration/_cache_world.py) call one cached function on the same key, and prints
``done <results>``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.integration._cache_db import CountingDB
from tests.integration._cache_world import World


def main() -> None:
    kind, url, db_path, namespace, go_key, callers = sys.argv[1:7]
    db = CountingDB(Path(db_path), delay=0.1)
    world = World(kind)
    try:
        client = world.client(url=url)

        @world.cached(client=client, namespace=namespace, key="hot:{user_id}", ttl=60)
        def get_user(user_id: int) -> object:
            return db.get_user(user_id)

        print("ready", flush=True)
        client.blpop([go_key], timeout=60)
        results = world.concurrently([(get_user, 1)] * int(callers))
        print("done " + json.dumps({"results": results, "stats": get_user.stats()}), flush=True)
    finally:
        world.close()


if __name__ == "__main__":
    main()
