"""``make bench``: run every benchmark and print its table."""

from __future__ import annotations

import asyncio

from benchmarks import bench_async, bench_cache, bench_client, bench_key_slot, bench_write

print("== key_slot ==")
bench_key_slot.main()
print("\n== SmartClient vs redis-py ==")
print(bench_client.table(bench_client.run(20000, 7)))
print("\n== AsyncSmartClient vs redis.asyncio, coredis, valkey-glide ==")
print(bench_async.table(asyncio.run(bench_async.run(5000, 5))))
print("\n== @cached hit latency ==")
bench_cache.main()
print("\n== write-behind / write-through latency, flusher throughput ==")
bench_write.main()
