"""The DNS contract: make a name hold exactly a VM's addresses, and take back only what is ours.

Ownership is explicit: a TXT record ``novahooks:instance=<uuid>`` at the name
marks who made it, so a delete never removes a record another VM or a person
created, and a second VM claiming a taken hostname fails as a conflict
instead of overwriting it.
"""

import abc
from typing import Any, Dict, Sequence, Tuple

from novahooks.event import Address
from tasks.backends.base import Driver


def owner_marker(instance_uuid: str) -> str:
    return "novahooks:instance=%s" % instance_uuid


class DnsDriver(Driver):
    #: (network, reverse zone) from the ``[naming prefix]`` rules, most specific first;
    #: tasks/drivers.py sets it, a driver consults it before its own reverse zones.
    reverse_prefixes: Sequence[Tuple[Any, str]] = ()

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
