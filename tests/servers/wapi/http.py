"""The WAPI over HTTP: basic auth, the URL syntax, ``_return_fields`` and paging."""

import base64
import json
import re
import secrets
import time
import urllib.parse
from http.server import ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple

from tests.servers.http import StandInHandler
from tests.servers.wapi.errors import WapiError, proto
from tests.servers.wapi.grid import Grid, check_fields, matches, validate, view_of
from tests.servers.wapi.schema import TYPES

WAPI_VERSION = "2.12"
DEFAULT_MAX_RESULTS = 1000

_UNAUTHORIZED = b"""<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">
<html><head>
<title>401 Authorization Required</title>
</head><body>
<h1>Authorization Required</h1>
<p>This server could not verify that you
are authorized to access the document
requested.  Either you supplied the wrong
credentials (e.g., bad password), or your
browser doesn't understand how to supply
the credentials required.</p>
</body></html>
"""



class Handler(StandInHandler):
    server_version = "Apache"
    grid = Grid()
    credentials = ("", "")
    json_indent = 4
    #: seconds each call takes on top of the stand-in's own, one call at a time (benches
    #: model a grid master's per-call cost with it; tests leave it 0)
    call_seconds = 0.0

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user, self.credentials[0]) and \
            secrets.compare_digest(password, self.credentials[1])

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self._authorized():
            self._send(401, _UNAUTHORIZED, "text/html; charset=iso-8859-1",
                       [("WWW-Authenticate", 'Basic realm="InfoBlox ONE Platform"')])
            return
        url = urllib.parse.urlsplit(self.path)
        match = re.fullmatch(r"/wapi/v(\d+(?:\.\d+)*)/(.+)", url.path)
        if match is None:
            self._send(404, b"Not Found", "text/plain")
            return
        version, target = match.groups()
        if tuple(map(int, version.split("."))) > tuple(map(int, WAPI_VERSION.split("."))):
            self._send(400, "Version %s not supported" % version, "text/plain")
            return
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            self._send(400, WapiError(400, "AdmConProtoError", "Client.Ibap.Proto.JSONDecoding",
                                      "JSON Decoding: %s" % exc).body())
            return
        args = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
        try:
            with self.grid.lock:
                if self.call_seconds:
                    time.sleep(self.call_seconds)
                status, answer = self._dispatch(method, urllib.parse.unquote(target), args, body)
        except WapiError as exc:
            self._send(exc.status, exc.body())
            return
        self._send(status, answer)

    def _dispatch(self, method: str, target: str, args: List[Tuple[str, str]],
                  body: Any) -> Tuple[int, Any]:
        grid = self.grid
        options = {k: v for k, v in args if k.startswith("_")}
        for key in options:
            if key not in ("_return_fields", "_return_fields+", "_max_results", "_paging",
                           "_page_id", "_return_as_object"):
                raise proto("Unknown argument/field: '%s'" % key)
        if target == "request":
            if method != "POST":
                raise proto("The request object supports only POST")
            if args:
                raise proto("The request object takes no URI arguments")
            return self._request(body)
        if "/" in target:
            oid = grid.lookup(target)
            objtype = grid.types[oid]
            if method == "GET":
                return 200, self._shape([view_of(grid, oid, self._fields(objtype, options))],
                                        options, single=True)
            if method == "DELETE":
                ref = grid.ref(oid)
                del grid.objects[oid], grid.types[oid]
                return 200, ref
            if method == "PUT":
                return self._write(objtype, body, oid, options)
            raise proto("Method %s not allowed on an object reference" % method)
        objtype = target
        if objtype not in TYPES:
            raise proto("Unknown object type (%s)" % objtype)
        if method == "GET":
            return 200, self._search(objtype, args, options)
        if method == "POST":
            return self._write(objtype, body, None, options)
        raise proto("Method %s needs an object reference" % method)

    def _request(self, body: Any) -> Tuple[int, Any]:
        """The ``request`` object: one call (an object) or several (a list of them), each
        ``{"method", "object", "data", "args"}``; a GET's ``data`` holds its search
        fields. A list runs as one transaction: the first error is the answer, and
        nothing any earlier call of the list wrote is kept."""
        single = isinstance(body, dict)
        calls = [body] if single else body
        if not isinstance(calls, list) or not calls or \
                not all(isinstance(c, dict) for c in calls):
            raise proto("Invalid request: expected an object or a list of objects")
        grid = self.grid
        saved = (dict(grid.objects), dict(grid.types))
        answers = []
        try:
            for call in calls:
                unknown = sorted(set(call) - {"method", "object", "data", "args"})
                if unknown:
                    raise proto("Unknown argument/field: '%s'" % unknown[0])
                method = str(call.get("method") or "").upper()
                if method not in ("GET", "POST", "PUT", "DELETE") or \
                        not isinstance(call.get("object"), str):
                    raise proto("Invalid request: method %r on object %r"
                                % (call.get("method"), call.get("object")))
                data, extra = call.get("data") or {}, call.get("args") or {}
                if not isinstance(data, dict) or not isinstance(extra, dict):
                    raise proto("Invalid request: data and args must be objects")
                args = [(k, str(v)) for k, v in extra.items()]
                if method == "GET":
                    args = [(k, str(v)) for k, v in data.items()] + args
                    data = {}
                answers.append(self._dispatch(method, call["object"], args, data)[1])
        except WapiError:
            grid.objects, grid.types = saved
            raise
        return (201 if single and calls[0].get("method", "").upper() == "POST" else 200), \
            (answers[0] if single else answers)

    def _fields(self, objtype: str, options: Dict[str, str]) -> List[str]:
        spec = TYPES[objtype]
        if "_return_fields" in options:
            fields = [f for f in options["_return_fields"].split(",") if f]
        else:
            fields = list(spec.basic) + [
                f for f in options.get("_return_fields+", "").split(",") if f]
        for field in fields:
            if field not in spec.readable:
                raise proto("Unknown argument/field: '%s'" % field)
        return fields

    def _search(self, objtype: str, args: List[Tuple[str, str]],
                options: Dict[str, str]) -> Any:
        grid = self.grid
        if "_page_id" in options:
            page_id = options["_page_id"]
            if page_id not in grid.pages:
                raise proto("Page id %s is not valid or has expired" % page_id)
            found = grid.pages.pop(page_id)
        else:
            spec = TYPES[objtype]
            fields = self._fields(objtype, options)
            criteria = []
            for key, value in args:
                if key.startswith("_"):
                    continue
                field, modifier = key, ""
                if key[-1] in "~:!<>":
                    field, modifier = key[:-1], key[-1]
                if field.startswith("*"):
                    if not grid.ea_defined(field[1:]):
                        raise proto("Unknown extensible attribute: %s" % field[1:])
                elif field not in spec.searchable:
                    if field in spec.readable:
                        raise proto("Field is not searchable: %s" % field)
                    raise proto("Unknown argument/field: '%s'" % field)
                criteria.append((field, modifier, value))
            found = [view_of(grid, oid, fields) for oid, obj in grid.of_type(objtype)
                     if all(matches(objtype, obj, f, m, v, grid) for f, m, v in criteria)]
        if options.get("_paging") == "1" or "_page_id" in options:
            if options.get("_return_as_object") != "1":
                raise proto("_return_as_object needs to be enabled for paging requests.")
            size = abs(int(options.get("_max_results", DEFAULT_MAX_RESULTS)))
            page, rest = found[:size], found[size:]
            answer = {"result": page}  # type: Dict[str, Any]
            if rest:
                page_id = secrets.token_urlsafe(24)
                grid.pages[page_id] = rest
                answer["next_page_id"] = page_id
            return answer
        limit = int(options.get("_max_results", -DEFAULT_MAX_RESULTS))
        if limit < 0 and len(found) > -limit:
            raise proto("Result set too large (> %d)" % -limit)
        return self._shape(found[:abs(limit)], options)

    def _shape(self, found: List[Dict[str, Any]], options: Dict[str, str],
               single: bool = False) -> Any:
        result = found[0] if single else found
        return {"result": result} if options.get("_return_as_object") == "1" else result

    def _write(self, objtype: str, body: Any, oid: Optional[str],
               options: Dict[str, str]) -> Tuple[int, Any]:
        grid = self.grid
        if not isinstance(body, dict):
            raise proto("Invalid object: expected a JSON object")
        check_fields(objtype, body, creating=oid is None)
        obj = dict(grid.objects[oid]) if oid is not None else {}
        obj.pop("zone", None)
        obj.update(body)
        validate(grid, objtype, obj, oid)
        oid_was_new = oid is None
        if oid is None:
            oid = grid.insert(objtype, obj)
        else:
            grid.objects[oid] = obj
        status = 201 if oid_was_new else 200
        if "_return_fields" in options or "_return_fields+" in options:
            return status, self._shape([view_of(grid, oid, self._fields(objtype, options))],
                                       options, single=True)
        return status, grid.ref(oid)


def serve(port: int, username: str, password: str, call_ms: float = 0.0) -> None:
    Handler.credentials = (username, password)
    Handler.call_seconds = max(0.0, call_ms) / 1000.0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    finally:
        server.server_close()
