"""``make bench``: run every benchmark and print its table."""

from __future__ import annotations

from benchmarks import bench_key_slot

print("== key_slot ==")
bench_key_slot.main()
