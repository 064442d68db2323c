"""The audit file as a Merkle log: each complete line is one leaf, as stored.

A leaf is the line's bytes without its newline, exactly as the writer put them
(canonical JSON since the Merkle log; the older chained lines as they were),
so the file is the log: no second copy to keep in step. A last line without
its newline is a write still in progress and not a leaf yet.
"""

import base64
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

from tasks.backends.audit.merkle import Tree, leaf_hash

CHUNK = 1 << 20


def lines(path: str, offset: int = 0) -> Iterator[Tuple[int, bytes]]:
    """(offset after the line, line without newline) for each complete line from ``offset``."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        rest = b""
        position = offset
        while True:
            chunk = handle.read(CHUNK)
            if not chunk:
                return
            data = rest + chunk
            start = 0
            while True:
                end = data.find(b"\n", start)
                if end < 0:
                    break
                position += end + 1 - start
                yield position, data[start:end]
                start = end + 1
            rest = data[start:]


class Log(object):
    """The tree over a file's lines, brought up to date with :meth:`catch_up`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tree = Tree()
        self.offset = 0
        #: byte offset at which each leaf starts, for reading a record back by index.
        self.starts: List[int] = []

    def catch_up(self) -> int:
        """Read the lines appended since the last call; the tree's new size."""
        if not os.path.exists(self.path):
            return self.tree.size
        start = self.offset
        for end, line in lines(self.path, self.offset):
            self.starts.append(start)
            self.tree.append(leaf_hash(line))
            self.offset = start = end
        return self.tree.size

    def record(self, index: int) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(self.starts[index])
            return handle.readline().rstrip(b"\n")

    def partial_tail(self) -> int:
        """Bytes after the last complete line (a write in progress, or a cut line)."""
        try:
            return os.path.getsize(self.path) - self.offset
        except OSError:
            return 0

    def find(self, instance_uuid: str,
             below: Optional[int] = None) -> Iterator[Tuple[int, Dict[str, Any]]]:
        """(index, record) of every record of one instance, oldest first."""
        needle = instance_uuid.encode()
        index = 0
        for _, line in lines(self.path):
            if below is not None and index >= below:
                return
            if needle in line:
                try:
                    record = json.loads(line)
                except ValueError:  # a torn line: verify names it
                    record = {}
                if isinstance(record, dict) and record.get("instance_uuid") == instance_uuid:
                    yield index, record
            index += 1


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()
