"""Check every field of an event before any backend sees it.

A bad hostname must fail here, naming the field, rather than half-way through
a chain with a DNS record written and an LDAP entry refused.
"""

import ipaddress
import re
from typing import Optional

from novahooks.nova.event import Address, InstanceEvent
from tasks.errors import InvalidEvent

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", re.IGNORECASE)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
                   re.IGNORECASE)


def hostname(value: Optional[str], field: str = "hostname") -> str:
    """An RFC 1123 host label: letters, digits, inner hyphens, 1-63 characters."""
    if value is None or value == "":
        raise InvalidEvent(field, "missing")
    if len(value) > 63:
        raise InvalidEvent(field, "%r is %d characters; a DNS label allows at most 63"
                           % (value, len(value)))
    if not _LABEL.match(value):
        raise InvalidEvent(field, "%r is not an RFC 1123 host label (letters, digits and "
                           "inner hyphens only)" % value)
    return value.lower()


def fqdn(host: str, zone: str) -> str:
    """The VM's DNS name; a name longer than DNS allows is the event's fault, not DNS's."""
    name = "%s.%s" % (host, zone.rstrip("."))
    if len(name) > 253:
        raise InvalidEvent("hostname", "%r makes a name of %d characters; DNS allows 253"
                           % (host, len(name)))
    for label in name.split("."):
        if not _LABEL.match(label):
            raise InvalidEvent("hostname", "%r yields the invalid DNS name %r" % (host, name))
    return name


def address(item: Address, index: int) -> Address:
    field = "addresses[%d]" % index
    try:
        parsed = ipaddress.ip_address(item.address)
    except ValueError:
        raise InvalidEvent(field + ".address", "%r is not an IPv4 or IPv6 address"
                           % (item.address,)) from None
    if parsed.version != item.version:
        raise InvalidEvent(field + ".version", "%s is IPv%d, event says %r"
                           % (parsed, parsed.version, item.version))
    if item.mac is not None and not _MAC.match(item.mac):
        raise InvalidEvent(field + ".mac", "%r is not a MAC address" % (item.mac,))
    return item._replace(address=str(parsed), mac=item.mac.lower() if item.mac else None)


def event(ev: InstanceEvent, needs_hostname: bool = True) -> InstanceEvent:
    """The event with normalised hostname and addresses, or InvalidEvent."""
    if not _UUID.match(ev.uuid or ""):
        raise InvalidEvent("uuid", "%r is not a UUID" % (ev.uuid,))
    host = hostname(ev.hostname) if needs_hostname else ev.hostname
    addresses = None  # type: Optional[List[Address]]
    if ev.addresses is not None:
        addresses = [address(a, i) for i, a in enumerate(ev.addresses)]
    flavor = ev.flavor
    if flavor is not None:
        for name in ("vcpus", "memory_mb", "root_gb", "ephemeral_gb", "swap"):
            value = getattr(flavor, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise InvalidEvent("flavor.%s" % name, "%r is not a non-negative integer"
                                   % (value,))
    return ev._replace(hostname=host, addresses=addresses)
