"""A progress bar for long operations, on a terminal only; pipes and logs stay quiet."""

import sys
import time
from typing import IO, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")


class Progress(object):
    def __init__(self, total: int, what: str, stream: Optional[IO[str]] = None) -> None:
        self.total = max(total, 0)
        self.what = what
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.started = time.monotonic()

    def advance(self, step: int = 1) -> None:
        self.done += step
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        self.stream.write("\r%s [%s%s] %d/%d %.1fs" % (
            self.what, "#" * filled, "." * (width - filled), self.done, self.total,
            time.monotonic() - self.started))
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def track(items: Iterable[T], total: int, what: str) -> Iterator[T]:
    bar = Progress(total, what)
    for item in items:
        yield item
        bar.advance()
