"""The outbox's fallback: plain append-only files for when SQLite cannot take a write.

SQLite refuses a write when its lock stays busy past the timeout (a slow disk
during a checkpoint, a long reader, many Nova workers at once) or when the
file is damaged. The hook has then already accepted Nova's event and must not
lose it, nor make Nova wait longer. A line appended to a per-process file
needs no cross-process lock to be taken in time, so the event goes there and
the relay moves it into the outbox on its next pass.

Writer and reader agree through ``flock`` and the file's inode: the reader
renames a file before it reads it, and a writer that finds, once it holds the
lock, that its file was renamed or unlinked meanwhile writes again to a fresh
file, so no line lands in a file the reader has already consumed.
"""

import contextlib
import fcntl
import json
import logging
import os
import time
from typing import Iterator, List, NamedTuple

LOG = logging.getLogger("novahooks.spool")


#: What the outbox's files and directories may not grant: anything to others. Hook
#: (the Nova user) and relay share them through a group, which must write the
#: database and rename spool files; nobody else may read an event.
SHARED_UMASK = 0o007


@contextlib.contextmanager
def shared_files() -> Iterator[None]:
    """Create files under :data:`SHARED_UMASK`, so each has its mode from the start.

    The umask is the process's: it is set only around calls that do not yield (no
    green-thread switch under eventlet).
    """
    old = os.umask(SHARED_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def create_shared(path: str) -> None:
    """Make ``path`` an empty file of mode 0660 unless it exists.

    SQLite creates a database 0644 less the umask (never group-writable), and its
    -wal and -shm files then copy that mode: made first, empty, the database (a
    0-byte file is an empty database to SQLite) has the mode the shared group needs.
    """
    directory = os.path.dirname(os.path.abspath(path))
    with shared_files():
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o770, exist_ok=True)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660))
        except FileExistsError:
            pass


class Spooled(NamedTuple):
    instance_uuid: str
    kind: str
    body: str
    created_at: float


def directory_for(outbox_path: str) -> str:
    return outbox_path + ".spool"


def write(outbox_path: str, instance_uuid: str, kind: str, body: str) -> str:
    """Append one event durably (fsync) to this process's spool file; returns its path."""
    directory = directory_for(outbox_path)
    if not os.path.isdir(directory):
        with shared_files():  # the relay renames files in it
            os.makedirs(directory, mode=0o770, exist_ok=True)
    path = os.path.join(directory, "%d.jsonl" % os.getpid())
    line = json.dumps({"instance_uuid": instance_uuid, "kind": kind, "body": body,
                       "created_at": time.time()}, sort_keys=True) + "\n"
    for _ in range(5):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _still_named(fd, path):
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
                return path
        finally:
            os.close(fd)
    raise OSError("spool file %s kept being taken by the relay while writing" % path)


def _still_named(fd: int, path: str) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino and os.fstat(fd).st_nlink > 0
    except FileNotFoundError:
        return False


def pending_files(outbox_path: str) -> List[str]:
    directory = directory_for(outbox_path)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [os.path.join(directory, name) for name in names
            if name.endswith(".jsonl") or name.endswith(".taken")]


def claim(path: str) -> str:
    """Rename a spool file out of its writer's way; returns the name to read and finish.

    A file already claimed by an earlier, interrupted pass is read again:
    storing an event twice is harmless downstream, losing it is not.
    """
    if path.endswith(".taken"):
        return path
    taken = "%s.%d.taken" % (path[:-len(".jsonl")], int(time.time() * 1e6))
    os.rename(path, taken)
    return taken


def read(taken: str) -> List[Spooled]:
    """The events of a claimed file, once any writer still holding it has finished."""
    events = []  # type: List[Spooled]
    with open(taken, "r", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                events.append(Spooled(str(data["instance_uuid"]), str(data["kind"]),
                                      str(data["body"]), float(data["created_at"])))
            except (ValueError, KeyError, TypeError) as exc:
                LOG.error("spool file %s line %d is unreadable (%s), skipped: %r",
                          taken, number, exc, line[:200])
    return events


def finish(path: str) -> None:
    os.unlink(path)
