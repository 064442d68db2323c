"""One pynetbox client per driver, and the single place NetBox errors are translated.

Records are found again through the custom field ``nova_instance_uuid``
(created on first use), which is what lets every operation be keyed by the
instance and repeated safely.
"""

import contextlib
import threading
from typing import Any, Dict, Iterator, List

import pynetbox
import requests
import requests.adapters

from tasks.backends import http
from tasks.backends.netbox.coalesce import LOOKUP, NetBoxCoalescer
from tasks.errors import Misconfigured, OutOfScope, TransientError

UUID_FIELD = "nova_instance_uuid"
PROJECT_FIELD = "nova_project_id"
CUSTOM_FIELDS = {
    UUID_FIELD: ("Nova instance UUID", ["ipam.ipaddress", "virtualization.virtualmachine"]),
    PROJECT_FIELD: ("Nova project", ["virtualization.virtualmachine"]),
}
_ready_lock = threading.Lock()


#: NetBox names every request it serves (``X-Request-ID``) and files each object change
#: of a write under that id in its changelog: what ties an audit record to NetBox's history.
REQUEST_ID = "X-Request-ID"
_WRITES = ("POST", "PUT", "PATCH", "DELETE")
#: the endpoint whose reads by address steps running at once share (coalesce.py)
ADDRESSES = "/api/ipam/ip-addresses/"
#: connections kept open per NetBox, one per step of a threads pool (-c up to 32)
POOL_CONNECTIONS = 32


def host(address: Any) -> str:
    """An address as the pipeline spells it: NetBox records it with its prefix length
    (``10.20.0.5/16``), events and ledger notes without."""
    return str(address).split("/")[0]


class _TimeoutSession(requests.Session):
    """Every call with the configured timeout; the request ids of this thread's writes
    are kept until a step takes them (:func:`take_request_ids`); writes of steps running
    at once, and their reads of addresses by address, go through the coalescer
    (tasks/backends/netbox/coalesce.py)."""

    def __init__(self, timeout: float, batch_size: int = 1, batch_wait_ms: float = 0) -> None:
        super().__init__()
        self._timeout = timeout
        self._writes = threading.local()
        self.coalescer = NetBoxCoalescer(self._send, batch_size, batch_wait_ms)
        # A threads pool's steps share this session: a connection each, not urllib3's 10.
        for prefix in ("http://", "https://"):
            self.mount(prefix, requests.adapters.HTTPAdapter(pool_maxsize=POOL_CONNECTIONS))

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        return super().request(method, url, **kwargs)

    def request(self, method: str, url: Any, *args: Any,  # type: ignore[override]
                **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        if not args and kwargs.get("json") is not None and kwargs.get("data") is None:
            body = kwargs.pop("json")
            kwargs.pop("data", None)
            response = self.coalescer.request(str(method), str(url), body, **kwargs)
        elif not args and str(method).upper() == "GET" and str(url).endswith(ADDRESSES) \
                and LOOKUP in (kwargs.get("params") or {}):
            kwargs.pop("json", None)
            response = self.coalescer.lookup(str(url), **kwargs)
        else:
            response = super().request(method, url, *args, **kwargs)
        request_id = response.headers.get(REQUEST_ID)
        if request_id and str(method).upper() in _WRITES:
            self.request_ids().append(request_id)
        return response

    def request_ids(self) -> List[str]:
        ids = getattr(self._writes, "ids", None)
        if ids is None:
            ids = self._writes.ids = []
        return ids


def take_request_ids(api: pynetbox.api) -> List[str]:
    """The ``X-Request-ID`` of each write this thread made through ``api`` since the last
    call, oldest first (NetBox's changelog lists the changes under those ids)."""
    session = api.http_session
    if not isinstance(session, _TimeoutSession):
        return []
    ids = session.request_ids()
    taken = list(ids)
    del ids[:]
    return taken


def connect(settings: Any, backend: str) -> pynetbox.api:
    if not settings.url:
        raise Misconfigured("[%s] url is not set" % backend, backend=backend)
    if not settings.token:
        raise Misconfigured("[%s] token is not set (use NOVAHOOKS_%s_TOKEN or token_file)"
                            % (backend, backend.upper()), backend=backend)
    api = pynetbox.api(settings.url, token=settings.token.reveal())
    session = _TimeoutSession(settings.timeout, getattr(settings, "batch_size", 1),
                              getattr(settings, "batch_wait", 0))
    session.verify = settings.verify_tls
    api.http_session = session
    return api


@contextlib.contextmanager
def translated(backend: str, url: str) -> Iterator[None]:
    """Map pynetbox and requests failures onto transient or permanent step errors."""
    try:
        yield
    except pynetbox.AllocationError as exc:
        raise OutOfScope("no free address: %s" % exc, backend=backend) from exc
    except pynetbox.RequestError as exc:
        status = getattr(exc.req, "status_code", 0)
        detail = str(exc.error)[:300] if getattr(exc, "error", None) else str(exc)[:300]
        raise http.error(status, "NetBox at %s" % url, detail, backend) from exc
    except pynetbox.ContentError as exc:
        raise TransientError("NetBox at %s sent an unreadable answer: %s" % (url, exc),
                             backend=backend) from exc
    except http.UNREACHABLE as exc:
        raise http.unreachable("NetBox at %s" % url, exc, backend) from exc


@contextlib.contextmanager
def raced(backend: str, what: str) -> Iterator[None]:
    """A create refused as a duplicate means a concurrent worker made it first.

    Retrying is right: the next attempt finds the record and treats it as its own
    (or as a conflict, if another instance holds it).
    """
    try:
        yield
    except pynetbox.RequestError as exc:
        text = str(getattr(exc, "error", "") or exc).lower()
        if _refused(exc, "duplicate", "already exists", "must be unique"):
            raise TransientError("%s was created concurrently: %s" % (what, text[:200]),
                                 backend=backend) from exc
        raise


class Stale(Exception):
    """A write by id or a create showed that what the ledger remembers is behind NetBox.

    Raised only inside a driver, which then reads NetBox and applies the change again.
    """


def _refused(exc: Any, *words: str) -> bool:
    text = str(getattr(exc, "error", "") or exc).lower()
    return getattr(exc.req, "status_code", 0) == 400 and any(word in text for word in words)


@contextlib.contextmanager
def stale_if_refused() -> Iterator[None]:
    """A write naming an object NetBox no longer has (404; a bulk write's 400 "does not
    exist"), or a create of one it already has (400 duplicate): the ledger is behind."""
    try:
        yield
    except pynetbox.RequestError as exc:
        if getattr(exc.req, "status_code", 0) == 404 or _refused(
                exc, "does not exist", "could not be found", "object not found", "duplicate",
                "already exists", "must be unique"):
            raise Stale(str(exc)[:300]) from exc
        raise


def owned_by(endpoint: Any, instance_uuid: str, **lookup: Any) -> List[Any]:
    """Records whose custom field names this instance.

    Checked again on our side: NetBox silently ignores a filter it does not know
    (a custom field someone deleted), and "all records" must never be taken
    for "this instance's records" by a release.
    """
    lookup["cf_" + UUID_FIELD] = instance_uuid
    return [record for record in endpoint.filter(**lookup)
            if (record.custom_fields or {}).get(UUID_FIELD) == instance_uuid]


def first(endpoint: Any, **lookup: Any) -> Any:
    """The oldest matching record, or None.

    Not ``endpoint.get``: where NetBox enforces no uniqueness, two workers racing
    may both have created one, and every worker must then settle on the same.
    """
    found = list(endpoint.filter(**lookup))
    return min(found, key=lambda record: int(record.id)) if found else None


def get_or_create(endpoint: Any, lookup: Dict[str, Any], fields: Dict[str, Any]) -> Any:
    """Find a record or make it, tolerating another worker making it at the same moment."""
    found = first(endpoint, **lookup)
    if found is not None:
        return found
    try:
        endpoint.create(**fields)
    except pynetbox.RequestError:
        if first(endpoint, **lookup) is None:
            raise
    return first(endpoint, **lookup)


def ensure_custom_fields(api: pynetbox.api) -> None:
    """Create the custom fields this product keys on, once, tolerating a racing worker."""
    with _ready_lock:
        for name, (label, object_types) in CUSTOM_FIELDS.items():
            existing = first(api.extras.custom_fields, name=name)
            if existing is None:
                get_or_create(api.extras.custom_fields, {"name": name},
                              {"name": name, "label": label, "type": "text",
                               "object_types": object_types})
            else:
                have = set(existing.object_types or [])
                if not set(object_types) <= have:
                    existing.update({"object_types": sorted(have | set(object_types))})


def check(api: pynetbox.api, backend: str, url: str) -> str:
    """NetBox answers, and the token may read what the driver needs."""
    with translated(backend, url):
        version = api.status().get("netbox-version")
        api.ipam.prefixes.count()
        api.virtualization.virtual_machines.count()
    return "NetBox %s at %s, token accepted" % (version, url)


def managed(endpoint: Any, **lookup: Any) -> List[Any]:
    """Records carrying our custom field, whoever's instance it names."""
    lookup["cf_%s__empty" % UUID_FIELD] = "false"
    return [record for record in endpoint.filter(**lookup)
            if (record.custom_fields or {}).get(UUID_FIELD)]
