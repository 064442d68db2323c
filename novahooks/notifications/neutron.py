"""What one Neutron ``floatingip.*`` notification says about a floating IP.

Nova's payloads list fixed addresses only; a floating IP is Neutron's, and
Neutron announces it on its own exchange (``neutron``, topic ``notifications``).
``create.end`` and ``update.end`` carry ``{"floatingip": {...}}`` with the port
it is bound to (``port_id``, null when disassociated) and that port's
``fixed_ip_address``; ``delete.end`` carries ``floatingip_id`` (newer releases
add the ``floatingip`` body too).
"""

import ipaddress
from typing import NamedTuple, Optional, Union

from novahooks.notifications.message import Malformed, Notification
from novahooks.notifications.nova import Ignored

EVENTS = ("floatingip.create.end", "floatingip.update.end", "floatingip.delete.end")


class FloatingChange(NamedTuple):
    floating_id: str
    #: None when the floating IP was deleted.
    address: Optional[str]
    #: The port (and its fixed address) it is bound to now; None: bound to nothing.
    port_id: Optional[str]
    fixed_address: Optional[str]


def _text(body: dict, key: str) -> Optional[str]:
    value = body.get(key)
    return value if isinstance(value, str) and value else None


def translate(note: Notification) -> Union[FloatingChange, Ignored]:
    """Raises :class:`Malformed` naming the field for a payload this code cannot read."""
    if note.event_type not in EVENTS:
        if note.event_type.startswith("floatingip."):
            return Ignored("%s: floating IPs are registered from %s" % (
                note.event_type, ", ".join(EVENTS)))
        return Ignored("%s is not a floating IP notification" % note.event_type)
    payload = note.payload
    if note.event_type == "floatingip.delete.end":
        view = payload.get("floatingip")
        floating_id = _text(payload, "floatingip_id") or (
            _text(view, "id") if isinstance(view, dict) else None)
        if floating_id is None:
            raise Malformed("payload.floatingip_id", "missing or empty")
        return FloatingChange(floating_id, None, None, None)
    body = payload.get("floatingip")
    if not isinstance(body, dict):
        raise Malformed("payload.floatingip", "missing or not an object")
    floating_id = _text(body, "id")
    if floating_id is None:
        raise Malformed("payload.floatingip.id", "missing or empty")
    address = _text(body, "floating_ip_address")
    if address is None:
        raise Malformed("payload.floatingip.floating_ip_address", "missing or empty")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise Malformed("payload.floatingip.floating_ip_address",
                        "%r is not an IP address" % address) from None
    port = _text(body, "port_id")
    return FloatingChange(floating_id, address, port,
                          _text(body, "fixed_ip_address") if port else None)
