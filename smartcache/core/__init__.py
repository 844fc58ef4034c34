"""The I/O-free core: pure functions and immutable values shared by the sync and async clients.

Nothing in this package may import ``socket``, ``ssl``, ``asyncio``, ``threading`` or call
``time.sleep``; ``tests/unit/test_core_is_io_free.py`` keeps it so.
"""
