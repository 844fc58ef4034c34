"""The generated differential check (issue 11 part 3).

Every public command method of the INSTALLED redis-py's command mixins is enumerated by
introspection (``methods``), given representative arguments derived from its signature and
the server's own ``COMMAND DOCS`` (``recipes``), called through redis-py and through
SmartClient / AsyncSmartClient on the same server with the same fresh data (``runner``),
and compared by value, exact type and exception. Known discrepancies live in one reviewed
allow-list, ``allowlist.toml`` (``allowlist``); the coverage and every divergence are
printed at the end of the pytest run and written to ``.smartcache/differential-report.json``
(``report``). The pytest entry is ``tests/integration/test_differential.py``.
"""
