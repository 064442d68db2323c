"""The grid's database and the rules NIOS applies to its writes and searches."""

import base64
import ipaddress
import itertools
import json
import re
import threading
from typing import Any, Dict, List, Optional, Set, Tuple

from tests.servers.wapi.errors import conflict, not_found, proto
from tests.servers.wapi.schema import EA_TYPES, NAME_FIELDS, TYPES, dns_name, ip_value


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


def check_fields(objtype: str, body: Dict[str, Any], creating: bool) -> None:
    spec = TYPES[objtype]
    writable = set(spec.readable) - {"zone", "is_default"}
    for field in body:
        if field not in writable:
            raise proto("Unknown argument/field: '%s'" % field)
    if creating:
        for field in spec.required:
            if field not in body:
                raise proto("field for create missing: %s" % field)


def extattrs_of(grid: Grid, value: Any) -> Dict[str, Dict[str, Any]]:
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


def host_addrs(grid: Grid, obj: Dict[str, Any], version: int) -> List[Dict[str, Any]]:
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
        out.append({field: ip_value(value, version, field),
                    "configure_for_dhcp": bool(entry.get("configure_for_dhcp", False)),
                    "host": obj["name"]})
    return out


def validate(grid: Grid, objtype: str, obj: Dict[str, Any], oid: Optional[str]) -> None:
    """NIOS's rules for a record about to be stored (``oid`` is None on create)."""
    if objtype.startswith("record:"):
        for field in NAME_FIELDS:
            if field in obj:
                obj[field] = dns_name(obj[field], field)
    if "extattrs" in obj:
        obj["extattrs"] = extattrs_of(grid, obj["extattrs"])
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
            if obj["type"] not in EA_TYPES:
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
            obj["fqdn"], obj["zone_format"] = dns_name(fqdn, "fqdn"), "FORWARD"
        if any(o["fqdn"] == obj["fqdn"] and o["view"] == obj["view"] for o in others):
            raise conflict("Duplicate object '%s' of type zone exists in the database."
                           % obj["fqdn"])
    elif objtype == "record:host":
        obj.setdefault("configure_for_dns", True)
        obj["ipv4addrs"] = host_addrs(grid, obj, 4)
        obj["ipv6addrs"] = host_addrs(grid, obj, 6)
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
            obj[field] = ip_value(obj[field], 4 if objtype == "record:a" else 6, field)
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
            obj[field] = ip_value(obj[field], 4 if field == "ipv4addr" else 6, field)
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


def matches(objtype: str, obj: Dict[str, Any], field: str, modifier: str, value: str,
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
    if field in NAME_FIELDS and (objtype.startswith("record:") or objtype == "zone_auth"):
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


def view_of(grid: Grid, oid: str, fields: List[str]) -> Dict[str, Any]:
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
