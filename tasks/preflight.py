"""What any later step of a chain would refuse, asked by its first writing step.

A chain writes backend after backend: when DNS refused a name only at its own
step, IPAM (and, from the pre-boot chain, the directory) already held the VM,
and nothing took that back. So the first step that writes runs every check a
later one would make, reading the backends but writing none: the name and
addresses as DNS would take them (scope, reverse zones, reserved names, names
and PTRs held by others, delegations), the name as the directory would take it
(reserved and existing account names), and the addresses as IPAM holds their
prefixes (network and broadcast addresses, where the IPAM driver knows the
prefix: ``prefix_of``). The later steps check again when
they write (the backends may have changed since): this only moves the refusal
in front of the first write.

First writers: ``ipam.reserve`` (build and network chains) and ``ldap.register``
of the pre-boot chain (``create``), which has no address yet.
"""

import ipaddress
from typing import Any, Optional

from novahooks.event import InstanceEvent
from tasks import drivers
from tasks.errors import InvalidEvent
from tasks.policy import Decision


def run(step: str, event: InstanceEvent, decision: Decision) -> None:
    """Raise the PermanentError a later step of ``event``'s chain would raise."""
    if step == "ipam.reserve":
        _addresses(event)
        drivers.directory().preflight(event)
    elif not (step == "ldap.register" and event.kind == "create"):
        return
    if decision.fqdn is not None:
        drivers.dns().preflight(decision.fqdn, event.uuid, event.addresses or [])


def _addresses(event: InstanceEvent) -> None:
    """A network or broadcast address of its IPAM prefix is no host's address."""
    ipam = drivers.ipam()
    for index, item in enumerate(event.addresses or []):
        problem = host_problem(item.address, ipam.prefix_of(item.address))
        if problem:
            raise InvalidEvent("addresses[%d].address" % index, problem)


def host_problem(address: str, network: Optional[Any]) -> Optional[str]:
    """Why ``address`` cannot be a VM's address in ``network`` (its IPAM prefix), or None."""
    ip = ipaddress.ip_address(address)
    if network is None or ip.version != 4 or network.prefixlen >= 31:
        return None  # IPv6 has no broadcast; /31 and /32 use every address (RFC 3021)
    if ip == network.network_address:
        return "%s is the network address of %s" % (address, network)
    if ip == network.broadcast_address:
        return "%s is the broadcast address of %s" % (address, network)
    return None
