"""Writes of several VMs' steps merged into one list request (group commit).

NetBox takes a list in one POST, PATCH or DELETE, and WAPI a list of calls in one
``request`` object; each runs the list as one transaction, at a fraction of a
request per object. When a worker runs several steps at once (a threads pool:
``celery worker -P threads -c N``), each step still runs on its own, with its own
message, lock, ledger note, retries, log line and metrics, and only its writes
meet here. A write to an endpoint goes out at once unless one to the same
endpoint is in flight; then it waits for that one to come back (at most
``batch_wait`` ms), and all writes that waited go out together as one list
request of at most ``batch_size`` steps' parts (no timer holds a write that
nothing is ahead of). Each step gets its own slice of the answer, as if it had
sent its write alone. So:

* a step running alone never waits, and no write waits more than ``batch_wait``
  for the one ahead of it;
* the server refusing a merged write (4xx: one VM's object is wrong, a duplicate,
  a reference already gone) sends each step's part again on its own, so only the
  bad VM's step sees the refusal and every other one gets its records;
* a step's message is acknowledged when its task returns, after its own records
  were written: a worker killed mid-batch loses nothing, and the redelivered
  steps find their records as they would after any lost note (the drivers'
  duplicate and stale paths), so nothing is made twice.

Under a prefork pool a process runs one step at a time: nothing ever meets, and
every write goes out at once, as before. Backend specifics (which requests may
merge, NetBox's shared reads by address) stay with each backend's client.
"""

import json
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import requests
from requests.structures import CaseInsensitiveDict


#: write methods whose JSON list bodies may merge (NetBox's list endpoints, WAPI's request)
MERGED = ("POST", "PATCH", "DELETE")
#: refusals that concern the request as a whole, not one VM's objects in it
WHOLE = (401, 403, 429)

Send = Callable[..., requests.Response]


class Part(object):
    """One step's write (its body) or read (its addresses), and the answer it will get."""

    def __init__(self, body: Any, kwargs: Dict[str, Any]) -> None:
        self.body = body
        self.kwargs = kwargs
        self.items: List[Any] = body if isinstance(body, list) else [body]
        self.response: Optional[requests.Response] = None
        self.error: Optional[BaseException] = None
        self.done = False


class Coalescer(object):
    """Merges concurrent writes to one endpoint; one per client (session)."""

    def __init__(self, send: Send, batch_size: int, batch_wait_ms: float) -> None:
        self._send = send
        self.batch_size = max(1, int(batch_size))
        self.batch_wait = max(0.0, float(batch_wait_ms)) / 1000.0
        self._lock = threading.Condition()
        self._in_flight: Dict[Tuple[str, ...], int] = {}
        self._pending: Dict[Tuple[str, ...], List[Part]] = {}

    def request(self, method: str, url: str, body: Any, group: str = "",
                **kwargs: Any) -> requests.Response:
        """``method`` ``url`` with JSON ``body``, merged with writes that wait beside it.

        Only requests of the same ``group`` merge or wait for each other: WAPI's
        ``request`` object carries searches and writes alike, and a step's searches
        should not wait behind other steps' writes, nor be sent again when one of
        those is refused."""
        if self.batch_size <= 1 or method.upper() not in MERGED or body is None:
            return self._send(method, url, json=body, **kwargs)
        return self._gather((method.upper(), url, group), Part(body, kwargs), self._flush)

    def _gather(self, key: Tuple[str, ...], part: "Part",
                flush: Callable[[Tuple[str, ...], List["Part"]], None]) -> requests.Response:
        """Group commit: ``part`` goes at once unless a request of ``key`` is in flight;
        then with the parts that waited for it, by ``flush``, at most ``batch_wait`` late."""
        queued = time.monotonic()
        with self._lock:
            self._pending.setdefault(key, []).append(part)
            while not part.done:
                late = time.monotonic() - queued >= self.batch_wait
                if part in self._pending.get(key, ()) and \
                        (not self._in_flight.get(key) or late):
                    batch = self._take(key, part)
                    self._in_flight[key] = self._in_flight.get(key, 0) + 1
                    self._lock.release()
                    try:
                        flush(key, batch)
                    except BaseException as exc:  # noqa: BLE001 - nobody may wait forever
                        for other in batch:
                            if not other.done:
                                other.error, other.done = exc, True
                    finally:
                        self._lock.acquire()
                        self._in_flight[key] -= 1
                        self._lock.notify_all()
                    continue
                self._lock.wait(None if late else max(0.001, self.batch_wait -
                                                      (time.monotonic() - queued)))
        if part.error is not None:
            raise part.error
        assert part.response is not None
        return part.response

    def _take(self, key: Tuple[str, ...], part: Part) -> List[Part]:
        """Up to ``batch_size`` waiting parts, ``part`` among them (called under the lock)."""
        pending = self._pending[key]
        pending.remove(part)
        batch = [part] + pending[:self.batch_size - 1]
        rest = pending[self.batch_size - 1:]
        if rest:
            self._pending[key] = rest
        else:
            del self._pending[key]
        return batch

    def _flush(self, key: Tuple[str, ...], batch: List[Part]) -> None:
        """One list request for ``batch``; each part gets its slice (outside the lock)."""
        method, url = key[0], key[1]
        if len(batch) == 1:
            self._alone(method, url, batch[0])
            return
        merged = [item for part in batch for item in part.items]
        try:
            response = self._send(method, url, json=merged, **batch[0].kwargs)
        except BaseException as exc:  # noqa: BLE001 - each step translates it as its own
            for part in batch:
                part.error, part.done = exc, True
            return
        if response.ok:
            self._split(response, batch)
        elif 400 <= response.status_code < 500 and response.status_code not in WHOLE:
            for part in batch:  # one VM's objects were refused: find which, alone
                self._alone(method, url, part)
        else:
            for part in batch:
                part.response, part.done = copy_response(response, response.content), True

    def _alone(self, method: str, url: str, part: Part) -> None:
        try:
            if method == "GET":
                part.response = self._send(method, url, **part.kwargs)
            else:
                part.response = self._send(method, url, json=part.body, **part.kwargs)
        except BaseException as exc:  # noqa: BLE001 - raised in the step that wrote it
            part.error = exc
        part.done = True

    @staticmethod
    def _split(response: requests.Response, batch: List[Part]) -> None:
        if not response.content:  # DELETE: 204, nothing to split
            for part in batch:
                part.response, part.done = copy_response(response, b""), True
            return
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, list) or len(answer) != sum(len(p.items) for p in batch):
            for part in batch:  # not a list answer of as many items: let each step see what came
                part.response, part.done = copy_response(response, response.content), True
            return
        start = 0
        for part in batch:
            mine = answer[start:start + len(part.items)]
            start += len(part.items)
            body = mine if isinstance(part.body, list) else mine[0]
            part.response, part.done = copy_response(response, json.dumps(body).encode()), True


def copy_response(response: requests.Response, content: bytes) -> requests.Response:
    """A response like ``response`` with ``content`` as its body."""
    copy = requests.Response()
    copy.status_code = response.status_code
    copy.reason = response.reason
    copy.headers = CaseInsensitiveDict({k: v for k, v in response.headers.items()
                                        if k.lower() not in ("content-length",
                                                             "content-encoding")})
    copy.url = response.url
    copy.request = response.request
    copy.encoding = response.encoding or "utf-8"
    copy.elapsed = response.elapsed
    copy._content = content
    return copy
