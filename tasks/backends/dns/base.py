"""The DNS contract: make a name hold exactly a VM's addresses, and take back only what is ours.

Ownership is explicit: a TXT record ``novahooks:instance=<uuid>`` at the name
marks who made it, so a delete never removes a record another VM or a person
created, and a second VM claiming a taken hostname fails as a conflict
instead of overwriting it.
"""

import abc
from typing import Any, Dict, List, NotRequired, Optional, Sequence, Tuple, TypedDict

from novahooks.event import Address
from tasks.backends.base import Driver
from tasks.errors import InvalidEvent


def owner_marker(instance_uuid: str) -> str:
    return "novahooks:instance=%s" % instance_uuid


def reserved_label(fqdn: str, reserved: Sequence[str]) -> Optional[str]:
    """The reserved first label ``fqdn`` starts with (``wpad`` in any zone), or None."""
    label = fqdn.split(".", 1)[0].lower()
    return label if label in {name.strip().lower() for name in reserved} else None


class DnsRegistered(TypedDict):
    """What ``register`` left: the addresses the name holds now, and those it no longer does."""

    fqdn: str
    addresses: List[str]
    removed: List[str]
    #: zone -> its SOA serial right after the update, where the server keeps serials (the
    #: zone's own history names the change by it; the audit record quotes it).
    soa_serials: NotRequired[Dict[str, int]]


class DnsDeregistered(TypedDict):
    """What ``deregister`` took back: only ever records the instance owns."""

    fqdn: str
    #: The name's own records were ours and are gone (False: none were ours).
    forward_removed: bool
    #: The addresses whose PTR records were looked at, and those whose PTR was removed.
    ptr_checked: List[str]
    ptr_removed: List[str]
    soa_serials: NotRequired[Dict[str, int]]


class DnsHeld(TypedDict):
    """What the server holds for a name and some addresses (``status``, the demo)."""

    A: List[str]
    AAAA: List[str]
    #: The name carries this instance's owner marker.
    owned: bool
    #: address -> the names its PTR records point at.
    PTR: Dict[str, List[str]]


class DnsDriver(Driver):
    #: (network, reverse zone) from the ``[naming prefix]`` rules, most specific first;
    #: tasks/drivers.py sets it, a driver consults it before its own reverse zones.
    reverse_prefixes: Sequence[Tuple[Any, str]] = ()

    def preflight(self, fqdn: str, instance_uuid: str, addresses: Sequence[Address]) -> None:
        """Raise the PermanentError ``register`` would, without writing anything.

        Every register step runs it (StepTask.admit), so the chain's first step
        refuses a name or address DNS would refuse, before any backend holds a
        record of the VM. Reading the server is allowed here; writing is not.
        """
        label = reserved_label(fqdn, getattr(self.settings, "reserved_names", ()))
        if label is not None:
            raise InvalidEvent("hostname", "%s starts with %s, a reserved name ([dns] "
                               "reserved_names)" % (fqdn, label))

    @abc.abstractmethod
    def register(self, fqdn: str, instance_uuid: str,
                 addresses: Sequence[Address]) -> DnsRegistered:
        """Forward (A/AAAA) and reverse (PTR) records for exactly these addresses."""

    @abc.abstractmethod
    def deregister(self, fqdn: str, instance_uuid: str,
                   addresses: Sequence[Address]) -> DnsDeregistered:
        """Remove the records this instance owns; absent records are success."""

    @abc.abstractmethod
    def describe(self, fqdn: str, instance_uuid: str,
                 addresses: Sequence[str]) -> DnsHeld:
        """What the server holds for this name and these addresses (for status and demo)."""
