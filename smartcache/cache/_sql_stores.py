"""Ready stores for write-through and write-behind: SQLite (stdlib) and SQLAlchemy 2.x.

Every adapter keeps one row per key in a table (``smartcache_store`` by default)::

    key  (text, primary key) | value (serialized bytes) | version (text) | deleted (flag)

and applies a :class:`~smartcache.cache.StoreItem` only when it is newer than the row: its
``version`` is ``None``, the row's ``version`` is ``NULL``, or its ``version`` sorts after the
row's. A delete leaves a versioned tombstone (``deleted`` set, ``value`` NULL), so a late,
older write cannot bring the key back, while a newer write revives it. Each ``write_many`` /
``delete_many`` call is one transaction; errors from the database propagate unchanged (the
caller retries), and applying the same item twice is harmless.

Tombstones do not pile up: a store purges those older than ``tombstone_horizon`` (7 days by
default; their versions are stream versions, which carry their time) on a write at most
once per ``purge_interval``, or when ``purge_tombstones()`` is called, and records the
horizon it purged to in a small meta table. From then on a versioned write older than that
horizon, to a key with no row, is refused with :class:`~smartcache.exceptions.StaleWriteError`
(the tombstone that would have beaten it may be gone), so purging never lets an old
replayed write bring a deleted key back; within the horizon the tombstone itself decides.

The read helpers (``get``, ``get_many``, ``items``, ``version_of``) see live rows only (except
``version_of``, which also reports a tombstone's version); they make the store usable as the
loader of a cached function.

SQLAlchemy is imported only when a SQLAlchemy store is built: ``pip install
'smartcache[sqlalchemy]'``.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, TypeVar

from smartcache.cache._codec import Serializer, builtin_name, get_serializer
from smartcache.cache._store import StoreItem
from smartcache.exceptions import ConfigurationError, InvalidArgumentError, StaleWriteError

if TYPE_CHECKING:
    import asyncio

    from sqlalchemy import URL, Engine, Executable, Table
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["AsyncSQLAlchemyStore", "SQLAlchemyStore", "SQLiteStore"]

_TABLE_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_IN_CHUNK: Final = 500  # keys per ``IN (...)`` query: well under every backend's bind limit
_INSTALL_HINT: Final = "pip install 'smartcache[sqlalchemy]'"

#: tombstones are kept this long (seconds) by default
DEFAULT_TOMBSTONE_HORIZON: Final = 7 * 86400.0
#: the meta row holding the version up to which tombstones were purged
_PURGED: Final = "purged_before"
#: only versions of this shape (:func:`~smartcache.cache.stream_version`, which carries the
#: time of the change) are purged by age and refused past the horizon; other version
#: schemes are left alone (their tombstones are kept, their writes never refused)
_TIMED: Final = re.compile(r"\d{15}-\d{20}")
_TIMED_LIKE: Final = "_" * 15 + "-" + "_" * 20

log = logging.getLogger("smartcache.cache")

_T = TypeVar("_T")
_Kind = Literal["on_conflict", "on_duplicate_key", "generic"]
# A database conversation written once for the sync and the async store: it yields
# (statement, parameters) and is sent back each statement's (buffered) result.
_Step = tuple["Executable", Any]
_Plan = Generator[_Step, Any, _T]  # sent back: the statement's Result


# --- shared by every adapter ------------------------------------------------------------


def _check_table(table: object) -> str:
    if not isinstance(table, str) or _TABLE_RE.fullmatch(table) is None:
        raise InvalidArgumentError(
            f"table name {table!r} is not a plain SQL identifier: use 1 to 63 ASCII letters, "
            "digits and underscores, not starting with a digit (e.g. 'smartcache_store')"
        )
    return table


def _encoder(serializer: Serializer) -> Callable[[StoreItem], bytes]:
    """``item`` -> the bytes to store: its ``encoded`` bytes when they come from this same
    built-in serializer (no second serialization), else ``serializer.dumps(item.value)``."""
    name, dumps = builtin_name(serializer), serializer.dumps

    def encode(item: StoreItem) -> bytes:
        encoded = item.encoded
        if encoded is not None and name is not None and item.serializer == name:
            return encoded
        return dumps(item.value)

    return encode


def _make_serializer(spec: str | Serializer) -> Serializer:
    try:
        return get_serializer(spec)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"serializer {spec!r} is unknown: give 'json', 'msgpack', 'pickle' or an object "
            f"with dumps(value) -> bytes and loads(bytes) ({exc})"
        ) from None


def _latest(items: Iterable[StoreItem]) -> list[StoreItem]:
    """One item per key (the one the guard would keep if applied in order), sorted by key.

    A batch upsert cannot touch a row twice (PostgreSQL refuses), and taking row locks in key
    order keeps two concurrent flushers from deadlocking each other.
    """
    kept: dict[str, StoreItem] = {}
    for item in items:
        key, version = item.key, item.version
        if not isinstance(key, str):
            raise InvalidArgumentError(
                f"store item key {key!r} is a {type(key).__name__}: keys must be str"
            )
        if version is not None and not isinstance(version, str):
            raise InvalidArgumentError(
                f"store item version {version!r} for key {key!r} is a "
                f"{type(version).__name__}: versions must be str or None "
                "(see smartcache.cache.stream_version)"
            )
        previous = kept.get(key)
        # Equal versions: the later item wins (unlike the database guard, which keeps the row).
        if (
            previous is None
            or version is None
            or previous.version is None
            or version >= previous.version
        ):
            kept[key] = item
    return [kept[key] for key in sorted(kept)]


def _unique_keys(keys: Iterable[str]) -> list[str]:
    if isinstance(keys, str):
        raise InvalidArgumentError(
            f"get_many({keys!r}) takes an iterable of keys, not one key: use get_many([key])"
        )
    return list(dict.fromkeys(keys))


def _chunks(keys: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(keys), _IN_CHUNK):
        yield keys[start : start + _IN_CHUNK]


def horizon_version(now: float, horizon: float) -> str:
    """The stream version of the instant ``horizon`` seconds before ``now``: tombstones
    with older versions are purged, and older writes to absent keys refused."""
    ms = max(int((now - horizon) * 1000), 0)
    return f"{ms:015d}-{0:020d}"


def _meta_name(table: str) -> str:
    return f"{table[:57]}_meta"  # within every backend's 63-character identifier limit


def _refused(
    candidates: Sequence[tuple[str, str | None]], watermark: str | None, existing: set[str]
) -> list[str]:
    """Keys of versioned writes older than ``watermark`` whose key has no row."""
    if watermark is None:
        return []
    return [
        key for key, version in candidates if _older(version, watermark) and key not in existing
    ]


def _older(version: str | None, watermark: str | None) -> bool:
    """A timed version (stream version) older than the purge watermark."""
    return (
        watermark is not None
        and version is not None
        and version < watermark
        and _TIMED.fullmatch(version) is not None
    )


class _Purging:
    """When to purge tombstones (every store), checked on each write."""

    def _init_purging(
        self, horizon: float | None, interval: float, clock: Callable[[], float]
    ) -> None:
        given: list[tuple[str, object]] = [("purge_interval", interval)]
        if horizon is not None:
            given.append(("tombstone_horizon", horizon))
        for name, value in given:
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise InvalidArgumentError(
                    f"{name}={value!r} is not a number of seconds > 0 (tombstone_horizon=None "
                    "keeps tombstones forever)"
                )
        self.tombstone_horizon = None if horizon is None else float(horizon)
        self.purge_interval = float(interval)
        self._clock = clock
        self._next_purge = 0.0  # the first write purges what a previous run left
        self._purge_lock = threading.Lock()

    def _purge_due(self) -> str | None:
        """The cutoff version when a purge is due now (at most once per interval)."""
        if self.tombstone_horizon is None:
            return None
        now = self._clock()
        with self._purge_lock:
            if now < self._next_purge:
                return None
            self._next_purge = now + self.purge_interval
        return horizon_version(now, self.tombstone_horizon)

    def _cutoff(self) -> str | None:
        if self.tombstone_horizon is None:
            return None
        return horizon_version(self._clock(), self.tombstone_horizon)


# --- SQLite (stdlib) --------------------------------------------------------------------


class _Closing:
    """``with store:`` closes it on the way out."""

    def close(self) -> None:
        """Release the store's resources."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SQLiteStore(_Purging, _Closing):
    """A store in a SQLite file, with only the standard library.

    One connection guarded by a lock serves every thread; the file is switched to WAL, so
    readers in other processes are not blocked by a write. ``timeout`` is how long a write
    waits for another process's lock before ``sqlite3.OperationalError`` propagates.
    ``tombstone_horizon`` (seconds, ``None``: forever) and ``purge_interval``: see the
    module docstring.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "smartcache_store",
        serializer: str | Serializer = "json",
        timeout: float = 5.0,
        tombstone_horizon: float | None = DEFAULT_TOMBSTONE_HORIZON,
        purge_interval: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._init_purging(tombstone_horizon, purge_interval, clock)
        self._table = _check_table(table)
        self._serializer = _make_serializer(serializer)
        given: object = timeout  # checked at run time: callers may pass anything
        if isinstance(given, bool) or not isinstance(given, int | float) or given < 0:
            raise InvalidArgumentError(
                f"timeout={timeout!r} is not a number of seconds >= 0: give e.g. timeout=5.0"
            )
        if sqlite3.sqlite_version_info < (3, 24, 0):
            raise ConfigurationError(
                f"SQLiteStore needs SQLite >= 3.24 for upserts; this Python links "
                f"{sqlite3.sqlite_version}: upgrade Python/SQLite or use SQLAlchemyStore"
            )
        self._path = os.fspath(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self._path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        quoted = f'"{self._table}"'
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {quoted} (key TEXT PRIMARY KEY, value BLOB, "
                "version TEXT, deleted INTEGER NOT NULL DEFAULT 0)"
            )
            self._conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{_meta_name(self._table)}" '
                "(name TEXT PRIMARY KEY, value TEXT)"
            )
        except BaseException:
            self._conn.close()
            raise
        self._upsert = (
            f"INSERT INTO {quoted} (key, value, version, deleted) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "version = excluded.version, deleted = excluded.deleted "
            f"WHERE excluded.version IS NULL OR {quoted}.version IS NULL "
            f"OR excluded.version > {quoted}.version"
        )
        self._select_live = f"SELECT key, value FROM {quoted} WHERE deleted = 0"
        self._select_version = f"SELECT version FROM {quoted} WHERE key = ?"
        meta = f'"{_meta_name(self._table)}"'
        self._select_watermark = f"SELECT value FROM {meta} WHERE name = '{_PURGED}'"
        self._purge = (
            f"DELETE FROM {quoted} WHERE deleted = 1 AND (version IS NULL OR "
            f"(version < ? AND version LIKE '{_TIMED_LIKE}'))"
        )
        self._set_watermark = (
            f"INSERT INTO {meta} (name, value) VALUES ('{_PURGED}', ?) "
            f"ON CONFLICT (name) DO UPDATE SET value = excluded.value "
            f"WHERE excluded.value > {meta}.value"
        )
        self._select_keys = f"SELECT key FROM {quoted} WHERE key IN "

    def __repr__(self) -> str:
        return f"SQLiteStore(path={self._path!r}, table={self._table!r})"

    def _apply(self, rows: list[tuple[str, bytes | None, str | None, int]]) -> None:
        cutoff = self._purge_due()
        if cutoff is not None:
            try:
                self._purge_to(cutoff)
            except sqlite3.Error as exc:  # never worth the write: the next interval retries
                log.warning("SQLiteStore: purging tombstones failed: %r", exc)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._refuse_stale(
                    [(key, version) for key, _, version, deleted in rows if not deleted]
                )
                self._conn.executemany(self._upsert, rows)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _refuse_stale(self, writes: list[tuple[str, str | None]]) -> None:
        """Inside the write's transaction: raise StaleWriteError for writes older than the
        purge watermark to keys with no row."""
        row = self._conn.execute(self._select_watermark).fetchone()
        watermark = None if row is None else row[0]
        old = [key for key, version in writes if _older(version, watermark)]
        if not old:
            return
        existing: set[str] = set()
        for chunk in _chunks(old):
            marks = ", ".join("?" * len(chunk))
            found = self._conn.execute(f"{self._select_keys}({marks})", chunk).fetchall()
            existing.update(r[0] for r in found)
        refused = _refused(writes, watermark, existing)
        if refused:
            raise StaleWriteError(refused, horizon=str(watermark))

    def _purge_to(self, cutoff: str) -> int:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                purged = self._conn.execute(self._purge, (cutoff,)).rowcount
                self._conn.execute(self._set_watermark, (cutoff,))
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        return int(purged)

    def purge_tombstones(self) -> int:
        """Delete the tombstones older than ``tombstone_horizon`` now; how many (0 when
        the horizon is ``None``). Writes do this by themselves once per ``purge_interval``."""
        cutoff = self._cutoff()
        return 0 if cutoff is None else self._purge_to(cutoff)

    def write_many(self, items: Sequence[StoreItem]) -> None:
        """Upsert ``items`` in one transaction, skipping any older than the stored row."""
        latest = _latest(items)
        if latest:
            encode = _encoder(self._serializer)
            self._apply([(it.key, encode(it), it.version, 0) for it in latest])

    def delete_many(self, items: Sequence[StoreItem]) -> None:
        """Turn ``items``' keys into versioned tombstones in one transaction."""
        latest = _latest(items)
        if latest:
            self._apply([(it.key, None, it.version, 1) for it in latest])

    def ping(self) -> bool:
        """True when the database answers (the write-behind flusher's outage probe)."""
        with self._lock:
            self._conn.execute("SELECT 1").fetchone()
        return True

    def get(self, key: str, default: Any = None) -> Any:
        """The live value under ``key``, else ``default``."""
        return self.get_many([key]).get(key, default)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """``{key: value}`` for the live keys among ``keys`` (absent and deleted ones left out)."""
        wanted = _unique_keys(keys)
        found: dict[str, bytes] = {}
        with self._lock:
            for chunk in _chunks(wanted):
                marks = ", ".join("?" * len(chunk))
                sql = f"{self._select_live} AND key IN ({marks})"
                found.update(self._conn.execute(sql, chunk).fetchall())
        loads = self._serializer.loads
        return {key: loads(found[key]) for key in wanted if key in found}

    def items(self) -> dict[str, Any]:
        """Every live row as ``{key: value}``, sorted by key."""
        with self._lock:
            rows = self._conn.execute(f"{self._select_live} ORDER BY key").fetchall()
        loads = self._serializer.loads
        return {key: loads(value) for key, value in rows}

    def version_of(self, key: str) -> str | None:
        """The version stored for ``key`` (a tombstone's too); ``None`` if absent/unversioned."""
        with self._lock:
            row = self._conn.execute(self._select_version, (key,)).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()


# --- SQLAlchemy: statements and conversations, shared by the sync and async stores --------


def _require_sqlalchemy(cls_name: str) -> None:
    try:
        import sqlalchemy  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise ConfigurationError(
            f"{cls_name} needs SQLAlchemy 2.x, which is not installed: {_INSTALL_HINT}"
        ) from None
    if int(sqlalchemy.__version__.split(".")[0]) < 2:
        raise ConfigurationError(
            f"{cls_name} needs SQLAlchemy >= 2.0, found {sqlalchemy.__version__}: "
            f"{_INSTALL_HINT} (or pip install -U sqlalchemy)"
        )


class _Statements:
    """The table and every statement the SQLAlchemy stores run, built once per store.

    Methods returning a plan are generators: they yield ``(statement, parameters)`` and are
    sent each result back, so one conversation serves ``Connection`` and ``AsyncConnection``.
    """

    def __init__(self, table: str, serializer: Serializer, dialect: str) -> None:
        import sqlalchemy as sa  # noqa: PLC0415 - optional dependency
        from sqlalchemy.dialects import mysql  # noqa: PLC0415

        self.serializer = serializer
        # MySQL/MariaDB: a binary collation keeps keys case-sensitive (the default is not),
        # and LONGBLOB lifts BLOB's 64 KiB limit.
        key_type = sa.String(512).with_variant(
            mysql.VARCHAR(512, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
        )
        value_type = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
        self.metadata = sa.MetaData()
        self.table: Table = sa.Table(
            table,
            self.metadata,
            sa.Column("key", key_type, primary_key=True),
            sa.Column("value", value_type, nullable=True),
            sa.Column("version", sa.String(64), nullable=True),
            sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()),
        )
        self.meta: Table = sa.Table(
            _meta_name(table),
            self.metadata,
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("value", sa.String(64), nullable=True),
        )
        t = self.table.c
        self.kind: _Kind
        if dialect in ("postgresql", "sqlite"):
            self.kind = "on_conflict"
            from sqlalchemy.dialects import postgresql, sqlite  # noqa: PLC0415

            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            stmt = insert(self.table)
            new = stmt.excluded
            self.upsert: Executable | None = stmt.on_conflict_do_update(
                index_elements=[t.key],
                set_={"value": new.value, "version": new.version, "deleted": new.deleted},
                where=sa.or_(new.version.is_(None), t.version.is_(None), new.version > t.version),
            )
        elif dialect in ("mysql", "mariadb"):
            self.kind = "on_duplicate_key"
            stmt_my = mysql.insert(self.table)
            new = stmt_my.inserted
            guard = sa.or_(new.version.is_(None), t.version.is_(None), new.version > t.version)
            # MySQL assigns left to right and later expressions see earlier assignments: the
            # guard reads the OLD version only if ``version`` is assigned last.
            self.upsert = stmt_my.on_duplicate_key_update(
                [
                    ("value", sa.case((guard, new.value), else_=t.value)),
                    ("deleted", sa.case((guard, new.deleted), else_=t.deleted)),
                    ("version", sa.case((guard, new.version), else_=t.version)),
                ]
            )
        else:
            self.kind = "generic"
            self.upsert = None

    def _rows(self, items: Sequence[StoreItem], deleted: bool) -> list[dict[str, Any]]:
        encode = _encoder(self.serializer)
        return [
            {
                "key": it.key,
                "value": None if deleted else encode(it),
                "version": it.version,
                "deleted": deleted,
            }
            for it in _latest(items)
        ]

    def apply(self, items: Sequence[StoreItem], *, deleted: bool) -> _Plan[None]:
        """Write (or tombstone) ``items`` under the version guard, inside the caller's txn;
        writes older than the purge watermark to keys with no row raise StaleWriteError."""
        import sqlalchemy as sa  # noqa: PLC0415

        rows = self._rows(items, deleted)
        if not rows:
            return
        if not deleted:
            yield from self.refuse_stale([(r["key"], r["version"]) for r in rows])
        if self.upsert is not None:
            yield self.upsert, rows
            return
        # Any other dialect: lock the row (where FOR UPDATE means something), then UPDATE it
        # with the guard in its WHERE clause (so the guard holds even where the lock is a
        # no-op), or INSERT it. Two transactions inserting the same new key race on the
        # primary key: one raises IntegrityError and its caller retries.
        t = self.table.c
        for row in rows:
            result = yield sa.select(t.version).where(t.key == row["key"]).with_for_update(), None
            if result.first() is None:
                yield sa.insert(self.table), row
                continue
            update = sa.update(self.table).where(t.key == row["key"])
            if row["version"] is not None:
                update = update.where(sa.or_(t.version.is_(None), t.version < row["version"]))
            values = {name: row[name] for name in ("value", "version", "deleted")}
            yield update.values(values), None

    def refuse_stale(self, writes: list[tuple[str, str | None]]) -> _Plan[None]:
        """Raise StaleWriteError for versioned writes older than the purge watermark whose
        key has no row (see the module docstring)."""
        import sqlalchemy as sa  # noqa: PLC0415

        m = self.meta.c
        result = yield sa.select(m.value).where(m.name == _PURGED), None
        row = result.first()
        watermark = None if row is None else row[0]
        old = [key for key, version in writes if _older(version, watermark)]
        if not old:
            return
        t = self.table.c
        existing: set[str] = set()
        for chunk in _chunks(old):
            found = yield sa.select(t.key).where(t.key.in_(chunk)), None
            existing.update(r[0] for r in found)
        refused = _refused(writes, watermark, existing)
        if refused:
            raise StaleWriteError(refused, horizon=str(watermark))

    def purge(self, cutoff: str) -> _Plan[int]:
        """Delete tombstones older than ``cutoff`` and raise the watermark to it."""
        import sqlalchemy as sa  # noqa: PLC0415

        t, m = self.table.c, self.meta.c
        result = yield (
            sa.delete(self.table).where(t.deleted, sa.or_(t.version.is_(None), t.version < cutoff)),
            None,
        )
        purged = int(result.rowcount or 0)
        current = yield sa.select(m.value).where(m.name == _PURGED).with_for_update(), None
        row = current.first()
        if row is None:
            yield sa.insert(self.meta), {"name": _PURGED, "value": cutoff}
        elif row[0] is None or row[0] < cutoff:
            yield sa.update(self.meta).where(m.name == _PURGED).values(value=cutoff), None
        return purged

    def get_many(self, keys: Iterable[str]) -> _Plan[dict[str, Any]]:
        """``{key: value}`` for the live keys among ``keys``."""
        import sqlalchemy as sa  # noqa: PLC0415

        wanted = _unique_keys(keys)
        t = self.table.c
        found: dict[str, Any] = {}
        for chunk in _chunks(wanted):
            result = yield (
                sa.select(t.key, t.value).where(t.key.in_(chunk), sa.not_(t.deleted)),
                None,
            )
            found.update((row[0], row[1]) for row in result)
        loads = self.serializer.loads
        return {key: loads(bytes(found[key])) for key in wanted if key in found}

    def items(self) -> _Plan[dict[str, Any]]:
        """Every live row, sorted by key."""
        import sqlalchemy as sa  # noqa: PLC0415

        t = self.table.c
        result = yield sa.select(t.key, t.value).where(sa.not_(t.deleted)).order_by(t.key), None
        loads = self.serializer.loads
        return {row[0]: loads(bytes(row[1])) for row in result}

    def version_of(self, key: str) -> _Plan[str | None]:
        """The version stored for ``key`` (tombstones included)."""
        import sqlalchemy as sa  # noqa: PLC0415

        t = self.table.c
        result = yield sa.select(t.version).where(t.key == key), None
        row = result.first()
        return None if row is None else row[0]


def _drive(conn: Any, plan: _Plan[_T]) -> _T:
    """Run ``plan`` on a sync ``Connection``."""
    try:
        statement, params = next(plan)
        while True:
            statement, params = plan.send(conn.execute(statement, params))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def _adrive(conn: Any, plan: _Plan[_T]) -> _T:
    """Run ``plan`` on an ``AsyncConnection`` (its results are buffered)."""
    try:
        statement, params = next(plan)
        while True:
            statement, params = plan.send(await conn.execute(statement, params))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _create_table(conn: Any, statements: _Statements) -> None:
    """``CREATE TABLE`` if absent, tolerating another process creating it at the same time."""
    import sqlalchemy as sa  # noqa: PLC0415

    try:
        with conn.begin():
            statements.metadata.create_all(conn, checkfirst=True)
    except sa.exc.DBAPIError:
        if not sa.inspect(conn).has_table(statements.table.name):
            raise


def _safe_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


class _SQLAlchemyBase(_Purging):
    _cls_name = "SQLAlchemyStore"

    def __init__(
        self,
        table: str,
        serializer: str | Serializer,
        horizon: float | None = DEFAULT_TOMBSTONE_HORIZON,
        interval: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._init_purging(horizon, interval, clock)
        _require_sqlalchemy(self._cls_name)
        self._table = _check_table(table)
        self._serializer = _make_serializer(serializer)
        self._owns_engine = False

    def _statements_for(self, dialect_name: str) -> _Statements:
        return _Statements(self._table, self._serializer, dialect_name)


class SQLAlchemyStore(_SQLAlchemyBase, _Closing):
    """A store in any database SQLAlchemy 2.x reaches (sync engine).

    Upserts with ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` on PostgreSQL and SQLite,
    ``INSERT ... ON DUPLICATE KEY UPDATE`` with guarded expressions on MySQL/MariaDB, and
    ``SELECT ... FOR UPDATE`` then ``UPDATE``/``INSERT`` elsewhere. ``engine_or_url`` is an
    ``Engine`` (left open by :meth:`close`) or a URL (its engine is disposed by :meth:`close`).
    ``create=True`` creates the table (and its meta table) when absent.
    ``tombstone_horizon`` (seconds, ``None``: forever) and ``purge_interval``: see the module
    docstring.
    """

    def __init__(
        self,
        engine_or_url: Engine | URL | str,
        *,
        table: str = "smartcache_store",
        serializer: str | Serializer = "json",
        create: bool = True,
        tombstone_horizon: float | None = DEFAULT_TOMBSTONE_HORIZON,
        purge_interval: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(table, serializer, tombstone_horizon, purge_interval, clock)
        import sqlalchemy as sa  # noqa: PLC0415

        if isinstance(engine_or_url, sa.Engine):
            self._engine = engine_or_url
        elif isinstance(engine_or_url, str | sa.URL):
            self._engine = sa.create_engine(engine_or_url)
            self._owns_engine = True
        else:
            raise InvalidArgumentError(
                f"SQLAlchemyStore takes a sqlalchemy Engine or a database URL, not "
                f"{type(engine_or_url).__name__} (for an AsyncEngine use AsyncSQLAlchemyStore)"
            )
        self._sql = self._statements_for(self._engine.dialect.name)
        if create:
            try:
                with self._engine.connect() as conn:
                    _create_table(conn, self._sql)
                    conn.commit()
            except BaseException:
                self.close()
                raise

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine this store writes through."""
        return self._engine

    @property
    def table(self) -> Table:
        """The SQLAlchemy ``Table`` this store writes (for migrations or ad-hoc queries)."""
        return self._sql.table

    def __repr__(self) -> str:
        return f"SQLAlchemyStore(url={_safe_url(self._engine.url)!r}, table={self._table!r})"

    def _write(self, plan: _Plan[None]) -> None:
        cutoff = self._purge_due()
        if cutoff is not None:
            import sqlalchemy as sa  # noqa: PLC0415

            try:
                self._purge_to(cutoff)
            except sa.exc.SQLAlchemyError as exc:  # the next interval retries
                log.warning("SQLAlchemyStore: purging tombstones failed: %r", exc)
        with self._engine.begin() as conn:
            _drive(conn, plan)

    def _purge_to(self, cutoff: str) -> int:
        with self._engine.begin() as conn:
            return _drive(conn, self._sql.purge(cutoff))

    def purge_tombstones(self) -> int:
        """Delete the tombstones older than ``tombstone_horizon`` now; how many (0 when
        the horizon is ``None``). Writes do this by themselves once per ``purge_interval``."""
        cutoff = self._cutoff()
        return 0 if cutoff is None else self._purge_to(cutoff)

    def _read(self, plan: _Plan[_T]) -> _T:
        with self._engine.connect() as conn:
            return _drive(conn, plan)

    def write_many(self, items: Sequence[StoreItem]) -> None:
        """Upsert ``items`` in one transaction, skipping any older than the stored row."""
        if items:
            self._write(self._sql.apply(items, deleted=False))

    def delete_many(self, items: Sequence[StoreItem]) -> None:
        """Turn ``items``' keys into versioned tombstones in one transaction."""
        if items:
            self._write(self._sql.apply(items, deleted=True))

    def ping(self) -> bool:
        """True when the database answers (the write-behind flusher's outage probe)."""
        import sqlalchemy as sa  # noqa: PLC0415

        with self._engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True

    def get(self, key: str, default: Any = None) -> Any:
        """The live value under ``key``, else ``default``."""
        return self.get_many([key]).get(key, default)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """``{key: value}`` for the live keys among ``keys`` (absent and deleted ones left out)."""
        return self._read(self._sql.get_many(keys))

    def items(self) -> dict[str, Any]:
        """Every live row as ``{key: value}``, sorted by key."""
        return self._read(self._sql.items())

    def version_of(self, key: str) -> str | None:
        """The version stored for ``key`` (a tombstone's too); ``None`` if absent/unversioned."""
        return self._read(self._sql.version_of(key))

    def close(self) -> None:
        """Dispose the engine if this store created it from a URL (idempotent)."""
        if self._owns_engine:
            self._engine.dispose()


class AsyncSQLAlchemyStore(_SQLAlchemyBase):
    """:class:`SQLAlchemyStore` over ``sqlalchemy.ext.asyncio`` (an ``AsyncEngine`` or URL).

    The same statements and semantics; every method is a coroutine. With ``create=True`` the
    table is created on first use. Use ``async with`` or :meth:`aclose`.
    """

    _cls_name = "AsyncSQLAlchemyStore"

    def __init__(
        self,
        async_engine_or_url: AsyncEngine | URL | str,
        *,
        table: str = "smartcache_store",
        serializer: str | Serializer = "json",
        create: bool = True,
        tombstone_horizon: float | None = DEFAULT_TOMBSTONE_HORIZON,
        purge_interval: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(table, serializer, tombstone_horizon, purge_interval, clock)
        import sqlalchemy as sa  # noqa: PLC0415

        try:
            from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: PLC0415
        except ImportError as exc:  # SQLAlchemy >= 2.1 installs greenlet only with [asyncio]
            raise ConfigurationError(
                f"AsyncSQLAlchemyStore needs SQLAlchemy's asyncio support ({exc}): {_INSTALL_HINT}"
            ) from None

        if isinstance(async_engine_or_url, AsyncEngine):
            self._engine = async_engine_or_url
        elif isinstance(async_engine_or_url, str | sa.URL):
            self._engine = create_async_engine(async_engine_or_url)
            self._owns_engine = True
        else:
            raise InvalidArgumentError(
                f"AsyncSQLAlchemyStore takes a sqlalchemy AsyncEngine or an async database URL "
                f"(e.g. 'sqlite+aiosqlite:///file.db'), not {type(async_engine_or_url).__name__}"
                " (for a sync Engine use SQLAlchemyStore)"
            )
        self._sql = self._statements_for(self._engine.dialect.name)
        self._needs_create = create
        self._create_lock: asyncio.Lock | None = None

    @property
    def table(self) -> Table:
        """The SQLAlchemy ``Table`` this store writes (for migrations or ad-hoc queries)."""
        return self._sql.table

    def __repr__(self) -> str:
        return f"AsyncSQLAlchemyStore(url={_safe_url(self._engine.url)!r}, table={self._table!r})"

    async def _ensure_table(self) -> None:
        if not self._needs_create:
            return
        import asyncio  # noqa: PLC0415

        if self._create_lock is None:
            self._create_lock = asyncio.Lock()
        async with self._create_lock:
            if self._needs_create:
                async with self._engine.connect() as conn:
                    await conn.run_sync(_create_table, self._sql)
                    await conn.commit()
                self._needs_create = False

    async def _write(self, plan: _Plan[None]) -> None:
        await self._ensure_table()
        cutoff = self._purge_due()
        if cutoff is not None:
            import sqlalchemy as sa  # noqa: PLC0415

            try:
                await self._purge_to(cutoff)
            except sa.exc.SQLAlchemyError as exc:  # the next interval retries
                log.warning("AsyncSQLAlchemyStore: purging tombstones failed: %r", exc)
        async with self._engine.begin() as conn:
            await _adrive(conn, plan)

    async def _purge_to(self, cutoff: str) -> int:
        async with self._engine.begin() as conn:
            return await _adrive(conn, self._sql.purge(cutoff))

    async def purge_tombstones(self) -> int:
        """Delete the tombstones older than ``tombstone_horizon`` now; how many (0 when
        the horizon is ``None``). Writes do this by themselves once per ``purge_interval``."""
        await self._ensure_table()
        cutoff = self._cutoff()
        return 0 if cutoff is None else await self._purge_to(cutoff)

    async def _read(self, plan: _Plan[_T]) -> _T:
        await self._ensure_table()
        async with self._engine.connect() as conn:
            return await _adrive(conn, plan)

    async def write_many(self, items: Sequence[StoreItem]) -> None:
        """Upsert ``items`` in one transaction, skipping any older than the stored row."""
        if items:
            await self._write(self._sql.apply(items, deleted=False))

    async def delete_many(self, items: Sequence[StoreItem]) -> None:
        """Turn ``items``' keys into versioned tombstones in one transaction."""
        if items:
            await self._write(self._sql.apply(items, deleted=True))

    async def get(self, key: str, default: Any = None) -> Any:
        """The live value under ``key``, else ``default``."""
        return (await self.get_many([key])).get(key, default)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """``{key: value}`` for the live keys among ``keys`` (absent and deleted ones left out)."""
        return await self._read(self._sql.get_many(keys))

    async def items(self) -> dict[str, Any]:
        """Every live row as ``{key: value}``, sorted by key."""
        return await self._read(self._sql.items())

    async def version_of(self, key: str) -> str | None:
        """The version stored for ``key`` (a tombstone's too); ``None`` if absent/unversioned."""
        return await self._read(self._sql.version_of(key))

    async def aclose(self) -> None:
        """Dispose the engine if this store created it from a URL (idempotent)."""
        if self._owns_engine:
            await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
