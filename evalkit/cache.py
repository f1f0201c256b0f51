"""Persistent, content-addressed embedding cache in SQLite.

Key: a namespace (model id + revision + everything that changes a vector: pooling, max length,
dtype, normalisation) and the exact input text after instructions and examples are applied.
Value: the float32 vector. SQLite in WAL mode makes it safe for several processes at once on one
host and for a kill mid-write (a transaction is all or nothing). WAL needs shared memory: never put
the cache on a network filesystem (a Ray cluster keeps one cache per node: evalkit/executors.py).

The cache is derived data, so a fault in it never stops a run. A corrupted file (SQLite's "database
disk image is malformed" or "file is not a database", on opening or on any read or write) is moved
aside to `embeddings.sqlite3.corrupt-<time>` (with its -wal/-shm files) and a fresh cache is started;
a cache that cannot be written (a full disk, a read-only folder) turns itself off (`disabled` says
why), so the Embedder just encodes. Either way one warning line, and the run goes on.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from evalkit.errors import EvalkitError

CHUNK = 500
CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)
MAX_RESETS = 3  # a cache found corrupted again and again after being moved aside is turned off

log = logging.getLogger("evalkit")
_warned_off: set[str] = set()  # caches whose "turned off" warning this process has printed


class CacheCorrupt(sqlite3.DatabaseError):
    """A cache whose content cannot be right (a vector of the wrong size) though SQLite read it."""


def is_corrupt(e: BaseException) -> bool:
    if isinstance(e, CacheCorrupt):
        return True
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in CORRUPT_CODES
    msg = str(e).lower()
    return "malformed" in msg or "not a database" in msg


def _whole(blob, unit: int) -> bytes:
    """A stored output of any size is still made of whole `unit`-byte records, or the file is corrupted."""
    if not isinstance(blob, bytes) or len(blob) % unit:
        raise CacheCorrupt(f"a stored output is not made of {unit}-byte records ({type(blob).__name__}, {len(blob) if isinstance(blob, bytes) else '?'} bytes)")
    return blob


def default_root() -> Path:
    return Path(os.environ.get("EVALKIT_CACHE") or Path.home() / ".cache" / "evalkit").expanduser()


def namespace_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:20]


class EmbeddingCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_root()
        self.path = self.root / "embeddings.sqlite3"
        self._db: sqlite3.Connection | None = None
        self._inode: int | None = None
        self._registered: dict[str, dict] = {}
        self._width: dict[str, int] = {}
        self._resets = 0
        self.disabled: str | None = None  # why this cache is off for the rest of the run
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._turn_off(f"cannot create its folder {self.root}: {e.strerror or e}")

    @property
    def db(self) -> sqlite3.Connection:
        db = self._conn()
        if db is None:
            self._refuse()
        return db

    def _refuse(self):
        """For the commands that are about the cache itself (stats, clear): an unusable cache is an error."""
        raise EvalkitError(f"embedding cache {self.path} cannot be used ({self.disabled}): free some space, or set EVALKIT_CACHE / --cache-dir")

    def _conn(self) -> sqlite3.Connection | None:
        """The open connection, opening (and, where the file is corrupted, replacing) it first;
        None once the cache is off."""
        while self._db is None and self.disabled is None:
            try:
                self._db = self._open()
            except sqlite3.DatabaseError as e:
                self._fault(e, "opening it")
                continue
            try:
                self._inode = os.stat(self.path).st_ino
            except OSError:
                self._inode = None
            if self._resets:  # a fresh file after a corrupted one: the namespaces registered so far
                for ns, fields in self._registered.items():
                    self._register(self._db, ns, fields)
        return self._db

    def _open(self, wait: float = 120.0) -> sqlite3.Connection:
        """Connect and set up. Two processes opening a new file at once can get "database is locked"
        straight away while one switches it to WAL mode (SQLite's busy wait does not cover that
        step): waited out here, up to `wait` seconds. Any other error is raised as it is."""
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            db = None
            try:
                db = sqlite3.connect(self.path, timeout=wait, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                # a rowid table: its rows (1.5 KB for a 384-wide vector) sit in the table's own pages, the
                # (ns, key) index stays small. A WITHOUT ROWID table keeps whole rows in the key-ordered
                # b-tree, which random keys leave half full: 2.2x the file, writes 4.7x and reads 3.6x
                # slower (60,000 MiniLM vectors). Caches made before keep that layout and work as they are.
                db.execute(
                    "CREATE TABLE IF NOT EXISTS vectors (ns TEXT NOT NULL, key BLOB NOT NULL, vec BLOB NOT NULL,"
                    " PRIMARY KEY (ns, key))"
                )
                db.execute("CREATE TABLE IF NOT EXISTS namespaces (ns TEXT PRIMARY KEY, fields TEXT, created REAL)")
                return db
            except sqlite3.DatabaseError as e:
                if db is not None and is_corrupt(e):
                    self._db = db  # closed only after the files are moved aside: closing can delete the -wal
                    raise
                if db is not None:
                    db.close()
                if isinstance(e, sqlite3.OperationalError) and "locked" in str(e) and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                raise

    def _guarded(self, what: str, fn, default=None):
        """fn(connection), with any SQLite fault handled: a corrupted file is moved aside and fn runs
        once more on the fresh cache; a cache that cannot be used is turned off (`default`)."""
        for _ in range(2):
            db = self._conn()
            if db is None:
                return default
            try:
                return fn(db)
            except sqlite3.ProgrammingError:
                raise  # a bug in evalkit, not a fault of the file
            except sqlite3.DatabaseError as e:
                self._fault(e, what)
        return default

    def _fault(self, e: sqlite3.DatabaseError, what: str) -> None:
        """After this the cache is closed and either free to reopen (a fresh file) or off."""
        if not is_corrupt(e):
            self._turn_off(f"{what}: {e}")
        elif self._resets >= MAX_RESETS:
            self._turn_off(f"corrupted again ({e}) after being replaced {self._resets} times")
        else:
            self._resets += 1
            self._set_aside(e)  # with the connection still open: SQLite deletes the -wal on closing
        self.close()

    def _set_aside(self, e: BaseException) -> None:
        try:
            if self._inode is not None and os.stat(self.path).st_ino != self._inode:
                return  # another process has already moved the corrupted file aside and started afresh
        except FileNotFoundError:
            return
        except OSError:
            pass
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while any(Path(f"{dest}{s}").exists() for s in ("", "-wal", "-shm")):
            n += 1
            dest = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            os.rename(self.path, dest)
            for s in ("-wal", "-shm"):
                if os.path.lexists(f"{self.path}{s}"):
                    os.rename(f"{self.path}{s}", f"{dest}{s}")
        except OSError as err:
            self._turn_off(f"corrupted ({e}) and cannot be moved aside ({err.strerror or err}): delete it")
            return
        self._inode = None
        log.warning("embedding cache %s is corrupted (%s): moved it aside to %s and started a fresh cache", self.path, e, dest.name)

    def _turn_off(self, why: str) -> None:
        self.close()
        self.disabled = why
        if str(self.path) not in _warned_off:
            _warned_off.add(str(self.path))
            log.warning(
                "embedding cache %s cannot be used (%s): continuing without the cache "
                "(free some space, or point EVALKIT_CACHE / --cache-dir at a writable folder)", self.path, why,
            )

    @staticmethod
    def _register(db: sqlite3.Connection, ns: str, fields: dict) -> None:
        db.execute("INSERT OR IGNORE INTO namespaces VALUES (?, ?, ?)", (ns, json.dumps(fields, sort_keys=True, default=str), time.time()))

    def register(self, ns: str, fields: dict) -> None:
        self._registered[ns] = fields
        self._guarded("writing to it", lambda db: self._register(db, ns, fields))

    def get_many(self, ns: str, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Index in `texts` -> cached vector, for those present."""
        return self._get(ns, texts, lambda blob: np.frombuffer(self._checked(ns, blob), dtype=np.float32))

    def get_blobs(self, ns: str, texts: Sequence[str], unit: int = 4) -> dict[int, bytes]:
        """Index in `texts` -> the stored bytes, for a namespace of outputs of any size made of
        `unit`-byte records (M3's lexical weights: 8, a token id and its weight), for those present."""
        return self._get(ns, texts, lambda blob: _whole(blob, unit))

    def _get(self, ns: str, texts: Sequence[str], decode) -> dict:
        keys = [text_key(t) for t in texts]
        where = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)
        uniq = list(where)

        def read(db: sqlite3.Connection) -> dict:
            found: dict = {}
            for s in range(0, len(uniq), CHUNK):
                part = uniq[s : s + CHUNK]
                q = f"SELECT key, vec FROM vectors WHERE ns = ? AND key IN ({','.join('?' * len(part))})"
                for key, blob in db.execute(q, [ns, *part]):
                    value = decode(blob)
                    for i in where[key]:
                        found[i] = value
            return found

        return self._guarded("reading it", read, default={})

    def _checked(self, ns: str, blob) -> bytes:
        """A stored vector has 4 bytes per float and one width per namespace, or the file is corrupted."""
        if not isinstance(blob, bytes) or not blob or len(blob) % 4:
            raise CacheCorrupt(f"a stored vector is not float32 ({type(blob).__name__}, {len(blob) if isinstance(blob, bytes) else '?'} bytes)")
        width = self._width.setdefault(ns, len(blob))
        if len(blob) != width:
            raise CacheCorrupt(f"stored vectors of {width} and {len(blob)} bytes under one model")
        return blob

    def put_many(self, ns: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        rows = [(ns, text_key(t), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for t, v in zip(texts, vectors)]
        if rows:
            self._width.setdefault(ns, len(rows[0][2]))
        self._put(rows)

    def put_blobs(self, ns: str, texts: Sequence[str], blobs: Sequence[bytes]) -> None:
        self._put([(ns, text_key(t), bytes(b)) for t, b in zip(texts, blobs)])

    def _put(self, rows: list) -> None:
        def write(db: sqlite3.Connection) -> None:
            for s in range(0, len(rows), 5000):
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows[s : s + 5000])
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        try:
                            db.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass
                    raise

        self._guarded("writing to it", write)

    def stats(self) -> list[dict]:
        rows = self._guarded("reading it", lambda db: db.execute(
            "SELECT n.ns, n.fields, COUNT(v.key), COALESCE(SUM(LENGTH(v.vec)), 0) FROM namespaces n LEFT JOIN vectors v ON v.ns = n.ns GROUP BY n.ns"
        ).fetchall())
        if rows is None:
            self._refuse()
        out = []
        for ns, fields, count, size in rows:
            out.append({"namespace": ns, **json.loads(fields or "{}"), "vectors": count, "bytes": size})
        return out

    def clear(self) -> int:
        def wipe(db: sqlite3.Connection) -> int:
            n = db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            db.execute("DELETE FROM vectors")
            db.execute("DELETE FROM namespaces")
            db.execute("VACUUM")
            return n

        n = self._guarded("clearing it", wipe)
        if n is None:
            self._refuse()
        return n

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
