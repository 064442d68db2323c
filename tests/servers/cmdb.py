"""A small CMDB with a REST API, for the generic inventory driver's tests and demos.

It stands for the in-house and commercial CMDBs that have no Python client but
a JSON API: one collection of configuration items at ``/api/cis``, a bearer
token, a server-assigned ``id``, and a field that must be unique (``uuid`` by
default) so two creates racing for one instance cannot both win:

* ``GET /api/cis?field=value...`` -> ``{"count": n, "next": url|null, "previous": url|null,
  "results": [...]}``: exact matches on the filterable fields (``--filters``); other
  parameters are ignored, as many REST frameworks ignore them (Django REST framework's
  filter backends do). Paged as DRF's LimitOffsetPagination pages: ``limit`` (default and
  maximum ``--page-size``) and ``offset``; the next page is also in an RFC 8288
  ``Link: <url>; rel="next"`` header. Page links use ``--public-url`` when set (a CMDB
  behind a proxy names itself), else the request's Host
* ``POST /api/cis`` -> 201 and the stored item; 409 when the unique field is taken
* ``GET|PUT|PATCH|DELETE /api/cis/<id>`` -> the item (PUT replaces, PATCH merges), 204, or 404
* 401 ``{"detail": ...}`` without the right ``Authorization: Bearer <token>``

Run: ``python -m tests.servers.cmdb --port N --token-file F``;
:func:`start_cmdb` does that and waits until it answers.
"""

import argparse
import itertools
import json
import re
import secrets
import sys
import threading
import urllib.parse
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tests.servers.base import Process, Server, free_port
from tests.servers.http import StandInHandler


class Store(object):
    def __init__(self, unique: str, filters: Sequence[str]) -> None:
        self.filters = set(filters)
        self.lock = threading.Lock()
        self.items = {}  # type: Dict[int, Dict[str, Any]]
        self.ids = itertools.count(1)
        self.unique = unique

    def taken(self, item: Dict[str, Any], other_than: Optional[int] = None) -> bool:
        value = item.get(self.unique)
        return value is not None and any(
            ci.get(self.unique) == value for i, ci in self.items.items() if i != other_than)


class Handler(StandInHandler):
    store = Store("uuid", ("uuid",))
    token = ""
    page_size = 50
    public_url = ""

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        given = self.headers.get("Authorization", "")
        if not secrets.compare_digest(given.encode(), ("Bearer " + self.token).encode()):
            self._send(401, {"detail": "Invalid or missing token."})
            return
        url = urllib.parse.urlsplit(self.path)
        match = re.fullmatch(r"/api/cis(?:/(\d+))?/?", url.path)
        if match is None:
            self._send(404, {"detail": "Not found."})
            return
        body: Dict[str, Any] = {}
        if method in ("POST", "PUT", "PATCH"):
            try:
                parsed = json.loads(raw)
            except ValueError as exc:
                self._send(400, {"detail": "JSON parse error: %s" % exc})
                return
            if not isinstance(parsed, dict):
                self._send(400, {"detail": "expected a JSON object"})
                return
            body = parsed
            body.pop("id", None)
        store = self.store
        with store.lock:
            if match.group(1) is None:
                if method == "GET":
                    filters = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
                    found = [ci for ci in store.items.values()
                             if all(str(ci.get(k)) == v for k, v in filters
                                    if k in store.filters)]
                    self._page(url, dict(filters), found)
                elif method == "POST":
                    if store.taken(body):
                        self._send(409, {"detail": "%s %r already exists."
                                         % (store.unique, body[store.unique])})
                        return
                    ident = next(store.ids)
                    store.items[ident] = dict(body, id=ident)
                    self._send(201, store.items[ident])
                else:
                    self._send(405, {"detail": "Method %s not allowed." % method})
                return
            ident = int(match.group(1))
            if ident not in store.items:
                self._send(404, {"detail": "Not found."})
                return
            if method == "GET":
                self._send(200, store.items[ident])
            elif method == "DELETE":
                del store.items[ident]
                self._send(204)
            elif method in ("PUT", "PATCH"):
                item = dict(body) if method == "PUT" else dict(store.items[ident], **body)
                if store.taken(item, other_than=ident):
                    self._send(409, {"detail": "%s %r already exists."
                                     % (store.unique, item[store.unique])})
                    return
                store.items[ident] = dict(item, id=ident)
                self._send(200, store.items[ident])
            else:
                self._send(405, {"detail": "Method %s not allowed." % method})

    def _page(self, url: urllib.parse.SplitResult, query: Dict[str, str],
              found: List[Dict[str, Any]]) -> None:
        try:
            limit = min(max(int(query.get("limit", self.page_size)), 1), self.page_size)
            offset = max(int(query.get("offset", 0)), 0)
        except ValueError:
            self._send(400, {"detail": "limit and offset must be integers"})
            return
        base = self.public_url or "http://%s" % self.headers.get("Host", "127.0.0.1")

        def link(at: int) -> str:
            return "%s%s?%s" % (base, url.path, urllib.parse.urlencode(
                dict(query, limit=limit, offset=at)))
        more = offset + limit < len(found)
        self._send(200, {"count": len(found), "next": link(offset + limit) if more else None,
                         "previous": link(max(offset - limit, 0)) if offset else None,
                         "results": found[offset:offset + limit]},
                   headers=[("Link", '<%s>; rel="next"' % link(offset + limit))] if more else [])


class CmdbServer(Server):
    """A running CMDB: ``url`` (no trailing slash) and ``token`` for clients."""

    def __init__(self, process: Process, port: int, token: str) -> None:
        self.process = process
        self.port = port
        self.url = "http://127.0.0.1:%d" % port
        self.token = token


def _answers(url: str, token: str) -> bool:
    request = urllib.request.Request(url + "/api/cis",
                                     headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(request, timeout=2) as response:
        return response.status == 200


def start_cmdb(workdir: Path, timeout: float = 20.0, page_size: int = 50,
               public_url: str = "") -> CmdbServer:
    """Start the CMDB on a free loopback port with a fresh token; wait until it answers."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(20)
    token_file = workdir / "cmdb-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    port = free_port()
    log = workdir / "cmdb.log"
    process = Process("cmdb", [sys.executable, "-m", "tests.servers.cmdb", "--port",
                               str(port), "--token-file", str(token_file), "--page-size",
                               str(page_size), "--public-url", public_url], log, cwd=workdir)
    server = CmdbServer(process, port, token)
    return server.ready(lambda: _answers(server.url, token), timeout, "CMDB", log)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--unique", default="uuid", help="field no two items may share")
    parser.add_argument("--filters", default="uuid,name,status,project",
                        help="comma-separated fields GET /api/cis can filter on")
    parser.add_argument("--page-size", type=int, default=50,
                        help="items per page of GET /api/cis (default and maximum limit)")
    parser.add_argument("--public-url", default="",
                        help="scheme://host:port the page links name (default: the Host)")
    args = parser.parse_args(argv)
    Handler.token = args.token_file.read_text().strip()
    Handler.page_size = max(args.page_size, 1)
    Handler.public_url = args.public_url.rstrip("/")
    Handler.store = Store(args.unique, [f for f in args.filters.split(",") if f])
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
