"""A local, durable, multi-process outbox: the only thing a hook writes to.

Why SQLite: it is in every Python, an insert in WAL mode with
``synchronous=NORMAL`` survives a crash of the writing process and costs less
than a network round trip, and SQLite's file locking makes it safe for the
several nova-api and nova-compute workers of one host to append at once. The
relay (``novahooks relay``) reads in sequence order, publishes, then deletes:
at-least-once, which the idempotent tasks turn into exactly-once effect.
"""

import os
import sqlite3
import threading
import time
from typing import List, NamedTuple, Optional, Tuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_uuid TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS relays (
    pid INTEGER PRIMARY KEY,
    host TEXT NOT NULL,
    seen_at REAL NOT NULL,
    published INTEGER NOT NULL
)
"""


class Pending(NamedTuple):
    seq: int
    instance_uuid: str
    kind: str
    body: str
    created_at: float
    attempts: int


class Outbox(object):
    """One SQLite file; one connection per process, opened lazily and after fork."""

    def __init__(self, path: str, busy_timeout_ms: int = 2000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        self._conn = None  # type: Optional[sqlite3.Connection]
        self._pid = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            directory = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=0o750, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000.0,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=%d" % int(self.busy_timeout_ms))
            conn.executescript(SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def append(self, instance_uuid: str, kind: str, body: str) -> int:
        """Durably record one event; returns its sequence number."""
        with self._lock:
            cur = self._connection().execute(
                "INSERT INTO events (instance_uuid, kind, body, created_at) VALUES (?, ?, ?, ?)",
                (instance_uuid, kind, body, time.time()))
            return int(cur.lastrowid)

    def pending(self, limit: int = 100) -> List[Pending]:
        """The oldest events not yet published, in the order they were accepted."""
        with self._lock:
            rows = self._connection().execute(
                "SELECT seq, instance_uuid, kind, body, created_at, attempts FROM events "
                "ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [Pending(*row) for row in rows]

    def remove(self, seqs: List[int]) -> None:
        """Forget events once the broker has confirmed them."""
        if not seqs:
            return
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in seqs])
            conn.execute("COMMIT")

    def note_failure(self, seq: int, error: str) -> None:
        with self._lock:
            self._connection().execute(
                "UPDATE events SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                (error[:500], seq))

    def depth(self) -> Tuple[int, Optional[float]]:
        """How many events wait, and when the oldest was accepted (for status and metrics)."""
        with self._lock:
            count, oldest = self._connection().execute(
                "SELECT COUNT(*), MIN(created_at) FROM events").fetchone()
        return int(count), oldest

    def heartbeat(self, published: int) -> None:
        """The relay says it is alive, so ``novahooks status`` can tell a stuck outbox."""
        import socket
        with self._lock:
            self._connection().execute(
                "INSERT OR REPLACE INTO relays (pid, host, seen_at, published) "
                "VALUES (?, ?, ?, ?)", (os.getpid(), socket.gethostname(), time.time(), published))

    def relays(self) -> List[Tuple[int, str, float, int]]:
        with self._lock:
            return [tuple(row) for row in self._connection().execute(
                "SELECT pid, host, seen_at, published FROM relays ORDER BY seen_at DESC")]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
