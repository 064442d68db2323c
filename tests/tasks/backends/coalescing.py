"""Steps at once, as a threads pool runs them, and a first request held until others
queue behind it in a coalescer (tasks/backends/coalesce.py): what the batching tests of
NetBox and Infoblox share."""

import threading
from typing import Any, Callable, List

from tasks.backends.coalesce import Coalescer
from tests.helpers import until

#: which requests a hold concerns: (HTTP method, JSON body or None) -> counts
Kind = Callable[[str, Any], bool]


def at_once(calls: List[Callable[[], Any]]) -> List[Any]:
    """Run ``calls`` in threads started together; each one's result, or the exception
    it raised."""
    results: List[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the test asserts on each outcome
            results[i] = exc
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def hold_first(coalescer: Coalescer, waiting: int, kind: Kind) -> threading.Event:
    """The first request of ``kind`` is answered only once ``waiting`` others of that
    kind queue behind it (the server answering slowly while other steps write): they
    then go out as one request. Only parts of that kind count: other requests of the
    same steps wait in the same coalescer. Use a ``batch_wait`` longer than the hold,
    or a part waiting on a slow machine goes out late on its own, as it should.
    Returns what is set once the first request of that kind is held."""
    send, held = coalescer._send, threading.Event()

    def queued() -> int:
        return sum(1 for key, parts in list(coalescer._pending.items())
                   for part in list(parts) if kind(key[0], part.body))

    def slow_first(method: str, url: str, **kwargs: Any) -> Any:
        if kind(method.upper(), kwargs.get("json")) and not held.is_set():
            held.set()
            until(lambda: queued() >= waiting, 60,
                  "%d requests queued behind the first" % waiting)
        return send(method, url, **kwargs)
    coalescer._send = slow_first  # type: ignore[method-assign]
    return held


def busy(coalescer: Coalescer) -> bool:
    """A request of this coalescer is in flight."""
    return any(coalescer._in_flight.values())
