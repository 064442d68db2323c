"""Check every field of an event before any backend sees it.

A bad hostname must fail here, naming the field, rather than half-way through
a chain with a DNS record written and an LDAP entry refused. Errors quote the
offending value escaped (control characters, quotes) and cut to
:data:`QUOTE_MAX` characters: the message lands in logs, dead letters, the
audit trail and operators' terminals, and a tenant chose the value. An event
larger than ``[limits]`` allows is refused naming the limit.

A delete is the exception: it removes what the ledger says was made, so an
address it cannot use (one it stored before these checks were as strict, say
``fe80::1%eth0``) is left out rather than failing the delete.
"""

import ipaddress
import json
import logging
import re
from typing import Any, List, Optional

from novahooks.event import Address, InstanceEvent
from tasks.errors import InvalidEvent

LOG = logging.getLogger("novahooks.validate")
#: longest quoted value in an error message (then "... (N characters)")
QUOTE_MAX = 80

# fullmatch, not match with "$" (which also matches before a trailing newline), and
# re.ASCII: under IGNORECASE alone [a-z] also matches "\u017f" (long s), "\u212a" (Kelvin
# sign), "\u0131" and "\u0130", which IDNA would then publish in DNS as another name.
_FLAGS = re.IGNORECASE | re.ASCII
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", _FLAGS)
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", _FLAGS)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", _FLAGS)
#: Event fields that are free text or null; anything else there is the event's fault.
_OPTIONAL_TEXT = ("display_name", "project_id", "user_id", "availability_zone", "host",
                  "vm_state", "image", "os_type")
_FLAVOR_NUMBERS = ("vcpus", "memory_mb", "root_gb", "ephemeral_gb", "swap")


def quote(value: Any) -> str:
    """``value`` for an error message: JSON-escaped (no control character survives) and
    bounded, whatever its type or size."""
    text = value if isinstance(value, str) else repr(value)
    shown = json.dumps(text[:QUOTE_MAX])
    if len(text) > QUOTE_MAX:
        shown += "... (%d characters)" % len(text)
    return shown


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any, field: str, optional: bool = True) -> None:
    if not isinstance(value, str) and not (optional and value is None):
        raise InvalidEvent(field, "%s is not %s" % (quote(value), "text or null" if optional
                                                     else "text"))


def hostname(value: Optional[str], field: str = "hostname") -> str:
    """An RFC 1123 host label: letters, digits, inner hyphens, 1-63 characters."""
    if value is None or value == "":
        raise InvalidEvent(field, "missing")
    if not isinstance(value, str):
        raise InvalidEvent(field, "%s is not text" % quote(value))
    if len(value) > 63:
        raise InvalidEvent(field, "%s is %d characters; a DNS label allows at most 63"
                           % (quote(value), len(value)))
    if not _LABEL.fullmatch(value):
        raise InvalidEvent(field, "%s is not an RFC 1123 host label (letters, digits and "
                           "inner hyphens only)" % quote(value))
    return value.lower()


def fqdn(host: str, zone: str) -> str:
    """The VM's DNS name; a name longer than DNS allows is the event's fault, not DNS's."""
    name = "%s.%s" % (host, zone.rstrip("."))
    if len(name) > 253:
        raise InvalidEvent("hostname", "%s makes a name of %d characters; DNS allows 253"
                           % (quote(host), len(name)))
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            raise InvalidEvent("hostname", "%s yields the invalid DNS name %s"
                               % (quote(host), quote(name)))
    return name


def dns_name_problem(name: str) -> Optional[str]:
    """What makes ``name`` no valid DNS name for a host (RFC 1123, 253/63), or None."""
    if len(name) > 253:
        return "%d characters; DNS allows 253" % len(name)
    for label in name.split("."):
        if len(label) > 63:
            return "label %s is %d characters; DNS allows 63" % (quote(label), len(label))
        if not _LABEL.fullmatch(label):
            return "label %s is not an RFC 1123 label (letters, digits, inner hyphens)" \
                % quote(label)
    return None


def address(item: Address, index: int) -> Address:
    field = "addresses[%d]" % index
    # ipaddress also takes an int (or packed bytes) as an address: only text is one here.
    if not isinstance(item.address, str):
        raise InvalidEvent(field + ".address", "%s is not an IPv4 or IPv6 address in text"
                           % quote(item.address))
    try:
        parsed = ipaddress.ip_address(item.address)
    except ValueError:
        raise InvalidEvent(field + ".address", "%s is not an IPv4 or IPv6 address"
                           % quote(item.address)) from None
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.scope_id is not None:
            raise InvalidEvent(field + ".address", "%s carries a zone id; a fixed address "
                               "has none" % quote(item.address))
        if parsed.ipv4_mapped is not None:
            # Its reverse name is the IPv4 PTR (in-addr.arpa), which another instance owns.
            raise InvalidEvent(field + ".address", "%s is an IPv4-mapped IPv6 address; send "
                               "%s as version 4" % (quote(item.address), parsed.ipv4_mapped))
    if not _is_int(item.version) or parsed.version != item.version:
        raise InvalidEvent(field + ".version", "%s is IPv%d, event says %s"
                           % (parsed, parsed.version, quote(item.version)))
    if item.mac is not None and not (isinstance(item.mac, str) and _MAC.fullmatch(item.mac)):
        raise InvalidEvent(field + ".mac", "%s is not a MAC address" % quote(item.mac))
    _text(item.network, field + ".network")
    _text(item.port_id, field + ".port_id")
    return item._replace(address=str(parsed), mac=item.mac.lower() if item.mac else None)


def limits(ev: InstanceEvent, bounds: Optional[Any] = None) -> None:
    """InvalidEvent naming the ``[limits]`` key an oversized event exceeds."""
    if bounds is None:
        from tasks.config import settings
        bounds = settings().limits
    count = len(ev.addresses or [])
    if count > bounds.max_addresses and ev.kind != "delete":  # a delete removes what was made
        raise InvalidEvent("addresses", "%d addresses; [limits] max_addresses allows %d"
                           % (count, bounds.max_addresses))
    extra = 0
    for name in ("metadata", "image_properties"):
        values = getattr(ev, name)
        if isinstance(values, dict):
            extra += sum(len(str(k)) + len(str(v)) for k, v in values.items())
    if extra > bounds.max_metadata_bytes:
        raise InvalidEvent("metadata", "metadata and image properties of %d characters; "
                           "[limits] max_metadata_bytes allows %d"
                           % (extra, bounds.max_metadata_bytes))
    try:
        size = len(ev.to_json().encode("utf-8"))
    except (TypeError, ValueError):
        return  # a field that cannot be JSON is refused by its own check below
    if size > bounds.max_event_bytes:
        raise InvalidEvent("event", "%d bytes as JSON; [limits] max_event_bytes allows %d"
                           % (size, bounds.max_event_bytes))


def _unique(addresses: List[Address]) -> None:
    """One VM holds an address once: a repeat would make IPAM create it twice (a conflict
    with itself, retried) and DNS list it twice."""
    first = {}  # type: dict
    for index, item in enumerate(addresses):
        if item.address in first:
            raise InvalidEvent("addresses[%d].address" % index, "%s is also addresses[%d]"
                               % (item.address, first[item.address]))
        first[item.address] = index


def _delete_addresses(ev: InstanceEvent) -> List[Address]:
    """The addresses of a delete event a step can use; the others are left out, logged."""
    usable = []
    for index, item in enumerate(ev.addresses or []):
        try:
            usable.append(address(item, index))
        except InvalidEvent as exc:
            LOG.warning("delete of %s: %s left out (%s)", ev.uuid, quote(item.address), exc)
    return usable


def event(ev: InstanceEvent, needs_hostname: bool = True,
          bounds: Optional[Any] = None) -> InstanceEvent:
    """The event with normalised hostname and addresses, or InvalidEvent."""
    if not isinstance(ev.uuid, str) or not _UUID.fullmatch(ev.uuid):
        raise InvalidEvent("uuid", "%s is not a UUID" % quote(ev.uuid))
    limits(ev, bounds)
    host: Optional[str]
    if needs_hostname:
        host = hostname(ev.hostname)
    else:
        _text(ev.hostname, "hostname")
        host = ev.hostname
    for name in _OPTIONAL_TEXT:
        _text(getattr(ev, name), name)
    _text(ev.source, "source", optional=False)
    _text(ev.event_id, "event_id", optional=False)
    if not (_is_int(ev.emitted_at) or isinstance(ev.emitted_at, float)):
        raise InvalidEvent("emitted_at", "%s is not a number" % quote(ev.emitted_at))
    addresses: Optional[List[Address]] = None
    if ev.addresses is not None and ev.kind == "delete":
        addresses = _delete_addresses(ev)
    elif ev.addresses is not None:
        addresses = [address(a, i) for i, a in enumerate(ev.addresses)]
        _unique(addresses)
    flavor = ev.flavor
    if flavor is not None:
        for name in _FLAVOR_NUMBERS:
            value = getattr(flavor, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise InvalidEvent("flavor.%s" % name, "%s is not a non-negative integer"
                                   % quote(value))
        _text(flavor.name, "flavor.name")
    return ev._replace(hostname=host, addresses=addresses)
