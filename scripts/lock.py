"""`make lock`: refresh the committed dependency locks with uv.

- ``requirements/dev.lock``: everything `make test` / `make demo` install (the ``dev`` and
  ``server`` extras), at the newest versions the ranges in ``pyproject.toml`` admit.
- ``requirements/redis-oldest.lock``: the same set with redis-py held at the lower bound
  of its range in ``pyproject.toml`` (the drop-in tests run against both ends).

The library's own requirements stay ranges; only what the project's checks run on is
pinned. Run with the ``uv`` of ``.venv-tools`` (the Makefile installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQ = ROOT / "requirements"
PYTHON_VERSION = "3.11"  # the oldest Python smartcache supports; the lock is universal


def redis_lower_bound() -> str:
    """The ``redis>=X`` lower bound declared in pyproject.toml."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        match = re.fullmatch(r"redis\s*>=\s*([0-9][0-9.]*)\s*(,.*)?", dep)
        if match:
            return match.group(1)
    sys.exit("pyproject.toml declares no `redis>=X` requirement")


def compile_lock(output: Path, *extra: str) -> None:
    uv = Path(sys.executable).parent / "uv"
    cmd = [
        str(uv if uv.exists() else shutil.which("uv") or "uv"),
        "pip",
        "compile",
        "pyproject.toml",
        "--extra",
        "dev",
        "--extra",
        "server",
        "--universal",
        "--python-version",
        PYTHON_VERSION,
        "--quiet",
        "--no-header",
        "-o",
        str(output.relative_to(ROOT)),
        *extra,
    ]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def main() -> int:
    REQ.mkdir(exist_ok=True)
    compile_lock(REQ / "dev.lock", "--upgrade")
    oldest = redis_lower_bound()
    override = REQ / "redis-oldest.in"
    override.write_text(
        "# written by scripts/lock.py: redis-py at the lower bound of pyproject.toml's range\n"
        f"redis=={oldest}\n"
    )
    # the newest lock as the starting point, so only redis-py (and what it pulls) differs
    shutil.copyfile(REQ / "dev.lock", REQ / "redis-oldest.lock")
    compile_lock(REQ / "redis-oldest.lock", "--override", str(override.relative_to(ROOT)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
