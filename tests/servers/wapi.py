"""A local stand-in for an Infoblox grid master's WAPI, for tests and demos only.

No NIOS appliance can run here, so this process answers the WAPI calls the
Infoblox drivers make (tasks/backends/infoblox, ipam/infoblox.py,
dns/infoblox.py) and the calls a test makes to seed a grid the way an admin
would (network views, networks, zones), over real HTTP on a loopback port,
keeping its state in memory. It is built from Infoblox's WAPI documentation
as served by grid masters:

* https://demogm1.infoblox.com/wapidoc/ and https://ipam.illinois.edu/wapidoc/
  (WAPI 2.10.5 / 2.12.3): Transport and Authentication (HTTP basic auth),
  General Syntax and Options (``_return_fields``, ``_return_fields+``,
  ``_max_results`` with its default of -1000, ``_paging``, ``_page_id``,
  ``_return_as_object``), Object Reference (``objtype/<id>:<name>/<view>``),
  Function Calls (``func:nextavailableip:<network>[,<network view>]``),
  Extensible Attributes (``*Name=value`` and ``*Name~=regex`` searches; an
  attribute must be defined before use), Error Handling (a JSON object with
  ``Error``, ``code`` and ``text``);
* objects/record.host.html, record.a.html, record.aaaa.html, record.ptr.html,
  record.cname.html, network.html, ipv6network.html, networkview.html,
  view.html, zone_auth.html (reverse zones named ``10.0.0.0/8``),
  extensibleattributedef.html: basic fields, searchable fields, required
  fields.

Error texts are those real grids answer, as recorded in public transcripts of
WAPI sessions (scoulomb/myDNS, infobloxopen/infoblox-client and
infoblox-go-client tests): ``The record 'x' already exists.``, ``The action
is not allowed. A parent was not found.``, ``Reference ... not found`` (404),
``Unknown extensible attribute: X``, ``field for create missing: name``, an
Apache HTML page with HTTP 401 for bad credentials, and a plain-text
``Version X not supported``.

Nothing is looser than the real WAPI: unknown or unsearchable fields, undefined
extensible attributes, records outside every zone and oversized result sets
are refused as NIOS refuses them.

Run: ``python -m tests.servers.wapi --port N --credentials-file F`` (F holds
``user:password``); :func:`start_wapi` does that and waits until it answers.
"""

import argparse
import base64
import ipaddress
import itertools
import json
import re
import secrets
import sys
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from tests.servers.base import Process, Server, free_port, wait_for

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


class WapiError(Exception):
    """An answer in WAPI's error shape: HTTP status, ``Error``, ``code``, ``text``."""

    def __init__(self, status: int, kind: str, code: str, text: str,
                 error: Optional[str] = None) -> None:
        super().__init__(text)
        self.status, self.code, self.text = status, code, text
        self.error = "%s: %s" % (kind, text if error is None else error)

    def body(self) -> Dict[str, str]:
        return {"Error": self.error, "code": self.code, "text": self.text}


def proto(text: str) -> WapiError:
    return WapiError(400, "AdmConProtoError", "Client.Ibap.Proto", text)


def conflict(text: str) -> WapiError:
    return WapiError(400, "AdmConDataError", "Client.Ibap.Data.Conflict", text,
                     "None (IBDataConflictError: IB.Data.Conflict:%s)" % text)


def not_found(text: str, status: int = 400) -> WapiError:
    return WapiError(status, "AdmConDataNotFoundError", "Client.Ibap.Data.NotFound", text)


class ObjType(NamedTuple):
    basic: Tuple[str, ...]
    readable: Tuple[str, ...]
    searchable: Tuple[str, ...]
    required: Tuple[str, ...]
    ref_name: Callable[[Dict[str, Any]], str]


_RECORD = ("comment", "extattrs", "ttl", "use_ttl", "disable", "zone")
TYPES = {
    "networkview": ObjType(("comment", "is_default", "name"),
                           ("comment", "is_default", "name", "extattrs"),
                           ("comment", "is_default", "name"), ("name",),
                           lambda o: "%s/%s" % (o["name"], str(o["is_default"]).lower())),
    "view": ObjType(("comment", "is_default", "name"),
                    ("comment", "is_default", "name", "network_view", "extattrs"),
                    ("comment", "is_default", "name", "network_view"), ("name",),
                    lambda o: "%s/%s" % (o["name"], str(o["is_default"]).lower())),
    "network": ObjType(("comment", "network", "network_view"),
                       ("comment", "network", "network_view", "extattrs"),
                       ("comment", "network", "network_view", "contains_address"), ("network",),
                       lambda o: "%s/%s" % (o["network"], o["network_view"])),
    "ipv6network": ObjType(("comment", "network", "network_view"),
                           ("comment", "network", "network_view", "extattrs"),
                           ("comment", "network", "network_view", "contains_address"),
                           ("network",), lambda o: "%s/%s" % (o["network"], o["network_view"])),
    "zone_auth": ObjType(("fqdn", "view"),
                         ("fqdn", "view", "zone_format", "comment", "extattrs"),
                         ("fqdn", "view", "zone_format", "comment"), ("fqdn",),
                         lambda o: "%s/%s" % (o["fqdn"], o["view"])),
    "extensibleattributedef": ObjType(("comment", "default_value", "name", "type"),
                                      ("comment", "default_value", "name", "type"),
                                      ("comment", "name", "type"), ("name", "type"),
                                      lambda o: o["name"]),
    "record:host": ObjType(("ipv4addrs", "ipv6addrs", "name", "view"),
                           ("ipv4addrs", "ipv6addrs", "name", "view", "network_view",
                            "configure_for_dns") + _RECORD,
                           ("name", "view", "network_view", "ipv4addr", "ipv6addr", "comment",
                            "zone"), ("name",),
                           lambda o: "%s/%s" % (o["name"], o["view"])),
    "record:a": ObjType(("ipv4addr", "name", "view"), ("ipv4addr", "name", "view") + _RECORD,
                        ("ipv4addr", "name", "view", "comment", "zone"), ("ipv4addr", "name"),
                        lambda o: "%s/%s" % (o["name"], o["view"])),
    "record:aaaa": ObjType(("ipv6addr", "name", "view"), ("ipv6addr", "name", "view") + _RECORD,
                           ("ipv6addr", "name", "view", "comment", "zone"), ("ipv6addr", "name"),
                           lambda o: "%s/%s" % (o["name"], o["view"])),
    "record:ptr": ObjType(("ptrdname", "view"),
                          ("ptrdname", "name", "ipv4addr", "ipv6addr", "view") + _RECORD,
                          ("ptrdname", "name", "ipv4addr", "ipv6addr", "view", "comment",
                           "zone"), ("ptrdname",),
                          lambda o: "%s/%s" % (o["name"], o["view"])),
    "record:cname": ObjType(("canonical", "name", "view"),
                            ("canonical", "name", "view") + _RECORD,
                            ("canonical", "name", "view", "comment", "zone"),
                            ("canonical", "name"), lambda o: "%s/%s" % (o["name"], o["view"])),
}
#: DNS names NIOS keeps in lower case and compares without regard to case.
_NAMES = ("name", "fqdn", "ptrdname", "canonical")
_EA_TYPES = ("STRING", "INTEGER", "EMAIL", "URL", "DATE", "ENUM")


def _ip(value: Any, version: int, field: str) -> str:
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        raise proto("Invalid value for %s (%s): not a valid IPv%d address"
                    % (field, json.dumps(value), version)) from None
    if address.version != version:
        raise proto("Invalid value for %s (%s): not a valid IPv%d address"
                    % (field, json.dumps(value), version))
    return str(address)


def _dns_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 253 or any(
            not re.fullmatch(r"[A-Za-z0-9_*]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?", label)
            for label in value.rstrip(".").split(".")):
        raise proto("Invalid value for %s (%s): not a valid domain name"
                    % (field, json.dumps(value)))
    return value.rstrip(".").lower()


class Grid(object):
    """The grid's database: objects by id, and the rules NIOS applies to writes."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.objects = {}  # type: Dict[str, Dict[str, Any]]
        self.types = {}  # type: Dict[str, str]
        self.pages = {}  # type: Dict[str, List[Dict[str, Any]]]
        self._ids = itertools.count(1)
        self.insert("networkview", {"name": "default", "is_default": True, "comment": ""})
        self.insert("view", {"name": "default", "is_default": True, "network_view": "default",
                             "comment": ""})

    # ---- references -------------------------------------------------------------
    def ref(self, oid: str) -> str:
        objtype = self.types[oid]
        return "%s/%s:%s" % (objtype, oid, TYPES[objtype].ref_name(self.objects[oid]))

    def insert(self, objtype: str, obj: Dict[str, Any]) -> str:
        seed = "%s$%d" % ({"record:host": "dns.host", "record:a": "dns.bind_a",
                           "record:aaaa": "dns.bind_aaaa", "record:ptr": "dns.bind_ptr",
                           "record:cname": "dns.bind_cname", "network": "dhcp.network",
                           "ipv6network": "dhcp.ipv6network", "zone_auth": "dns.zone",
                           "view": "dns.view", "networkview": "dhcp.network_view",
                           "extensibleattributedef": "extensible_attribute_def"}[objtype],
                          next(self._ids))
        oid = base64.urlsafe_b64encode(seed.encode()).decode().rstrip("=")
        self.objects[oid] = obj
        self.types[oid] = objtype
        return oid

    def lookup(self, ref: str) -> str:
        objtype, _, rest = ref.partition("/")
        oid = rest.split(":", 1)[0]
        if objtype not in TYPES:
            raise proto("Unknown object type (%s)" % objtype)
        if self.types.get(oid) != objtype:
            raise not_found("Reference %s not found" % ref, status=404)
        return oid

    def of_type(self, objtype: str) -> List[Tuple[str, Dict[str, Any]]]:
        return [(oid, obj) for oid, obj in self.objects.items() if self.types[oid] == objtype]

    # ---- lookups NIOS makes on writes ---------------------------------------------
    def named(self, objtype: str, name: str) -> bool:
        return any(obj["name"] == name for _, obj in self.of_type(objtype))

    def forward_zone(self, name: str, view: str) -> Optional[str]:
        for _, zone in self.of_type("zone_auth"):
            if zone["view"] == view and zone["zone_format"] == "FORWARD" and (
                    name == zone["fqdn"] or name.endswith("." + zone["fqdn"])):
                return str(zone["fqdn"])
        return None

    def reverse_zone(self, address: str, view: str) -> Optional[str]:
        ip = ipaddress.ip_address(address)
        for _, zone in self.of_type("zone_auth"):
            if zone["view"] == view and zone["zone_format"] in ("IPV4", "IPV6") and \
                    ip in ipaddress.ip_network(zone["fqdn"]):
                return str(zone["fqdn"])
        return None

    def ea_defined(self, name: str) -> bool:
        return self.named("extensibleattributedef", name)

    def used(self, network_view: str) -> Set[str]:
        used = set()  # type: Set[str]
        for _, host in self.of_type("record:host"):
            if host["network_view"] == network_view:
                used.update(e["ipv4addr"] for e in host.get("ipv4addrs", []))
                used.update(e["ipv6addr"] for e in host.get("ipv6addrs", []))
        for objtype, field in (("record:a", "ipv4addr"), ("record:aaaa", "ipv6addr")):
            used.update(obj[field] for _, obj in self.of_type(objtype))
        return used

    def next_available(self, spec: str, network_view: str) -> str:
        """``func:nextavailableip:<network>[,<network view>]``: the lowest unused host address."""
        cidr, _, view = spec.partition(",")
        view = view or network_view
        try:
            network = ipaddress.ip_network(cidr)
        except ValueError:
            raise proto("Invalid value for ipv4addr (\"func:nextavailableip:%s\")" % spec) \
                from None
        if not any(obj["network"] == str(network) and obj["network_view"] == view
                   for _, obj in self.of_type("network")):
            raise not_found("Cannot find network %s in network view %s" % (network, view))
        used = self.used(view)
        for host in network.hosts():
            if str(host) not in used:
                return str(host)
        raise conflict("Cannot find 1 available IP address(es) in this network")


def _check_fields(objtype: str, body: Dict[str, Any], creating: bool) -> None:
    spec = TYPES[objtype]
    writable = set(spec.readable) - {"zone", "is_default"}
    for field in body:
        if field not in writable:
            raise proto("Unknown argument/field: '%s'" % field)
    if creating:
        for field in spec.required:
            if field not in body:
                raise proto("field for create missing: %s" % field)


def _extattrs(grid: Grid, value: Any) -> Dict[str, Dict[str, Any]]:
    if not isinstance(value, dict):
        raise proto("Invalid value for extattrs: expected an object")
    result = {}
    for name, entry in value.items():
        if not grid.ea_defined(name):
            raise proto("Unknown extensible attribute: %s" % name)
        if not isinstance(entry, dict) or "value" not in entry:
            raise proto("Invalid value for extensible attribute %s: expected {\"value\": ...}"
                        % name)
        result[name] = {"value": entry["value"]}
    return result


def _host_addrs(grid: Grid, obj: Dict[str, Any], version: int) -> List[Dict[str, Any]]:
    field = "ipv%daddr" % version
    entries = obj.get(field + "s") or []
    if not isinstance(entries, list):
        raise proto("Invalid value for %ss: expected a list" % field)
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or field not in entry:
            raise proto("field for create missing: %s" % field)
        for key in entry:
            if key not in (field, "configure_for_dhcp", "mac", "duid"):
                raise proto("Unknown argument/field: '%s'" % key)
        value = entry[field]
        if version == 4 and isinstance(value, str) and value.startswith("func:nextavailableip:"):
            value = grid.next_available(value[len("func:nextavailableip:"):],
                                        obj["network_view"])
        out.append({field: _ip(value, version, field),
                    "configure_for_dhcp": bool(entry.get("configure_for_dhcp", False)),
                    "host": obj["name"]})
    return out


def _validate(grid: Grid, objtype: str, obj: Dict[str, Any], oid: Optional[str]) -> None:
    """NIOS's rules for a record about to be stored (``oid`` is None on create)."""
    if objtype.startswith("record:"):
        for field in _NAMES:
            if field in obj:
                obj[field] = _dns_name(obj[field], field)
    if "extattrs" in obj:
        obj["extattrs"] = _extattrs(grid, obj["extattrs"])
    obj.setdefault("extattrs", {})
    obj.setdefault("comment", "")
    others = [o for i, o in grid.of_type(objtype) if i != oid]
    if objtype in ("record:host", "record:a", "record:aaaa", "record:ptr", "record:cname",
                   "zone_auth"):
        obj.setdefault("view", "default")
        if not grid.named("view", obj["view"]):
            raise not_found("View %s not found" % obj["view"])
    if objtype in ("network", "ipv6network", "record:host", "view"):
        obj.setdefault("network_view", "default")
        if not grid.named("networkview", obj["network_view"]):
            raise not_found("Network view %s not found" % obj["network_view"])
    if objtype in ("networkview", "view", "extensibleattributedef"):
        obj.setdefault("is_default", False)
        if objtype == "extensibleattributedef":
            del obj["is_default"]
            if obj["type"] not in _EA_TYPES:
                raise proto("Invalid value for type (%s)" % json.dumps(obj["type"]))
            del obj["extattrs"]
        if any(o["name"] == obj["name"] for o in others):
            raise conflict("Duplicate object '%s' of type %s exists in the database."
                           % (obj["name"], objtype))
    elif objtype in ("network", "ipv6network"):
        try:
            network = ipaddress.ip_network(str(obj["network"]))
        except ValueError:
            raise proto("Invalid value for network (%s)" % json.dumps(obj["network"])) from None
        if network.version != (4 if objtype == "network" else 6):
            raise proto("Invalid value for network (%s)" % json.dumps(obj["network"]))
        obj["network"] = str(network)
        if any(o["network"] == obj["network"] and o["network_view"] == obj["network_view"]
               for o in others):
            raise conflict("The network %s already exists." % obj["network"])
    elif objtype == "zone_auth":
        fqdn = str(obj["fqdn"])
        if "/" in fqdn:
            try:
                network = ipaddress.ip_network(fqdn)
            except ValueError:
                raise proto("Invalid value for fqdn (%s)" % json.dumps(fqdn)) from None
            obj["fqdn"], obj["zone_format"] = str(network), "IPV%d" % network.version
        else:
            obj["fqdn"], obj["zone_format"] = _dns_name(fqdn, "fqdn"), "FORWARD"
        if any(o["fqdn"] == obj["fqdn"] and o["view"] == obj["view"] for o in others):
            raise conflict("Duplicate object '%s' of type zone exists in the database."
                           % obj["fqdn"])
    elif objtype == "record:host":
        obj.setdefault("configure_for_dns", True)
        obj["ipv4addrs"] = _host_addrs(grid, obj, 4)
        obj["ipv6addrs"] = _host_addrs(grid, obj, 6)
        if not obj["ipv4addrs"] and not obj["ipv6addrs"]:
            raise proto("field for create missing: ipv4addrs or ipv6addrs")
        if obj["configure_for_dns"]:
            zone = grid.forward_zone(obj["name"], obj["view"])
            if zone is None:
                raise conflict("The action is not allowed. A parent was not found.")
            obj["zone"] = zone
        else:
            obj["zone"] = ""
        if any(o["name"] == obj["name"] and o["view"] == obj["view"] for o in others):
            raise conflict("The record '%s' already exists." % obj["name"])
    elif objtype in ("record:a", "record:aaaa", "record:cname"):
        if objtype != "record:cname":
            field = "ipv4addr" if objtype == "record:a" else "ipv6addr"
            obj[field] = _ip(obj[field], 4 if objtype == "record:a" else 6, field)
        zone = grid.forward_zone(obj["name"], obj["view"])
        if zone is None:
            raise conflict("The action is not allowed. A parent was not found.")
        obj["zone"] = zone
        key = [k for k in ("name", "ipv4addr", "ipv6addr", "canonical", "view") if k in obj]
        if any(all(o.get(k) == obj[k] for k in key) for o in others):
            raise conflict("The record '%s' already exists." % obj["name"])
    elif objtype == "record:ptr":
        addresses = [k for k in ("ipv4addr", "ipv6addr") if obj.get(k)]
        if not addresses:
            if "name" not in obj:
                raise proto("field for create missing: name or ipv4addr or ipv6addr")
        else:
            field = addresses[0]
            obj[field] = _ip(obj[field], 4 if field == "ipv4addr" else 6, field)
            name = ipaddress.ip_address(obj[field]).reverse_pointer
            if obj.get("name", name) != name:
                raise proto("The name %s does not match %s %s" % (obj["name"], field, obj[field]))
            obj["name"] = name
            zone = grid.reverse_zone(obj[field], obj["view"])
            if zone is None:
                raise conflict("The action is not allowed. A parent was not found.")
            obj["zone"] = zone
        if any(o["name"] == obj["name"] and o["ptrdname"] == obj["ptrdname"] and
               o["view"] == obj["view"] for o in others):
            raise conflict("The record '%s' already exists." % obj["name"])


def _matches(objtype: str, obj: Dict[str, Any], field: str, modifier: str, value: str,
             grid: Grid) -> bool:
    if field.startswith("*"):
        held = obj.get("extattrs", {}).get(field[1:], {}).get("value")
        values = [] if held is None else [str(held)]
    elif field == "contains_address":
        try:
            return ipaddress.ip_address(value) in ipaddress.ip_network(obj["network"])
        except ValueError:
            raise proto("Invalid value for contains_address (%s)" % json.dumps(value)) from None
    elif objtype == "record:host" and field in ("ipv4addr", "ipv6addr"):
        values = [e[field] for e in obj.get(field + "s", [])]
        try:
            value = str(ipaddress.ip_address(value))
        except ValueError:
            raise proto("Invalid value for %s (%s)" % (field, json.dumps(value))) from None
    elif field in ("ipv4addr", "ipv6addr", "network") and value and modifier == "":
        values = [str(obj.get(field, ""))]
        try:
            value = str(ipaddress.ip_network(value) if field == "network"
                        else ipaddress.ip_address(value))
        except ValueError:
            raise proto("Invalid value for %s (%s)" % (field, json.dumps(value))) from None
    else:
        raw = obj.get(field)
        values = [] if raw is None else [str(raw).lower() if isinstance(raw, bool) else str(raw)]
    if field in _NAMES and (objtype.startswith("record:") or objtype == "zone_auth"):
        value = value.rstrip(".").lower()
    if modifier == "~":
        try:
            pattern = re.compile(value)
        except re.error:
            raise proto("Invalid regular expression: %s" % value) from None
        return any(pattern.search(v) for v in values)
    if modifier == ":":
        return any(v.lower() == value.lower() for v in values)
    if modifier == "!":
        return all(v != value for v in values)
    return value in values


def _view(grid: Grid, oid: str, fields: List[str]) -> Dict[str, Any]:
    obj = grid.objects[oid]
    shown = {"_ref": grid.ref(oid)}  # type: Dict[str, Any]
    for field in fields:
        if field in ("ipv4addrs", "ipv6addrs"):
            addr = field[:-1]
            shown[field] = [dict(e, _ref="record:host_%s/%s:%s/%s/%s" % (
                addr, oid, e[addr], obj["name"], obj["view"])) for e in obj.get(field, [])]
        elif field in obj:
            shown[field] = obj[field]
    return shown


class Handler(BaseHTTPRequestHandler):
    server_version = "Apache"
    grid = Grid()
    credentials = ("", "")
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each keep-alive answer waits on a delayed ACK

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), format % args))

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        body = payload if isinstance(payload, bytes) else (
            json.dumps(payload, indent=4).encode() if content_type == "application/json"
            else str(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="InfoBlox ONE Platform"')
        self.end_headers()
        self.wfile.write(body)

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
            self._send(401, _UNAUTHORIZED, "text/html; charset=iso-8859-1")
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
        if "/" in target:
            oid = grid.lookup(target)
            objtype = grid.types[oid]
            if method == "GET":
                return 200, self._shape([_view(grid, oid, self._fields(objtype, options))],
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
            found = [_view(grid, oid, fields) for oid, obj in grid.of_type(objtype)
                     if all(_matches(objtype, obj, f, m, v, grid) for f, m, v in criteria)]
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
        _check_fields(objtype, body, creating=oid is None)
        obj = dict(grid.objects[oid]) if oid is not None else {}
        obj.pop("zone", None)
        obj.update(body)
        _validate(grid, objtype, obj, oid)
        oid_was_new = oid is None
        if oid is None:
            oid = grid.insert(objtype, obj)
        else:
            grid.objects[oid] = obj
        status = 201 if oid_was_new else 200
        if "_return_fields" in options or "_return_fields+" in options:
            return status, self._shape([_view(grid, oid, self._fields(objtype, options))],
                                       options, single=True)
        return status, grid.ref(oid)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


class WapiServer(Server):
    """A running stand-in: ``url`` is the WAPI base a driver's [ipam]/[dns] url takes."""

    def __init__(self, process: Process, port: int, username: str, password: str) -> None:
        self.process = process
        self.port = port
        self.url = "http://127.0.0.1:%d/wapi/v%s" % (port, WAPI_VERSION)
        self.username, self.password = username, password


def _answers(url: str, username: str, password: str) -> bool:
    request = urllib.request.Request(url + "/networkview", headers={
        "Authorization": "Basic " + base64.b64encode(
            ("%s:%s" % (username, password)).encode()).decode()})
    with urllib.request.urlopen(request, timeout=2) as response:
        return response.status == 200


def start_wapi(workdir: Path, username: str = "novahooks", timeout: float = 20.0) -> WapiServer:
    """Start the stand-in on a free loopback port with a fresh password; wait until it answers."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    credentials = workdir / "wapi-credentials"
    credentials.write_text("%s:%s" % (username, password))
    credentials.chmod(0o600)
    port = free_port()
    log = workdir / "wapi.log"
    process = Process("wapi", [sys.executable, "-m", "tests.servers.wapi", "--port",
                               str(port), "--credentials-file", str(credentials)], log,
                      cwd=workdir)
    server = WapiServer(process, port, username, password)
    try:
        wait_for(lambda: _answers(server.url, username, password), timeout, "WAPI stand-in",
                 process.proc, log)
    except BaseException:
        server.stop()
        raise
    return server


def serve(port: int, username: str, password: str) -> None:
    Handler.credentials = (username, password)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--credentials-file", type=Path, required=True,
                        help="a file holding user:password (kept out of the process list)")
    args = parser.parse_args(argv)
    user, _, password = args.credentials_file.read_text().strip().partition(":")
    serve(args.port, user, password)
    return 0


if __name__ == "__main__":
    sys.exit(main())
