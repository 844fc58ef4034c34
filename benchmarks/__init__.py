"""Benchmarks: smartcache side by side with redis-py in the same run, reported as ratios."""
