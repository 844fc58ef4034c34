"""Regenerate the example output in docs/operations.md on a local cluster it starts itself.

``.venv/bin/python scripts/operations_output.py``: a 3-primary, 3-replica cluster, 20,000
keys (JSON strings with a TTL and hashes), one 60 KB value, 3,000 reads; then ``doctor``,
``top --once``, ``cluster reshard`` and ``cluster rebalance``, each printed with its exit
code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from smartcache import SmartClient
from smartcache.testing import Cluster

ENV = {**os.environ, "COLUMNS": "110"}


def run(*args: str) -> None:
    """Run ``smartcache ARGS`` and print it as a terminal session would show it."""
    done = subprocess.run(
        [sys.executable, "-m", "smartcache", *args],
        capture_output=True,
        text=True,
        env=ENV,
        check=False,
    )
    print("$ smartcache " + " ".join(args))
    print(done.stdout.rstrip())
    if done.stderr.strip():
        print(done.stderr.rstrip()[-1500:])
    print(f"(exit code {done.returncode})\n")


def main() -> None:
    """Start the cluster, fill it, run the commands."""
    state = tempfile.mkdtemp(prefix="smartcache-ops-")
    with Cluster(3, 1) as cluster:
        c = SmartClient(startup_nodes=cluster.startup_nodes)
        pipe = c.pipeline(transaction=False)
        for i in range(20000):
            if i % 2:
                pipe.hset(f"user:{i}", mapping={"id": i, "name": f"user-{i}"})
            else:
                user = {"id": i, "name": f"user-{i}", "email": f"user-{i}@example.com"}
                pipe.set(f"session:{i}", json.dumps(user), ex=3600)
        pipe.execute()
        c.set("report:2026", "x" * 60000)
        for i in range(3000):
            c.get(f"session:{i * 2}")
        c.close()
        run("doctor", cluster.url, "--color", "never")
        run("top", cluster.url, "--once", "--interval", "0.5")
        a, b = cluster.primaries()[:2]
        reshard = ["--yes", "--state", f"{state}/reshard.json"]
        run(
            "cluster",
            "reshard",
            cluster.url,
            "--slots",
            "1000",
            "--from",
            a.address,
            "--to",
            b.address,
            *reshard,
        )
        run("cluster", "rebalance", cluster.url, "--dry-run", "--state", f"{state}/dry.json")
        run("cluster", "rebalance", cluster.url, "--yes", "--state", f"{state}/rebalance.json")


if __name__ == "__main__":
    main()
