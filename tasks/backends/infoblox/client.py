"""A WAPI session over requests, and the one place WAPI errors are translated.

Plain requests rather than the ``infoblox-client`` package: that package builds
``https://<host>/wapi/v<version>/`` itself (no base URL of our choosing),
disables certificate checks unless told otherwise, logs request payloads and
raw answers, and raises a bare ValueError on a non-JSON error body such as
NIOS's HTML 401 page.

Records are found again through the extensible attribute ``Nova Instance UUID``
(searched as ``*Nova Instance UUID=<uuid>``), which must be defined in the grid;
the client defines it on first use when the account may, and says what to do
when it may not. The searches a step makes before it writes go in one round trip,
WAPI's ``request`` object with a list of GETs (``Wapi.searches``), and its
writes in another (``Wapi.writes``). Under a threads pool the ``request`` objects
of steps running at once are merged into one (tasks/backends/coalesce.py): the
grid runs it as one transaction, and a refusal sends each step's calls again
alone, so only the step whose call the grid refused sees it.
"""

import re
import threading
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import requests

from tasks.backends import http
from tasks.backends.coalesce import Coalescer
from tasks.errors import AuthFailed, Misconfigured, PermanentError, StepError, TransientError

UUID_ATTR = "Nova Instance UUID"
_WAPI_URL = re.compile(r"^https?://[^/]+(/.*)?/wapi/v\d+(\.\d+)*/?$")
_PAGE = 1000
_defined = set()  # type: set
_defined_lock = threading.Lock()
#: one search: object type, return fields, criteria
Query = Tuple[str, List[str], Dict[str, str]]
#: one write: POST (object type), PUT or DELETE (reference), and its body (None: none)
Write = Tuple[str, str, Optional[Dict[str, Any]]]


class NotFound(PermanentError):
    """A reference that no longer exists (WAPI ``Client.Ibap.Data.NotFound``)."""


class DataConflict(PermanentError):
    """WAPI refused a write as a duplicate or conflict (``Client.Ibap.Data.Conflict``)."""


def extattrs(instance_uuid: str) -> Dict[str, Dict[str, str]]:
    return {UUID_ATTR: {"value": instance_uuid}}


def owner(record: Dict[str, Any]) -> Optional[str]:
    """The instance a record is tagged with, or None."""
    value = (record.get("extattrs") or {}).get(UUID_ATTR, {}).get("value")
    return str(value) if value else None


class Wapi(object):
    """Basic-auth requests to one grid master, each answer checked at one boundary."""

    def __init__(self, settings: Any, backend: str) -> None:
        url = settings.url or ""
        if not url:
            raise Misconfigured("[%s] url is not set (the WAPI base, e.g. "
                                "https://gm.example.com/wapi/v2.12)" % backend, backend=backend)
        if not _WAPI_URL.match(url):
            raise Misconfigured("[%s] url %r does not end in /wapi/v<version>" % (backend, url),
                                backend=backend)
        if not settings.username or not settings.password:
            raise Misconfigured("[%s] username and password are required for Infoblox (use "
                                "NOVAHOOKS_%s_PASSWORD or password_file)"
                                % (backend, backend.upper()), backend=backend)
        self.base = url.rstrip("/")
        self.backend = backend
        self.username = settings.username
        self.timeout = settings.timeout
        self.session = requests.Session()
        self.session.auth = (settings.username, settings.password.reveal())
        self.session.verify = settings.verify_tls
        self.session.headers["Content-Type"] = "application/json"
        self.coalescer = Coalescer(self.session.request, settings.batch_size,
                                   settings.batch_wait)

    def _fail(self, message: str, cls: type = PermanentError) -> StepError:
        return cls("Infoblox at %s: %s" % (self.base, message), backend=self.backend)

    def call(self, method: str, path: str, params: Optional[Dict[str, Any]] = None,
             body: Any = None) -> Any:
        where = "Infoblox at %s" % self.base
        url = "%s/%s" % (self.base, path)
        with http.reaching(where, self.backend):
            if path == "request" and method == "POST" and isinstance(body, list):
                reads = all(isinstance(c, dict) and c.get("method") == "GET" for c in body)
                response = self.coalescer.request(method, url, body,
                                                  group="searches" if reads else "writes",
                                                  params=params, timeout=self.timeout)
            else:
                response = self.session.request(method, url, params=params, json=body,
                                                timeout=self.timeout)
        status = response.status_code
        failed = http.failure(status)
        if failed is not None:
            code = _error_code(response)
            detail = "%s%s" % (code + ": " if code else "", _error_text(response))
            if code.startswith("Client.Ibap.Data.NotFound"):
                failed = NotFound
            elif code.startswith("Client.Ibap.Data.Conflict"):
                failed = DataConflict
            else:
                raise http.error(status, where, detail, self.backend,
                                 credential="user %r" % self.username)
            raise self._fail("HTTP %d %s" % (status, detail), failed)
        try:
            return response.json()
        except ValueError:
            raise self._fail("HTTP %d with an answer that is not JSON: %r"
                             % (status, response.text[:200]), TransientError) from None

    def _one(self, method: str, target: str, data: Optional[Dict[str, Any]] = None,
             args: Optional[Dict[str, Any]] = None) -> Any:
        """One call (a GET's ``data`` holds its search fields, ``args`` the ``_`` options);
        when steps may merge (``batch_size`` > 1) as a ``request`` object of one, so that
        it merges with other steps' calls waiting beside it. The grid answers such a call
        as it answers the call itself, wrapped in a list."""
        if self.coalescer.batch_size <= 1:
            if method == "GET":
                return self.call(method, target, dict(data or {}, **(args or {})))
            return self.call(method, target, args, data)
        answers = self.call("POST", "request", None, [_entry(method, target, data, args)])
        if not isinstance(answers, list) or len(answers) != 1:
            raise self._fail("a request of one %s %s answered %r"
                             % (method, target, str(answers)[:200]))
        return answers[0]

    def search(self, objtype: str, fields: List[str], **criteria: str) -> List[Dict[str, Any]]:
        """Objects matching every criterion (``*Attr`` keys search extensible attributes)."""
        found = self._one("GET", objtype, dict(criteria), {"_return_fields": ",".join(fields)})
        if not isinstance(found, list):
            raise self._fail("search of %s answered %r, not a list" % (objtype, found))
        return found

    def searches(self, queries: Sequence[Query]) -> List[List[Dict[str, Any]]]:
        """Several searches in one round trip (WAPI's ``request`` object, a list of GETs);
        each search's objects, in order. One search goes as a plain GET."""
        if len(queries) == 1:
            objtype, fields, criteria = queries[0]
            return [self.search(objtype, fields, **criteria)]
        body = [_entry("GET", objtype, dict(criteria), {"_return_fields": ",".join(fields)})
                for objtype, fields, criteria in queries]
        answers = self.call("POST", "request", None, body)
        if not isinstance(answers, list) or len(answers) != len(queries) or \
                not all(isinstance(found, list) for found in answers):
            raise self._fail("a request of %d searches answered %r, not a list of %d lists"
                             % (len(queries), str(answers)[:200], len(queries)))
        return answers

    def writes(self, calls: Sequence[Write], raced: str = "") -> List[Any]:
        """Several writes in one round trip (the ``request`` object), which the grid runs
        as one transaction: refused, none of them is kept. A duplicate is a race when
        ``raced`` names it (the retry finds the records). A delete of an object already
        gone refuses the list, so then each write goes alone (that delete is success)."""
        if len(calls) <= 1:
            return [self._write(call, raced) for call in calls]
        body = [_entry(method, target, data) for method, target, data in calls]
        try:
            answers = self.call("POST", "request", None, body)
        except NotFound:
            return [self._write(call, raced) for call in calls]
        except DataConflict as exc:
            if raced and "already exists" in str(exc):
                raise TransientError("%s were created concurrently: %s" % (raced, exc),
                                     backend=self.backend) from exc
            raise
        if not isinstance(answers, list) or len(answers) != len(calls):
            raise self._fail("a request of %d writes answered %r" % (len(calls),
                                                                      str(answers)[:200]))
        return answers

    def _write(self, call: Write, raced: str) -> Any:
        method, target, data = call
        if method == "DELETE":
            return self.delete(target)
        if method == "PUT":
            return self.update(target, data or {})
        return self.create(target, data or {}, raced=raced)

    def search_all(self, objtype: str, fields: List[str],
                   **criteria: str) -> Iterator[Dict[str, Any]]:
        """Like search, through WAPI paging: a plain GET fails beyond 1000 results."""
        params = dict(criteria, _return_fields=",".join(fields), _paging="1",
                      _max_results=str(_PAGE), _return_as_object="1")
        while True:
            page = self.call("GET", objtype, params)
            for item in page.get("result", []):
                yield item
            if not page.get("next_page_id"):
                return
            params["_page_id"] = page["next_page_id"]

    def create(self, objtype: str, body: Dict[str, Any], raced: str = "",
               fields: Optional[List[str]] = None) -> Any:
        """POST an object; a duplicate is a race (retry finds it) when ``raced`` names it."""
        params = {"_return_fields": ",".join(fields)} if fields else None
        try:
            return self._one("POST", objtype, body, params)
        except DataConflict as exc:
            if raced and "already exists" in str(exc):
                raise TransientError("%s was created concurrently: %s" % (raced, exc),
                                     backend=self.backend) from exc
            raise

    def update(self, ref: str, body: Dict[str, Any], fields: Optional[List[str]] = None) -> Any:
        params = {"_return_fields": ",".join(fields)} if fields else None
        return self._one("PUT", ref, body, params)

    def delete(self, ref: str) -> bool:
        """Delete by reference; an object already gone is success (False)."""
        try:
            self._one("DELETE", ref)
        except NotFound:
            return False
        return True

    def ensure_uuid_attribute(self) -> None:
        """Define the extensible attribute once per grid; NIOS refuses undefined ones."""
        with _defined_lock:
            if self.base in _defined:
                return
            if not self.search("extensibleattributedef", ["name", "type"], name=UUID_ATTR):
                try:
                    self.create("extensibleattributedef", {
                        "name": UUID_ATTR, "type": "STRING",
                        "comment": "OpenStack Nova instance (novahooks)"})
                except DataConflict:
                    pass  # another worker defined it first
                except AuthFailed as exc:
                    raise AuthFailed("%s; or define the extensible attribute %r (type STRING) "
                                     "in the grid" % (exc, UUID_ATTR),
                                     backend=self.backend) from exc
            _defined.add(self.base)

    def check_view(self, objtype: str, name: str, what: str) -> None:
        if not self.search(objtype, ["name"], name=name):
            raise Misconfigured("Infoblox at %s has no %s %r" % (self.base, what, name),
                                backend=self.backend)


def _entry(method: str, target: str, data: Optional[Dict[str, Any]] = None,
           args: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One call of a ``request`` object: a GET's ``data`` holds its search fields."""
    entry: Dict[str, Any] = {"method": method, "object": target}
    entry.update({key: value for key, value in (("data", data), ("args", args))
                  if value is not None})
    return entry


def _body(response: requests.Response) -> Dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_code(response: requests.Response) -> str:
    return str(_body(response).get("code") or "")


def _error_text(response: requests.Response) -> str:
    """WAPI's own words (``text``, else ``Error``), else the start of whatever came back."""
    data = _body(response)
    text = data.get("text") or data.get("Error")
    if text:
        return str(text)[:300]
    plain = re.sub(r"<[^>]+>", " ", response.text or "")
    return " ".join(plain.split())[:200] or response.reason or "no detail"
