"""A local, durable, multi-process outbox: the only thing a hook writes to.

Why SQLite: it is in every Python, an insert in WAL mode with
``synchronous=NORMAL`` survives a crash of the writing process and costs less
than a network round trip, and SQLite's file locking makes it safe for the
several nova-api and nova-compute workers of one host to append at once. The
relay (``novahooks relay``) reads in sequence order, publishes, then deletes:
at-least-once, which the idempotent tasks turn into exactly-once effect.
"""

import json
import logging
import os
import sqlite3
import threading
import time
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from novahooks.nova import spool
from novahooks.nova.spool import create_shared

LOG = logging.getLogger("novahooks.outbox")

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


#: WAL pages after which a hook's own commit checkpoints (32 MiB of 4 KiB pages).
#: The relay's commits checkpoint at SQLite's default of 1,000 pages, so while it runs
#: a hook never does: that copy was the hook's slowest 0.1% of calls (4-5 ms against
#: 0.4 ms). This is only the bound on the WAL while no relay runs.
HOOK_CHECKPOINT_PAGES = 8192


class Outbox(object):
    """One SQLite file; one connection per process, opened lazily and after fork."""

    def __init__(self, path: str, busy_timeout_ms: int = 2000,
                 checkpoint_pages: int = 1000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.checkpoint_pages = checkpoint_pages
        self._lock = threading.Lock()
        self._conn = None  # type: Optional[sqlite3.Connection]
        self._pid = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            create_shared(self.path)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000.0,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=%d" % int(self.checkpoint_pages))
            conn.execute("PRAGMA busy_timeout=%d" % int(self.busy_timeout_ms))
            conn.executescript(SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def append(self, instance_uuid: str, kind: str, body: str) -> Optional[int]:
        """Durably record one event; returns its sequence number, or None if it was spooled.

        ``BEGIN IMMEDIATE`` takes the write lock up front, under the busy
        timeout, instead of failing at once when another process committed
        between this statement's read and its write. If SQLite still cannot
        take the write, the event goes to the spool file and the relay moves
        it in later: an accepted event is never lost.
        """
        with self._lock:
            try:
                return self._insert([(instance_uuid, kind, body, time.time())])
            except sqlite3.Error as exc:
                where = spool.write(self.path, instance_uuid, kind, body)
                LOG.warning("outbox %s refused a write (%s); %s event for %s spooled to %s",
                            self.path, exc, kind, instance_uuid, where)
                return None

    def _insert(self, rows: List[tuple]) -> int:
        """Insert in one write transaction; returns the last row's sequence number."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            last = 0
            for row in rows:
                last = conn.execute(
                    "INSERT INTO events (instance_uuid, kind, body, created_at) "
                    "VALUES (?, ?, ?, ?)", row).lastrowid or 0
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._conn = None
                conn.close()
            raise
        return int(last)

    def absorb_spool(self) -> int:
        """Move spooled events into the outbox (the relay calls this); returns how many."""
        moved = 0
        for path in spool.pending_files(self.path):
            taken = spool.claim(path)
            events = spool.read(taken)
            if events:
                with self._lock:
                    self._insert([tuple(event) for event in events])
            spool.finish(taken)
            moved += len(events)
        return moved

    def pending(self, limit: int = 100) -> List[Pending]:
        """The oldest events not yet published, in the order they were accepted."""
        with self._lock:
            rows = self._connection().execute(
                "SELECT seq, instance_uuid, kind, body, created_at, attempts FROM events "
                "ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [Pending(*row) for row in rows]

    def find(self, event_id: str) -> Optional[Dict[str, Any]]:
        """The waiting event with this id, as the hook stored it (the gate's verdict)."""
        with self._lock:
            rows = self._connection().execute(
                "SELECT body FROM events WHERE instr(body, ?) > 0 ORDER BY seq",
                (event_id,)).fetchall()
        for (body,) in rows:
            try:
                event = json.loads(body)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event_id") == event_id:
                return event
        return None

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
        """How many events wait, spooled ones included, and when the oldest was accepted."""
        with self._lock:
            count, oldest = self._connection().execute(
                "SELECT COUNT(*), MIN(created_at) FROM events").fetchone()
        for path in spool.pending_files(self.path):
            try:
                with open(path, "rb") as handle:
                    count += sum(1 for line in handle if line.strip())
            except FileNotFoundError:
                continue
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
