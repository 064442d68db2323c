"""Writes of several VMs' steps merged into one NetBox list request.

NetBox takes a list in one POST, PATCH or DELETE and runs it in one transaction,
at a fraction of a request per object; the drivers already write each VM's
objects of a kind in one list. When a worker runs several steps at once (a
threads pool: ``celery worker -P threads -c N``), each step still runs on its
own, with its own message, lock, ledger note, retries, log line and metrics, and
only its writes meet here. A write to an endpoint goes out at once unless one to
the same endpoint is in flight; then it waits for that one to come back (at most
``batch_wait`` ms), and all writes that waited go out together as one list
request of at most ``batch_size`` VMs' objects (group commit: no timer holds a
write that nothing is ahead of). Each step gets its own part of the answer, as if
it had sent its write alone. So:

* a step running alone never waits, and no write waits more than ``batch_wait``
  for the one ahead of it;
* NetBox refusing a merged write (4xx: one VM's object is wrong, a duplicate) sends
  each step's part again on its own, so only the bad VM's step sees the refusal
  and every other one gets its records;
* a step's message is acknowledged when its task returns, after its own records
  were written: a worker killed mid-batch loses nothing, and the redelivered
  steps find their records as they would after any lost note (the drivers'
  duplicate and stale paths), so nothing is made twice;
* reads of IP addresses by address (``?address=...``: the "held by another?" of
  the IPAM preflight and of ``ipam.reserve``) meet the same way: one GET for every
  address of the steps that waited, each step getting the records of its own
  addresses, as NetBox would have answered it alone. Other reads go out at once.

Under a prefork pool a process runs one step at a time: nothing ever meets, and
every write goes out at once, as before.
"""

import ipaddress
import json
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import requests
from requests.structures import CaseInsensitiveDict


#: write methods whose JSON list bodies NetBox accepts on its list endpoints
MERGED = ("POST", "PATCH", "DELETE")
#: refusals that concern the request as a whole, not one VM's objects in it
_WHOLE = (401, 403, 429)
#: the filter of IP address reads that several steps' reads share in one GET
LOOKUP = "address"
#: one page for a merged read (NetBox's MAX_PAGE_SIZE default): more, and each goes alone
PAGE = 1000

Send = Callable[..., requests.Response]


class _Part(object):
    """One step's write (its body) or read (its addresses), and the answer it will get."""

    def __init__(self, body: Any, kwargs: Dict[str, Any]) -> None:
        self.body = body
        self.kwargs = kwargs
        self.items: List[Any] = body if isinstance(body, list) else [body]
        self.response: Optional[requests.Response] = None
        self.error: Optional[BaseException] = None
        self.done = False


class Coalescer(object):
    """Merges concurrent writes to one endpoint; one per NetBox client (session)."""

    def __init__(self, send: Send, batch_size: int, batch_wait_ms: float) -> None:
        self._send = send
        self.batch_size = max(1, int(batch_size))
        self.batch_wait = max(0.0, float(batch_wait_ms)) / 1000.0
        self._lock = threading.Condition()
        self._in_flight: Dict[Tuple[str, ...], int] = {}
        self._pending: Dict[Tuple[str, ...], List[_Part]] = {}

    def request(self, method: str, url: str, body: Any, **kwargs: Any) -> requests.Response:
        """``method`` ``url`` with JSON ``body``, merged with writes that wait beside it."""
        if self.batch_size <= 1 or method.upper() not in MERGED or body is None:
            return self._send(method, url, json=body, **kwargs)
        return self._gather((method.upper(), url), _Part(body, kwargs), self._flush)

    def lookup(self, url: str, **kwargs: Any) -> requests.Response:
        """GET ``url`` filtered by ``address``, merged with such reads waiting beside it.

        Only plain addresses are merged (what each caller gets back is the records of
        its own, compared as addresses); a read with any other value goes alone.
        """
        params = dict(kwargs.get("params") or {})
        values = params.pop(LOOKUP, None)
        values = [values] if isinstance(values, str) else list(values or [])
        if self.batch_size <= 1 or not values or \
                not all("/" not in str(v) and _host(str(v)) for v in values):
            return self._send("GET", url, **kwargs)
        params.pop("limit", None)
        params.pop("offset", None)
        key = ("GET", url) + tuple(sorted("%s=%s" % (k, v) for k, v in params.items()))
        return self._gather(key, _Part(values, kwargs), self._flush_lookup)

    def _gather(self, key: Tuple[str, ...], part: "_Part",
                flush: Callable[[Tuple[str, ...], List["_Part"]], None]) -> requests.Response:
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

    def _take(self, key: Tuple[str, ...], part: _Part) -> List[_Part]:
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

    def _flush(self, key: Tuple[str, ...], batch: List[_Part]) -> None:
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
        elif 400 <= response.status_code < 500 and response.status_code not in _WHOLE:
            for part in batch:  # one VM's objects were refused: find which, alone
                self._alone(method, url, part)
        else:
            for part in batch:
                part.response, part.done = _copy(response, response.content), True

    def _flush_lookup(self, key: Tuple[str, ...], batch: List[_Part]) -> None:
        """One GET for every address of ``batch``; each part gets the records of its own.

        An answer of more than one page, or not NetBox's page shape, is no answer to
        split: then each part sends its own read.
        """
        url = key[1]
        if len(batch) == 1:
            self._alone("GET", url, batch[0])
            return
        kwargs = dict(batch[0].kwargs)
        params = dict(kwargs.get("params") or {})
        params.update({LOOKUP: sorted({v for part in batch for v in part.items}),
                       "limit": PAGE})
        params.pop("offset", None)
        kwargs["params"] = params
        try:
            response = self._send("GET", url, **kwargs)
            page = response.json() if response.ok else None
        except ValueError:
            page = None
        except BaseException as exc:  # noqa: BLE001 - each step translates it as its own
            for part in batch:
                part.error, part.done = exc, True
            return
        results = page.get("results") if isinstance(page, dict) else None
        if not isinstance(page, dict) or not isinstance(results, list) or page.get("next") or \
                not all(_host(str(r.get("address", ""))) for r in results):
            for part in batch:
                self._alone("GET", url, part)
            return
        for part in batch:
            wanted = {_host(v) for v in part.items}
            mine = [r for r in results if _host(str(r["address"])) in wanted]
            body = {"count": len(mine), "next": None, "previous": None, "results": mine}
            part.response, part.done = _copy(response, json.dumps(body).encode()), True

    def _alone(self, method: str, url: str, part: _Part) -> None:
        try:
            if method == "GET":
                part.response = self._send(method, url, **part.kwargs)
            else:
                part.response = self._send(method, url, json=part.body, **part.kwargs)
        except BaseException as exc:  # noqa: BLE001 - raised in the step that wrote it
            part.error = exc
        part.done = True

    @staticmethod
    def _split(response: requests.Response, batch: List[_Part]) -> None:
        if not response.content:  # DELETE: 204, nothing to split
            for part in batch:
                part.response, part.done = _copy(response, b""), True
            return
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, list) or len(answer) != sum(len(p.items) for p in batch):
            for part in batch:  # not NetBox's list answer: let each step see what came
                part.response, part.done = _copy(response, response.content), True
            return
        start = 0
        for part in batch:
            mine = answer[start:start + len(part.items)]
            start += len(part.items)
            body = mine if isinstance(part.body, list) else mine[0]
            part.response, part.done = _copy(response, json.dumps(body).encode()), True


def _host(value: str) -> Optional[str]:
    """An address (with or without a prefix length) as one spelling, None if it is none."""
    try:
        return str(ipaddress.ip_interface(value).ip) if value else None
    except ValueError:
        return None


def _copy(response: requests.Response, content: bytes) -> requests.Response:
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
