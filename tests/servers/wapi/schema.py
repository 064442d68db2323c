"""The object types the stand-in serves: their fields, as the WAPI documentation lists them."""

import ipaddress
import json
import re
from typing import Any, Callable, Dict, NamedTuple, Tuple

from tests.servers.wapi.errors import proto


class ObjType(NamedTuple):
    basic: Tuple[str, ...]
    readable: Tuple[str, ...]
    searchable: Tuple[str, ...]
    required: Tuple[str, ...]
    ref_name: Callable[[Dict[str, Any]], str]


RECORD_FIELDS = ("comment", "extattrs", "ttl", "use_ttl", "disable", "zone")
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
                            "configure_for_dns") + RECORD_FIELDS,
                           ("name", "view", "network_view", "ipv4addr", "ipv6addr", "comment",
                            "zone"), ("name",),
                           lambda o: "%s/%s" % (o["name"], o["view"])),
    "record:a": ObjType(("ipv4addr", "name", "view"), ("ipv4addr", "name", "view") + RECORD_FIELDS,
                        ("ipv4addr", "name", "view", "comment", "zone"), ("ipv4addr", "name"),
                        lambda o: "%s/%s" % (o["name"], o["view"])),
    "record:aaaa": ObjType(("ipv6addr", "name", "view"),
                           ("ipv6addr", "name", "view") + RECORD_FIELDS,
                           ("ipv6addr", "name", "view", "comment", "zone"), ("ipv6addr", "name"),
                           lambda o: "%s/%s" % (o["name"], o["view"])),
    "record:ptr": ObjType(("ptrdname", "view"),
                          ("ptrdname", "name", "ipv4addr", "ipv6addr", "view") + RECORD_FIELDS,
                          ("ptrdname", "name", "ipv4addr", "ipv6addr", "view", "comment",
                           "zone"), ("ptrdname",),
                          lambda o: "%s/%s" % (o["name"], o["view"])),
    "record:cname": ObjType(("canonical", "name", "view"),
                            ("canonical", "name", "view") + RECORD_FIELDS,
                            ("canonical", "name", "view", "comment", "zone"),
                            ("canonical", "name"), lambda o: "%s/%s" % (o["name"], o["view"])),
}
#: DNS names NIOS keeps in lower case and compares without regard to case.
NAME_FIELDS = ("name", "fqdn", "ptrdname", "canonical")
EA_TYPES = ("STRING", "INTEGER", "EMAIL", "URL", "DATE", "ENUM")


def ip_value(value: Any, version: int, field: str) -> str:
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        raise proto("Invalid value for %s (%s): not a valid IPv%d address"
                    % (field, json.dumps(value), version)) from None
    if address.version != version:
        raise proto("Invalid value for %s (%s): not a valid IPv%d address"
                    % (field, json.dumps(value), version))
    return str(address)


def dns_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 253 or any(
            not re.fullmatch(r"[A-Za-z0-9_*]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?", label)
            for label in value.rstrip(".").split(".")):
        raise proto("Invalid value for %s (%s): not a valid domain name"
                    % (field, json.dumps(value)))
    return value.rstrip(".").lower()
