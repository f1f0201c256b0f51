"""Persistent, content-addressed embedding cache in SQLite.

Key: a namespace (model id + revision + everything that changes a vector: pooling, max length,
dtype, normalisation) and the exact input text after instructions and examples are applied.
Value: the float32 vector. SQLite in WAL mode makes it safe for several processes at once on one
host and for a kill mid-write (a transaction is all or nothing). WAL needs shared memory: never put
the cache on a network filesystem (a Ray cluster keeps one cache per node: evalkit/distributed.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from evalkit.errors import EvalkitError

CHUNK = 500


def default_root() -> Path:
    return Path(os.environ.get("EVALKIT_CACHE") or Path.home() / ".cache" / "evalkit").expanduser()


def namespace_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:20]


class EmbeddingCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EvalkitError(f"cannot create the embedding cache folder {self.root} ({e.strerror}): set EVALKIT_CACHE or pass --no-cache") from e
        self.path = self.root / "embeddings.sqlite3"
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self, wait: float = 120.0) -> sqlite3.Connection:
        """Connect and set up. Two processes opening a new file at once can get "database is locked"
        straight away while one switches it to WAL mode (SQLite's busy wait does not cover that
        step): waited out here, up to `wait` seconds."""
        deadline = time.monotonic() + wait
        delay = 0.05
        while True:
            db = None
            try:
                db = sqlite3.connect(self.path, timeout=wait, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS vectors (ns TEXT NOT NULL, key BLOB NOT NULL, vec BLOB NOT NULL,"
                    " PRIMARY KEY (ns, key)) WITHOUT ROWID"
                )
                db.execute("CREATE TABLE IF NOT EXISTS namespaces (ns TEXT PRIMARY KEY, fields TEXT, created REAL)")
                return db
            except sqlite3.OperationalError as e:
                if db is not None:
                    db.close()
                if "locked" in str(e) and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                raise EvalkitError(f"embedding cache {self.path} is unusable ({e}): evalkit cache clear, or pass --no-cache") from e
            except sqlite3.DatabaseError as e:
                if db is not None:
                    db.close()
                raise EvalkitError(f"embedding cache {self.path} is unusable ({e}): evalkit cache clear, or pass --no-cache") from e

    def register(self, ns: str, fields: dict) -> None:
        self.db.execute("INSERT OR IGNORE INTO namespaces VALUES (?, ?, ?)", (ns, json.dumps(fields, sort_keys=True, default=str), time.time()))

    def get_many(self, ns: str, texts: Sequence[str]) -> dict[int, np.ndarray]:
        """Index in `texts` -> cached vector, for those present."""
        keys = [text_key(t) for t in texts]
        where = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)
        found: dict[int, np.ndarray] = {}
        uniq = list(where)
        for s in range(0, len(uniq), CHUNK):
            part = uniq[s : s + CHUNK]
            q = f"SELECT key, vec FROM vectors WHERE ns = ? AND key IN ({','.join('?' * len(part))})"
            for key, blob in self.db.execute(q, [ns, *part]):
                vec = np.frombuffer(blob, dtype=np.float32)
                for i in where[key]:
                    found[i] = vec
        return found

    def put_many(self, ns: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        rows = [(ns, text_key(t), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for t, v in zip(texts, vectors)]
        db = self.db
        for s in range(0, len(rows), 5000):
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows[s : s + 5000])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def stats(self) -> list[dict]:
        out = []
        rows = self.db.execute(
            "SELECT n.ns, n.fields, COUNT(v.key), COALESCE(SUM(LENGTH(v.vec)), 0) FROM namespaces n LEFT JOIN vectors v ON v.ns = n.ns GROUP BY n.ns"
        ).fetchall()
        for ns, fields, count, size in rows:
            out.append({"namespace": ns, **json.loads(fields or "{}"), "vectors": count, "bytes": size})
        return out

    def clear(self) -> int:
        n = self.db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        self.db.execute("DELETE FROM vectors")
        self.db.execute("DELETE FROM namespaces")
        self.db.execute("VACUUM")
        return n

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
