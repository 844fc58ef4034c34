"""Subprocess for the cross-process stampede test.

``python -m tests.integration._cache_worker URL DB NAMESPACE GO_KEY THREADS`` prints
``ready``, blocks on BLPOP GO_KEY (the parent's start signal), runs THREADS threads calling
one cached function on the same key, then prints ``done <results>``.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from smartcache import SmartClient
from smartcache.cache import cached
from tests.integration._cache_db import CountingDB


def main() -> None:
    url, db_path, namespace, go_key, threads = sys.argv[1:6]
    db = CountingDB(Path(db_path), delay=0.1)
    with SmartClient.from_url(url) as client:

        @cached(client=client, namespace=namespace, key="hot:{user_id}", ttl=60)
        def get_user(user_id: int) -> object:
            return db.get_user(user_id)

        results: list[object] = []
        print("ready", flush=True)
        client.blpop([go_key], timeout=60)

        def call() -> None:
            results.append(get_user(1))

        workers = [threading.Thread(target=call) for _ in range(int(threads))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        print("done " + json.dumps({"results": results, "stats": get_user.stats()}), flush=True)


if __name__ == "__main__":
    main()
