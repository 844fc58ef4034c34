"""``python -m smartcache``: the same as the ``smartcache`` command."""

from __future__ import annotations

import sys

from smartcache.cli import main

sys.exit(main())
