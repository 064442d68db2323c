"""A CMDB's REST API as inventory, for CMDBs without a Python client.

Everything site-specific is configuration ([inventory], driver = rest): URL
templates for find, list, create, update and delete (``{uuid}`` and ``{id}``
are filled in, URL-quoted), the auth header and token, the CMDB's id field,
where a search answer keeps its list (``results_key``), and ``field_map``:
``cmdb_field=event_field`` pairs choosing what the CMDB receives. The record is
found again by the field mapped from ``uuid``, checked on our side too: a CMDB
that ignores an unknown query parameter answers with every record, and that
must never be taken for this instance's record.
"""

import string
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import requests

from novahooks.event import InstanceEvent
from tasks.backends.inventory.base import (InventoryDeregistered, InventoryDriver, InventoryHeld,
                                           InventoryRegistered, status_of)
from tasks.backends import http
from tasks.errors import Misconfigured, PermanentError, TransientError

BACKEND = "inventory"
DECOMMISSIONED = "decommissioned"
_NIL_UUID = "00000000-0000-0000-0000-000000000000"
#: Pages of one list answer followed at most (a CMDB whose next link loops must end).
MAX_PAGES = 10000


def _flavor(field: str) -> Callable[[InstanceEvent], Any]:
    return lambda ev: getattr(ev.flavor, field) if ev.flavor is not None else None


#: The event fields a CMDB field may be mapped from.
SOURCES = {
    "uuid": lambda ev: ev.uuid, "hostname": lambda ev: ev.hostname,
    "display_name": lambda ev: ev.display_name, "project_id": lambda ev: ev.project_id,
    "user_id": lambda ev: ev.user_id, "availability_zone": lambda ev: ev.availability_zone,
    "host": lambda ev: ev.host, "vm_state": lambda ev: ev.vm_state,
    "image": lambda ev: ev.image, "os_type": lambda ev: ev.os_type,
    "status": status_of,
    "addresses": lambda ev: None if ev.addresses is None else [a.address for a in ev.addresses],
    "macs": lambda ev: None if ev.addresses is None else sorted(
        {a.mac for a in ev.addresses if a.mac}),
}  # type: Dict[str, Callable[[InstanceEvent], Any]]
SOURCES.update({"flavor." + f: _flavor(f) for f in ("name", "vcpus", "memory_mb", "root_gb",
                                                     "ephemeral_gb", "swap")})
#: Sources an event may not know yet (pre-boot): left out rather than sent as null.
_OPTIONAL = ("addresses", "macs")


def _template(settings: Any, key: str, needs: str) -> str:
    value = getattr(settings, key)
    names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    if not value.startswith("/") or not names <= {"uuid", "id"} or (needs and needs not in names):
        raise Misconfigured("[inventory] %s %r must be a path starting with / whose only "
                            "placeholders are {uuid} and {id}%s" % (
                                key, value, " and it needs {%s}" % needs if needs else ""),
                            backend=BACKEND)
    return value


class RestInventory(InventoryDriver):
    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        if not settings.url:
            raise Misconfigured("[inventory] url is not set", backend=BACKEND)
        if not settings.token:
            raise Misconfigured("[inventory] token is not set (use NOVAHOOKS_INVENTORY_TOKEN "
                                "or token_file)", backend=BACKEND)
        if settings.update_method.upper() not in ("PUT", "PATCH"):
            raise Misconfigured("[inventory] update_method must be PUT or PATCH, not %r"
                                % settings.update_method, backend=BACKEND)
        self.urls = {"find": _template(settings, "find_url", "uuid"),
                     "list": _template(settings, "list_url", ""),
                     "create": _template(settings, "create_url", ""),
                     "update": _template(settings, "update_url", "id"),
                     "delete": _template(settings, "delete_url", "id")}
        self.fields = {}  # type: Dict[str, str]
        for pair in settings.field_map:
            target, sep, source = (part.strip() for part in pair.partition("="))
            if not sep or not target or source not in SOURCES:
                raise Misconfigured("[inventory] field_map: %r is not cmdb_field=event_field "
                                    "with event_field one of %s" % (pair, ", ".join(SOURCES)),
                                    backend=BACKEND)
            self.fields[target] = source
        by_source = {source: target for target, source in self.fields.items()}
        if "uuid" not in by_source:
            raise Misconfigured("[inventory] field_map must map a field from uuid (how the "
                                "record is found again)", backend=BACKEND)
        if settings.on_delete == "decommission" and "status" not in by_source:
            raise Misconfigured("[inventory] on_delete = decommission needs a field mapped "
                                "from status in field_map", backend=BACKEND)
        self.uuid_field = by_source["uuid"]
        self.name_field = by_source.get("hostname")
        self.status_field = by_source.get("status")
        self.base = settings.url.rstrip("/")
        self.session = requests.Session()
        scheme = settings.auth_scheme.strip()
        token = settings.token.reveal()
        self.session.headers[settings.auth_header] = "%s %s" % (scheme, token) if scheme else token
        self.session.verify = settings.verify_tls

    def _url(self, kind: str, **values: Any) -> str:
        quoted = {k: urllib.parse.quote(str(v), safe="") for k, v in values.items()}
        return self.base + self.urls[kind].format(**quoted)

    def _call(self, method: str, url: str, body: Any = None, absent_ok: bool = False) -> Any:
        return self._answer(method, url, body, absent_ok)[0]

    def _answer(self, method: str, url: str, body: Any = None,
                absent_ok: bool = False) -> Tuple[Any, requests.Response]:
        """The decoded JSON answer (None for none) and the response it came in."""
        with http.reaching("CMDB at %s" % self.base, BACKEND):
            response = self.session.request(method, url, json=body,
                                            timeout=self.settings.timeout)
        status = response.status_code
        detail = " ".join((response.text or response.reason or "").split())[:300]
        where = "CMDB %s %s" % (method, url.split("?")[0])
        if status == 404 and absent_ok:
            return None, response
        if status == 409 and method == "POST":
            raise TransientError("%s answered HTTP 409: created concurrently, the retry finds "
                                 "it (%s)" % (where, detail), backend=BACKEND)
        if status == 404 and method != "GET":
            raise TransientError("%s answered HTTP 404: the record vanished meanwhile (%s)"
                                 % (where, detail), backend=BACKEND)
        if http.failure(status) is not None:
            raise http.error(status, where, detail, BACKEND)
        if status == 204 or not response.content:
            return None, response
        try:
            return response.json(), response
        except ValueError:
            raise PermanentError("%s answered HTTP %d with an answer that is not JSON (is the "
                                 "URL template right?): %r" % (where, status, response.text[:200]),
                                 backend=BACKEND) from None

    def _next_page(self, answer: Any, response: requests.Response, url: str) -> Optional[str]:
        """The next page of a list answer: the answer's ``next_key`` field (DRF, NetBox
        and many CMDBs) or an RFC 8288 ``Link: <...>; rel="next"`` header.

        Only a link to the CMDB's own scheme, host and port is followed: the token
        goes with every request.
        """
        link = answer
        for key in filter(None, self.settings.next_key.split(".")):
            link = link.get(key) if isinstance(link, dict) else None
        if not isinstance(link, str) or not link:
            link = (response.links.get("next") or {}).get("url")
        if not link:
            return None
        target = urllib.parse.urljoin(url, link)
        if urllib.parse.urlsplit(target)[:2] != urllib.parse.urlsplit(self.base)[:2]:
            raise PermanentError("CMDB GET %s pointed its next page at %s, outside %s: not "
                                 "followed (the token would go with it)"
                                 % (url.split("?")[0], target.split("?")[0], self.base),
                                 backend=BACKEND)
        return target

    def _all_records(self, url: str) -> List[Dict[str, Any]]:
        """Every record of a paged list, in order."""
        records: List[Dict[str, Any]] = []
        seen: Set[str] = set()
        page: Optional[str] = url
        while page is not None:
            if page in seen or len(seen) >= MAX_PAGES:
                raise PermanentError("CMDB GET %s: paging did not end after %d pages (a "
                                     "next link loops)" % (url.split("?")[0], len(seen)),
                                     backend=BACKEND)
            seen.add(page)
            answer, response = self._answer("GET", page)
            records.extend(self._records(answer, page))
            page = self._next_page(answer, response, page)
        return records

    def _records(self, answer: Any, url: str) -> List[Dict[str, Any]]:
        found = answer
        for key in filter(None, self.settings.results_key.split(".")):
            found = found.get(key) if isinstance(found, dict) else None
        if not isinstance(found, list):
            raise PermanentError("CMDB GET %s did not answer a list%s (set [inventory] "
                                 "results_key)" % (url.split("?")[0], " under %r" %
                                                   self.settings.results_key
                                                   if self.settings.results_key else ""),
                                 backend=BACKEND)
        return [r for r in found if isinstance(r, dict)]

    def find(self, instance_uuid: str) -> Optional[Dict[str, Any]]:
        url = self._url("find", uuid=instance_uuid)
        mine = [r for r in self._records(self._call("GET", url), url)
                if str(r.get(self.uuid_field)) == instance_uuid]
        if not mine:
            return None
        return min(mine, key=lambda r: str(r.get(self.settings.id_field)))

    def _ident(self, record: Dict[str, Any]) -> Any:
        ident = record.get(self.settings.id_field)
        if ident is None:
            raise PermanentError("CMDB record has no %r field (set [inventory] id_field)"
                                 % self.settings.id_field, backend=BACKEND)
        return ident

    def _body(self, event: InstanceEvent) -> Dict[str, Any]:
        body = {}
        for target, source in self.fields.items():
            value = SOURCES[source](event)
            if value is None and source in _OPTIONAL:
                continue
            body[target] = value
        return body

    def register(self, event: InstanceEvent) -> InventoryRegistered:
        body = self._body(event)
        record = self.find(event.uuid)
        if record is None:
            created = self._call("POST", self._url("create"), body)
            ident = self._ident(created) if isinstance(created, dict) else None
            return {"id": ident, "action": "created"}
        if event.addresses is None and self.status_field:
            # A pre-boot event handled after the build's must not make an active VM planned.
            body.pop(self.status_field, None)
        ident = self._ident(record)
        if all(record.get(k) == v for k, v in body.items()):
            return {"id": ident, "action": "unchanged"}
        if self.settings.update_method.upper() == "PUT":
            body = dict({k: v for k, v in record.items() if k != self.settings.id_field}, **body)
        self._call(self.settings.update_method.upper(), self._url("update", id=ident), body)
        return {"id": ident, "action": "updated"}

    def deregister(self, event: InstanceEvent) -> InventoryDeregistered:
        record = self.find(event.uuid)
        if record is None:
            return {"id": None}
        ident = self._ident(record)
        if self.settings.on_delete == "delete":
            self._call("DELETE", self._url("delete", id=ident), absent_ok=True)
            return {"id": ident, "action": "deleted"}
        change = {str(self.status_field): DECOMMISSIONED}
        if self.settings.update_method.upper() == "PUT":
            change = dict({k: v for k, v in record.items() if k != self.settings.id_field},
                          **change)
        self._call(self.settings.update_method.upper(), self._url("update", id=ident), change)
        return {"id": ident, "action": "decommissioned"}

    def describe(self, instance_uuid: str) -> InventoryHeld:
        """The record's id, and its name and status through ``field_map`` (None unmapped)."""
        record = self.find(instance_uuid)
        if record is None:
            return {}
        return {"id": self._ident(record),
                "name": record.get(self.name_field) if self.name_field else None,
                "status": record.get(self.status_field) if self.status_field else None}

    def check(self) -> str:
        self.find(_NIL_UUID)
        return "CMDB at %s answered, token accepted" % self.base

    def managed(self) -> Dict[str, Dict[str, Any]]:
        held = {}  # type: Dict[str, Dict[str, Any]]
        for record in self._all_records(self._url("list")):
            uuid = record.get(self.uuid_field)
            if uuid:
                held[str(uuid)] = {"name": record.get(self.name_field) if self.name_field
                                   else None,
                                   "status": record.get(self.status_field)
                                   if self.status_field else None}
        return held
