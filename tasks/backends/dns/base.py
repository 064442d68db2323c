"""The DNS contract: make a name hold exactly a VM's addresses, and take back only what is ours.

Ownership is explicit: a TXT record ``novahooks:instance=<uuid>`` at the name
marks who made it, so a delete never removes a record another VM or a person
created, and a second VM claiming a taken hostname fails as a conflict
instead of overwriting it.
"""

import abc
from typing import Any, Dict, Optional, Sequence, Tuple

from novahooks.event import Address
from tasks.backends.base import Driver
from tasks.errors import InvalidEvent


def owner_marker(instance_uuid: str) -> str:
    return "novahooks:instance=%s" % instance_uuid


def reserved_label(fqdn: str, reserved: Sequence[str]) -> Optional[str]:
    """The reserved first label ``fqdn`` starts with (``wpad`` in any zone), or None."""
    label = fqdn.split(".", 1)[0].lower()
    return label if label in {name.strip().lower() for name in reserved} else None


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
                 addresses: Sequence[Address]) -> Dict[str, Any]:
        """Forward (A/AAAA) and reverse (PTR) records for exactly these addresses."""

    @abc.abstractmethod
    def deregister(self, fqdn: str, instance_uuid: str,
                   addresses: Sequence[Address]) -> Dict[str, Any]:
        """Remove the records this instance owns; absent records are success."""

    @abc.abstractmethod
    def describe(self, fqdn: str, instance_uuid: str,
                 addresses: Sequence[str]) -> Dict[str, Any]:
        """What the server holds for this name and these addresses (for status and demo)."""
